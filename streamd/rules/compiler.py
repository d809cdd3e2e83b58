"""Plain text → Plan. Deterministic, explainable, and loud about what it did not understand.

The compiler peels qualifiers it knows ("for 10 seconds", "after dark") off the sentence, then
matches what is left against a small set of sentence shapes (count, presence, absence, left
object, motion). A sentence that fits no shape is an error that lists what was understood and
which words were not: a rule is never silently ignored or half-applied.
"""

from __future__ import annotations

import re

from streamd.errors import RuleCompileError
from streamd.rules.plan import Count, Dark, Fallen, LeftObject, Lying, Motion, Plan, Predicate
from streamd.rules.vocab import ANY, NOUNS, lookup

_NUMBERS = {
    "no": 0, "zero": 0, "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
}  # fmt: skip
_NUM = r"(?:\d+(?:\.\d+)?|" + "|".join(k for k in _NUMBERS if k != "no") + r")"
_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
}  # fmt: skip
_UNIT = r"(?:" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")"

_PREFIX = re.compile(
    r"^(?:(?:please\s+)?(?:alert|notify|warn|tell|ping|send (?:an )?alert)(?:\s+me)?"
    r"(?:\s+(?:when(?:ever)?|if|as soon as))?|when(?:ever)?|if)\s+"
)
_DURATION = re.compile(
    rf"\s*\b(?:for|lasting|longer than|more than|over)\s+(?:at least\s+|more than\s+|over\s+)?"
    rf"(?P<n>{_NUM})\s*(?P<unit>{_UNIT})\b"
)
_DARK = re.compile(r"\s*\b(?:after dark|at night|in the dark|when (?:it is|it's) dark)\b")
_WHERE = (
    r"(?:\s+(?:is|are))?(?:\s+(?:present|visible|in view|detected|seen|here|around|on camera|"
    r"in (?:the )?(?:scene|frame|room|lobby|area|picture)|appears?|shows? up|enters?|"
    r"arrives?|comes? in|in sight))?"
)
_ART = r"(?:(?:an?|any|the|some)\s+)?"
_NOUN = r"(?P<noun>[a-z]+(?: [a-z]+)??)"

_LEFT = [
    re.compile(
        rf"^{_ART}{_NOUN}\s+(?:is|are|was|were|gets?|got|has been|have been|being)?\s*"
        r"(?:left\s+(?:unattended|behind|alone)|left|abandoned|unattended|dropped(?: and left)?)"
        r"(?:\s+(?:behind|unattended|alone))?$"
    ),
    re.compile(rf"^{_ART}(?:unattended|abandoned|left|left-behind)\s+{_NOUN}(?:{_WHERE})?$"),
    re.compile(
        rf"^(?:someone|somebody|a person)\s+(?:leaves|abandons|drops)\s+{_ART}{_NOUN}"
        r"(?:\s+(?:behind|unattended))?$"
    ),
]
_WHO = (
    r"(?:(?:an?|the|any)\s+)?(?:person|someone|somebody|anyone|anybody|people|man|woman|child"
    r"|kid|elderly person|patient|resident)"
)
_FALL = re.compile(
    rf"^(?:{_WHO}\s+)?(?:falls?|fell|has fallen|is falling|falls? (?:down|over)|fell (?:down|over)"
    r"|has fallen (?:down|over))(?:\s+(?:down|over))?(?:\s+(?:on|to) (?:the )?(?:floor|ground))?$"
    r"|^(?:a )?(?:fall|person fall)(?:\s+(?:is\s+)?detected)?$"
)
_LYING = re.compile(
    rf"^{_WHO}\s+(?:is\s+|are\s+|has been\s+|stays\s+|remains\s+)?(?:lying|laying|lies|lays)"
    r"(?:\s+down)?(?:\s+(?:on|in) (?:the )?(?:floor|ground|bed|mattress))?$"
)
_CMP = {
    "more than": ">", "over": ">", "above": ">", "at least": ">=", "fewer than": "<",
    "less than": "<", "under": "<", "below": "<", "at most": "<=", "no more than": "<=",
    "exactly": "==",
}  # fmt: skip
_COUNT = re.compile(
    r"^(?:there (?:is|are)\s+)?(?P<cmp>"
    + "|".join(sorted(_CMP, key=len, reverse=True))
    + rf")?\s*(?P<num>{_NUM})(?P<pre>\s+or (?:more|fewer|less))?\s+{_NOUN}"
    + rf"(?P<tail>\s+or (?:more|fewer|less))?{_WHERE}$"
)
_PRESENT = re.compile(rf"^(?:there (?:is|are)\s+)?{_ART}{_NOUN}{_WHERE}$")
_ABSENT = [
    re.compile(rf"^(?:there (?:is|are)\s+)?(?:no|not any|zero)\s+{_NOUN}{_WHERE}$"),
    re.compile(rf"^{_ART}{_NOUN}\s+(?:is|are)\s+(?:absent|missing|gone|not (?:present|visible|"
               r"here|there|in view)|no longer (?:visible|present|there))$"),
    re.compile(rf"^{_ART}{_NOUN}\s+(?:disappears?|leaves?|is removed|are removed)$"),
]  # fmt: skip
_NOBODY = re.compile(rf"^(?:there is\s+)?(?:no one|nobody|noone|no-one){_WHERE}$")
_MOTION = re.compile(
    r"^(?:there (?:is|are)\s+)?(?:any\s+)?(?:motion|movement)(?:\s+(?:is\s+)?detected)?$"
    r"|^(?:something|anything)\s+moves$"
)

