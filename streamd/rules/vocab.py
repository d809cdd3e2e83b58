"""Words people use for things the detector knows, mapped to COCO class names."""

from __future__ import annotations

from streamd.perception.coco import COCO_CLASSES

# A class set of ANY means "any object", found class-agnostically (left-object rules).
ANY = frozenset({"*"})

PEOPLE = frozenset({"person"})
BAGS = frozenset({"backpack", "handbag", "suitcase"})
VEHICLES = frozenset({"car", "truck", "bus", "motorcycle"})

_SYNONYMS: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        [
            "person",
            "people",
            "persons",
            "someone",
            "somebody",
            "anyone",
            "anybody",
            "man",
            "men",
            "woman",
            "women",
            "child",
            "children",
            "kid",
            "kids",
            "pedestrian",
            "pedestrians",
            "human",
            "humans",
            "visitor",
            "visitors",
            "intruder",
            "intruders",
            "worker",
            "workers",
            "customer",
            "customers",
        ],
        PEOPLE,
    ),
    **dict.fromkeys(["bag", "bags", "luggage", "baggage"], BAGS),
    **dict.fromkeys(["purse", "purses"], frozenset({"handbag"})),
    **dict.fromkeys(["vehicle", "vehicles"], VEHICLES),
    **dict.fromkeys(["van", "vans"], frozenset({"car", "truck"})),
    **dict.fromkeys(["lorry", "lorries"], frozenset({"truck"})),
    **dict.fromkeys(["buses"], frozenset({"bus"})),
    **dict.fromkeys(["motorbike", "motorbikes"], frozenset({"motorcycle"})),
    **dict.fromkeys(["bike", "bikes"], frozenset({"bicycle"})),
    **dict.fromkeys(["phone", "phones"], frozenset({"cell phone"})),
    **dict.fromkeys(
        [
            "object",
            "objects",
            "item",
            "items",
            "thing",
            "things",
            "package",
            "packages",
            "parcel",
            "parcels",
            "box",
            "boxes",
        ],
        ANY,
    ),
}


def _plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _build() -> dict[str, frozenset[str]]:
    table: dict[str, frozenset[str]] = {}
    for name in COCO_CLASSES:
        table[name] = frozenset({name})
        last = name.split(" ")
        table[" ".join([*last[:-1], _plural(last[-1])])] = frozenset({name})
    table.update(_SYNONYMS)
    return table


NOUNS: dict[str, frozenset[str]] = _build()


def lookup(phrase: str) -> frozenset[str] | None:
    """Classes for a noun phrase ("bags", "a red car" is not handled: colour words are not)."""
    return NOUNS.get(phrase.strip())


def describe_classes(classes: frozenset[str]) -> str:
    if classes == ANY:
        return "any object"
    return "|".join(sorted(classes))
