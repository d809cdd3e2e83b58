"""Rule text → lexemes: normalised words, longest phrase first, each typed by the lexicon.

Zone and line names come from the camera's config and win over the static table, so a zone
called "reception desk" is one place, not a word the lexicon lacks. A word the lexicon lacks is
returned as UNKNOWN; the parser resolves it (MiniLM) or reports it with suggestions.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamd.errors import RuleCompileError
from streamd.rules.lexicon import FILLERS, MAX_PHRASE, NUMBERS, REJECTED, TABLE, TENS, Entry


@dataclass(frozen=True, slots=True)
class Place:
    """A configured name: a zone, a line, or both (a gate may be either)."""

    name: str
    is_zone: bool
    is_line: bool


@dataclass(frozen=True, slots=True)
class Lexeme:
    terminal: str  # a grammar terminal, or FILLER / UNKNOWN / SCENE_WORD
    text: str  # the words it covers, normalised
    value: Any = None
    entry: Entry | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_QUOTED = re.compile(r"[\"“”]([^\"“”]*)[\"“”]")
_GLUED = re.compile(r"^(\d+(?:[.:]\d+)?)(s|sec|secs|m|min|mins|h|hr|hrs|am|pm|%)$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_SYMBOLS = re.compile(r"(>=|<=|==|[()|%¬∧∨≥≤<>=])")
_COLOUR_NOUNS = frozenset({"orange"})  # a COCO class and a colour: colour before a noun


def normalise(text: str) -> tuple[str, list[str]]:
    """Lower-cased text with quoted passages replaced by placeholders, and those passages."""
    quoted: list[str] = []

    def keep(m: re.Match[str]) -> str:
        quoted.append(m.group(1).strip())
        return f" \x00{len(quoted) - 1} "

    t = _QUOTED.sub(keep, text)
    t = t.lower().replace("a.m.", "am").replace("p.m.", "pm")
    t = re.sub(r"[’'`]", "", t)
    t = re.sub(r"(?<=\d)\s*-\s*(?=\d)", " - ", t)  # 22:00-06:00 is a range
    t = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", t)  # no-one, twenty-five
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # sentence dots, not decimals
    t = re.sub(r"(?<!\d):|:(?!\d)", " ", t)  # colons, not clock times
    t = re.sub(r"[,;!?]", " ", t)
    t = _SYMBOLS.sub(r" \1 ", t)
    return re.sub(r"\s+", " ", t).strip(), quoted


def _split_glued(words: Iterable[str]) -> list[str]:
    out: list[str] = []
    for w in words:
        m = _GLUED.match(w)
        out += [m.group(1), m.group(2)] if m else [w]
    return out


def _places(zones: Sequence[str], lines: Sequence[str]) -> dict[str, Place]:
    out: dict[str, Place] = {}
    for name in {*zones, *lines}:
        key, _ = normalise(name)
        out[key] = Place(name, name in zones, name in lines)
    return out


def lex(text: str, zones: Sequence[str] = (), lines: Sequence[str] = ()) -> list[Lexeme]:
    """Lexemes of `text`, fillers included (as FILLER)."""
    norm, quoted = normalise(text)
    words = _split_glued(norm.split())
    places = _places(zones, lines)
    out: list[Lexeme] = []
    i = 0
    while i < len(words):
        lexeme, used = _match(words, i, places, quoted, text, lines)
        out.append(lexeme)
        i += used
    return _merge_numbers(_fix_colours(out))


def _match(
    words: list[str],
    i: int,
    places: dict[str, Place],
    quoted: list[str],
    text: str,
    lines: Sequence[str],
) -> tuple[Lexeme, int]:
    word = words[i]
    if word.startswith("\x00"):
        return Lexeme("TEXT", f'"{quoted[int(word[1:])]}"', quoted[int(word[1:])]), 1
    for n in range(min(MAX_PHRASE, len(words) - i), 0, -1):
        phrase = " ".join(words[i : i + n])
        if phrase in places:
            return Lexeme("PLACE", phrase, places[phrase]), n
        if phrase in REJECTED:
            names = f" (lines here: {', '.join(lines)})" if lines else ""
            hint = REJECTED[phrase].format(word=phrase, lines=names)
            raise RuleCompileError(text, [], [phrase], hint)
        entry = TABLE.get(phrase)
        if entry is not None:
            return Lexeme(entry.terminal, phrase, entry.value, entry), n
        if phrase in FILLERS:
            return Lexeme("FILLER", phrase), n
    m = _CLOCK.match(word)
    if m:
        hour, minute = int(m.group(1)), int(m.group(2))
        if hour > 24 or minute > 59 or (hour == 24 and minute):
            raise RuleCompileError(text, [], [word], "a clock time is HH:MM, 00:00 to 23:59")
        return Lexeme("CLOCK", word, dt.time(hour % 24, minute)), 1
    if _NUMBER.match(word):
        return Lexeme("NUMBER", word, float(word)), 1
    return Lexeme("UNKNOWN", word), 1


def _fix_colours(lexemes: list[Lexeme]) -> list[Lexeme]:
    out = list(lexemes)
    for k, lx in enumerate(out[:-1]):
        if lx.text in _COLOUR_NOUNS and out[k + 1].terminal == "NOUN":
            out[k] = Lexeme("COLOUR", lx.text, lx.text)
    return out


def _merge_numbers(lexemes: list[Lexeme]) -> list[Lexeme]:
    """'twenty five' is 25; 'once' / 'twice' are a count of times."""
    out: list[Lexeme] = []
    for lx in lexemes:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.terminal == "NUMBER"
            and prev.text in TENS
            and lx.terminal == "NUMBER"
            and lx.text in NUMBERS
            and NUMBERS[lx.text] < 10
        ):
            out[-1] = Lexeme("NUMBER", f"{prev.text} {lx.text}", prev.value + lx.value)
        elif lx.terminal == "ONCE":
            out += [Lexeme("NUMBER", lx.text, lx.value), Lexeme("TIMES", lx.text)]
        else:
            out.append(lx)
    return out