_FILLER = {
    "a",
    "an",
    "the",
    "any",
    "some",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "there",
    "it",
    "its",
    "of",
    "in",
    "on",
    "at",
    "to",
    "and",
    "or",
    "me",
    "when",
    "whenever",
    "if",
    "please",
    "alert",
    "notify",
    "warn",
    "tell",
}


def _number(word: str) -> float:
    return float(word) if word[0].isdigit() else float(_NUMBERS[word])


def _normalise(text: str) -> str:
    t = text.lower().strip()
    t = re.sub(r"[\"'`]", "", t)
    t = re.sub(r"[.!?,;:]+", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def _classes(noun: str, text: str, understood: list[str]) -> frozenset[str]:
    classes = lookup(noun)
    if classes is None:
        words = noun.split()
        # "red car", "big bag": a describing word we do not model yet must not be dropped
        if len(words) == 2 and lookup(words[1]) is not None:
            raise RuleCompileError(
                text, [*understood, f"object {words[1]!r}"], [words[0]],
                "describing words (colours, sizes) are not supported yet; remove "
                f"{words[0]!r} or use a search query instead",
            )  # fmt: skip
        raise RuleCompileError(
            text, understood, [noun],
            "known objects include person, bag, car, vehicle, bicycle, dog, "
            "and the other COCO classes",
        )  # fmt: skip
    return classes


def compile_rule(text: str) -> Plan:
    """Compile a rule's text, or raise RuleCompileError saying what was and was not understood."""
    original = text
    t = _normalise(text)
    if not t:
        raise RuleCompileError(original, [], [], "the rule text is empty")
    understood: list[str] = []
    t = _PREFIX.sub("", t, count=1)

    hold_s = 0.0
    m = _DURATION.search(t)
    if m:
        hold_s = _number(m.group("n")) * _UNITS[m.group("unit")]
        understood.append(f"duration ≥ {hold_s:g} s")
        t = (t[: m.start()] + t[m.end() :]).strip()
    conditions: list[Predicate] = []
    m = _DARK.search(t)
    if m:
        conditions.append(Dark())
        understood.append("only when dark")
        t = (t[: m.start()] + t[m.end() :]).strip()
    t = re.sub(r"\s+", " ", t).strip()

    predicate = _match(t, original, understood, hold_s)
    if isinstance(predicate, LeftObject | Lying):
        # the duration is how long the object has been left, which the scene model tracks
        return Plan(original, predicate, tuple(conditions), 0.0)
    return Plan(original, predicate, tuple(conditions), hold_s)


def _match(t: str, original: str, understood: list[str], hold_s: float) -> Predicate:
    if _FALL.match(t):
        return Fallen()
    if _LYING.match(t):
        # the duration is how long the person has been lying, which the world model tracks
        return Lying(hold_s or 5.0)
    for pat in _LEFT:
        m = pat.match(t)
        if m:
            classes = _classes(m.group("noun"), original, understood)
            return LeftObject(classes, unattended_s=hold_s or 30.0, noun=m.group("noun"))
    if _NOBODY.match(t):
        return Count(frozenset({"person"}), "==", 0, "person")
    for pat in _ABSENT:
        m = pat.match(t)
        if m:
            noun = m.group("noun")
            return Count(_classes(noun, original, understood), "==", 0, noun)
    if _MOTION.match(t):
        return Motion()
    m = _COUNT.match(t)
    if m and m.group("noun") in NOUNS:
        n = _number(m.group("num"))
        if n != int(n):
            raise RuleCompileError(original, understood, [m.group("num")], "counts are whole")
        op = _CMP.get(m.group("cmp") or "", ">=")
        tail = (m.group("tail") or m.group("pre") or "").strip()
        if tail == "or more":
            op = ">="
        elif tail:
            op = "<="
        elif not m.group("cmp") and m.group("num") not in ("a", "an"):
            # "3 people" reads as "3 or more people"
            op = ">="
        noun = m.group("noun")
        classes = _classes(noun, original, understood)
        if classes == ANY:
            raise RuleCompileError(
                original, understood, [noun], "counting needs a kind of object (person, car…)"
            )
        return Count(classes, op, int(n), noun)  # type: ignore[arg-type]
    m = _PRESENT.match(t)
    if m:
        noun = m.group("noun")
        classes = _classes(noun, original, understood)
        if classes == ANY:
            return Motion()
        return Count(classes, ">=", 1, noun)

    words = t.split()
    known = [w for w in words if w in NOUNS]
    unknown = [w for w in words if w not in NOUNS and w not in _FILLER and w not in _NUMBERS]
    understood += [f"object {w!r}" for w in known]
    raise RuleCompileError(
        original,
        understood,
        unknown or words,
        "supported shapes: '<n> <objects> present', 'more than <n> <objects>', "
        "'no <object>', '<object> left unattended', 'motion', each optionally "
        "'for <n> seconds' / 'after dark'",
    )
