"""The rule language's words: each word or phrase → a grammar terminal and its value.

One static table, read by the lexer (lexer.py) and by the "did you mean" suggestions. Object
nouns map to detector classes (COCO names plus synonyms); a synonym mapping is recorded in the IR
so the plan shows it ("van → truck (synonym)"). Words for things the world model cannot see
(smoke, a helmet, a door being open) are scene words: a rule using one becomes a scene predicate
that needs the VLM verifier.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from streamd.perception.coco import COCO_CLASSES
from streamd.rules.ir import ANY_CLASS, COLOURS, UNLABELLED, WEEKDAYS


@dataclass(frozen=True, slots=True)
class Entry:
    """What one word or phrase means: its terminal, a typed value, and for nouns whether it is a
    synonym (to be shown in the plan) and an attribute only a VLM can check."""

    terminal: str
    value: Any = None
    synonym: bool = False
    verify: str | None = None


PEOPLE = ("person",)
BAGS = ("backpack", "handbag", "suitcase")
VEHICLES = ("bus", "car", "motorcycle", "truck")
# COCO has no box or parcel class: a parcel on a doorstep shows up to the world model as new
# static foreground the detector leaves unlabelled, or labels as the nearest bag class (a
# cardboard box most often reads as a suitcase, a soft mailer as a handbag or backpack).
PACKAGES = (*BAGS, UNLABELLED)

_IRREGULAR_PLURALS = {"person": "persons", "mouse": "mice", "knife": "knives", "sheep": "sheep",
                      "skis": "skis", "scissors": "scissors", "bus": "buses", "wine glass":
                      "wine glasses", "couch": "couches", "sandwich": "sandwiches"}  # fmt: skip


def plural(name: str) -> str:
    if name in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[name]
    head, _, last = name.rpartition(" ")
    if last.endswith(("s", "sh", "ch", "x")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def _nouns() -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for name in COCO_CLASSES:
        out[name] = out[plural(name)] = Entry("NOUN", (name,))
    synonyms: dict[tuple[str, ...], list[str]] = {
        PEOPLE: ["people", "someone", "somebody", "anyone", "anybody", "man", "men", "woman",
                 "women", "pedestrian", "pedestrians", "human", "humans", "visitor", "visitors",
                 "intruder", "intruders", "worker", "workers", "customer", "customers", "guy",
                 "guys", "individual", "individuals", "courier", "couriers", "thief", "thieves",
                 "burglar", "burglars", "stranger", "strangers"],
        BAGS: ["bag", "bags", "luggage", "baggage"],
        ("backpack",): ["rucksack", "rucksacks"],
        ("handbag",): ["purse", "purses"],
        ("suitcase",): ["briefcase", "briefcases"],
        ("couch",): ["sofa", "sofas", "settee", "settees"],
        ("truck",): ["van", "vans", "lorry", "lorries", "pickup", "pickups"],
        ("car",): ["suv", "suvs"],
        VEHICLES: ["vehicle", "vehicles"],
        ("bicycle",): ["bike", "bikes", "cycle", "cycles"],
        ("motorcycle",): ["motorbike", "motorbikes", "scooter", "scooters"],
        ("cell phone",): ["phone", "phones", "mobile phone", "mobile phones"],
        ("tv",): ["television", "televisions", "tvs"],
        PACKAGES: ["package", "packages", "parcel", "parcels", "box", "boxes", "delivery",
                   "deliveries"],
        (ANY_CLASS,): ["object", "objects", "thing", "things", "item", "items", "something",
                       "anything", "any object"],
    }  # fmt: skip
    for classes, words in synonyms.items():
        for word in words:
            out[word] = Entry("NOUN", tuple(sorted(classes)), synonym=True)
    for word in ("child", "children", "kid", "kids", "toddler", "toddlers"):
        out[word] = Entry("NOUN", PEOPLE, synonym=True, verify="child")
    out[UNLABELLED] = Entry("NOUN", (UNLABELLED,))
    return out


def words(text: str) -> list[str]:
    """A word list written as text."""
    return text.split()


def _many(terminal: str, words: str, value: Any = None) -> dict[str, Entry]:
    return {w.strip(): Entry(terminal, value) for w in words.split(",")}


_CMP = {
    **_many("CMP", "more than,over,above,greater than,>,longer than", ">"),
    **_many("CMP", "at least,≥,>=,no less than,no fewer than", ">="),
    **_many("CMP", "fewer than,less than,under,below,<,shorter than", "<"),
    **_many("CMP", "at most,no more than,≤,<=,up to", "<="),
    **_many("CMP", "exactly,=,==", "=="),
    **_many("CMP_POST", "or more,or over,plus", ">="),
    **_many("CMP_POST", "or fewer,or less", "<="),
}
_UNITS = {
    **_many("UNIT", "s,sec,secs,second,seconds", 1.0),
    **_many("UNIT", "m,min,mins,minute,minutes", 60.0),
    **_many("UNIT", "h,hr,hrs,hour,hours", 3600.0),
}
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                 "seventeen", "eighteen", "nineteen"]  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}  # fmt: skip
NUMBERS: dict[str, float] = {
    **{w: float(i) for i, w in enumerate(_NUMBER_WORDS) if i},
    **{w: float(n) for w, n in _TENS.items()},
    "hundred": 100.0,
    "half": 0.5,
    "a couple of": 2.0,
}
TENS = frozenset(_TENS)

_DAY_NAMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_DAYS = {
    **{n: Entry("DAYS", (d,)) for n, d in zip(_DAY_NAMES, WEEKDAYS, strict=True)},
    **{n + "s": Entry("DAYS", (d,)) for n, d in zip(_DAY_NAMES, WEEKDAYS, strict=True)},
    **{n[:3]: Entry("DAYS", (d,)) for n, d in zip(_DAY_NAMES, WEEKDAYS, strict=True)},
    **_many("DAYS", "weekdays,weekday,workdays,working days,during the week,monday to friday",
            WEEKDAYS[:5]),
    **_many("DAYS", "weekends,weekend,at the weekend,at weekends", WEEKDAYS[5:]),
}  # fmt: skip

_STATES = {
    **_many("STATE", "moving,moves,walking,walks,driving,in motion", "moving"),
    **_many("STATE", "stationary,parked,stopped,still,not moving,standing still,motionless",
            "stationary"),
    **_many("STATE", "upright,standing", "upright"),
    **_many("STATE", "low,crouching,sitting,squatting,kneeling,crouched,sitting down", "low"),
    **_many("STATE", "lying,lies,lying down,lies down", "lying"),
}  # fmt: skip

_KEYWORDS = {
    **_many("PRESENT", "present,visible,detected,seen,spotted,here,there"),
    **_many("ABSENT", "absent,missing,gone,not present,not visible,no longer there,"
            "no longer present,no longer visible"),
    **_many("APPEAR", "appears,appear,appeared,shows up,show up,arrives,arrive,arrived,turns up,"
            "comes into view,comes"),
    **_many("LEAVE", "leaves,leave,disappears,disappear,goes away,departs,left the scene"),
    **_many("ENTER", "enters,enter,entered,goes into,walks into,comes into,drives into,gets into,"
            "steps into"),
    **_many("EXIT", "exits,exit,exited,goes out of,walks out of,comes out of,drives out of"),
    **_many("CROSS", "crosses,cross,crossed,crosses over,passes,passes through,goes through,"
            "passes over"),
    **_many("DIR", "inwards,inward,inbound,going in,heading in,coming in", "in"),
    **_many("DIR", "outwards,outward,outbound,going out,heading out,coming out", "out"),
    **_many("PLACED", "placed,delivered,dropped,dropped off,put down,set down,deposited"),
    **_many("REMOVED", "removed,taken,taken away,stolen,picked up,goes missing,nicked"),
    **_many("FALLS", "falls,fall,fell,falls down,falls over,fallen,has fallen,collapses,"
            "collapsed,falls to the ground,falls to the floor"),
    **_many("GETS_UP", "gets up,get up,got up,stands up,stand up,gets back up,rises"),
    **_many("STOPS", "stops,stop,halts,parks,park,pulls up,comes to a stop,comes to a halt"),
    **_many("STARTS_MOVING", "starts moving,starts to move,begins moving,begins to move,"
            "moves off,pulls away,drives off"),
    **_many("RUNS", "runs,run,running,starts running,sprints,sprinting"),
    **_many("DWELL", "stays,stay,remains,remain,lingers,linger,loiters,loiter,loitering,"
            "hangs around,hanging around,hangs about,waits,waiting,dwells,lingering"),
    **_many("UNATTENDED", "left unattended,unattended,abandoned,left behind,left alone"),
    **_many("OWNER", "owner"),
    **_many("WIDTHS", "widths,width,object widths"),
    **_many("AWAY", "away"),
    **_many("MOTION", "motion,movement,activity"),
    **_many("DARK", "dark,after dark,at night,in the dark,during the night,at nighttime,"
            "nighttime,after nightfall"),
    **_many("BRIGHTNESS", "brightness"),
    **_many("NO", "no,zero"),
    **{w: Entry("NOBODY", PEOPLE) for w in ("no one", "nobody", "noone", "not anyone")},
    **{w: Entry("NOBODY", (ANY_CLASS,)) for w in ("nothing", "no object")},
    **_many("IN", "in,inside,into,within the"),
    **_many("AT", "at"),
    **_many("NEAR", "near,by,around,next to,close to,beside,outside,in front of,nearby"),
    **_many("ON", "on,on top of,onto"),
    **_many("FLOOR", "on the floor,on the ground,on floor,on ground"),
    **_many("VIEW", "view,room,scene,frame,picture,camera,shot,the whole view"),
    **_many("AND", "and,∧,while,as well as"),
    **_many("OR", "or,∨"),
    **_many("NOT", "not,¬,never"),
    **_many("UNLESS", "unless,except when,except if,but not when,but not if"),
    **_many("THEN", "then,and then,followed by,after that"),
    **_many("WITHIN", "within,in less than"),
    **_many("FOR", "for,held for,lasting,for a period of"),
    **_many("TIMES", "times,time"),
    **_many("BETWEEN", "between"),
    **_many("AFTER", "after,from after"),
    **_many("BEFORE", "before"),
    **_many("FROM", "from"),
    **_many("TO", "to,until,till,-"),
    **_many("COUNT", "count,number of"),
    **_many("LPAR", "("),
    **_many("RPAR", ")"),
    **_many("PIPE", "|"),
    **_many("PERCENT", "%,percent"),
    **_many("SCENE", "scene"),
    **_many("CANDIDATES", "candidates"),
    **_many("VERIFIED_AS", "verified as"),
    **_many("MERIDIEM", "am", "am"),
    **_many("MERIDIEM", "pm", "pm"),
    "noon": Entry("CLOCK", dt.time(12, 0)),
    "midday": Entry("CLOCK", dt.time(12, 0)),
    "midnight": Entry("CLOCK", dt.time(0, 0)),
    "once": Entry("ONCE", 1.0),
    "twice": Entry("ONCE", 2.0),
}  # fmt: skip

# Dropped before parsing: they carry no meaning the IR could hold. (Word lists read better as
# text than as a list literal.)
FILLERS = frozenset(
    words(
        """alert alerts me us when whenever if please notify warn tell send ping message let know
    as soon as the a an some any is are was were be been being has have had it its of zone zones
    line lines area held that who which does do i want there's theres immediately
    camera's someone's get gets got becomes"""
    )
) | {"as soon as", "let me know", "i want to know", "tell me", "send me", "an alert",
     "a notification", "there is", "there are", "is there", "are there"}  # fmt: skip

# Concepts the world model has no attribute for: a rule using one is a scene predicate.
SCENE_WORDS = frozenset(
    words(
        """smoke smoking fire fires flame flames burning blaze doorbell bell rings ring ringing
    knocks knock knocking fighting fight fights punches punching hitting kicking attacks
    attacking climbs climb climbing fence fences wall walls ladder ladders carrying carries carry
    holding holds helmet helmets vest mask masked wearing wears without open opens opened
    closed shut weapon weapons gun guns graffiti vandalism water flood flooding leak leaking
    broken breaks smashing smashes window windows jumps jumping crying screaming shouting
    waving wave tailgating sleeping asleep drunk injured bleeding"""
    )
) | {"hard hat", "hard hats", "high-vis", "hi-vis"}  # fmt: skip

# Words with no meaning a camera could check; rejected with a specific message.
REJECTED: dict[str, str] = {
    **dict.fromkeys(
        ["unusual", "suspicious", "strange", "weird", "abnormal", "anomaly", "anomalous",
         "odd", "out of the ordinary"],
        "{word!r} has no definition a camera can check: name what to watch for, e.g. "
        "'a person in the garden at night', or ask the VLM with scene \"<what you mean>\"",
    ),
    **dict.fromkeys(
        ["wrong way", "wrong direction", "the wrong way"],
        "{word!r} needs a direction the config defines: name a line and which way is wrong, "
        "e.g. 'a car crosses the <line> line outwards'{lines}",
    ),
}  # fmt: skip


def _table() -> dict[str, Entry]:
    table: dict[str, Entry] = {}
    table.update(_KEYWORDS)
    table.update(_CMP)
    table.update(_UNITS)
    table.update(_DAYS)
    table.update(_STATES)
    table.update({c: Entry("COLOUR", c) for c in COLOURS})
    table["gray"] = Entry("COLOUR", "grey")
    table.update({w: Entry("NUMBER", n) for w, n in NUMBERS.items()})
    table.update(_nouns())
    table.update({w: Entry("SCENE_WORD", w) for w in SCENE_WORDS})
    return table


TABLE: dict[str, Entry] = _table()
# Longest phrase first when matching (in words).
MAX_PHRASE = max(len(k.split()) for k in [*TABLE, *FILLERS, *REJECTED])
