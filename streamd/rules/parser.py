"""Rule text → RuleIR: lex (lexer.py), resolve unknown words (resolve.py), parse with the Lark
grammar (grammar.lark), build the IR. All or nothing: any word or shape not understood raises
RuleCompileError naming it, with what was understood and suggestions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

from lark import Lark, Token
from lark.exceptions import UnexpectedInput, VisitError
from lark.lexer import Lexer
from pydantic import ValidationError

from streamd.errors import RuleCompileError
from streamd.rules.build import TreeToIR
from streamd.rules.ir import (
    ANY_CLASS,
    And,
    Held,
    Node,
    Not,
    Or,
    RuleIR,
    Scene,
    Subject,
    Times,
    Unattended,
    Within,
    WordMapping,
)
from streamd.rules.lexer import Lexeme, lex
from streamd.rules.lexicon import words
from streamd.rules.resolve import WordResolver, default_resolver

__all__ = ["DEFAULT_UNATTENDED_S", "parse_rule"]

DEFAULT_UNATTENDED_S = 30.0
_PREFIX_FILLERS = frozenset(
    words(
        "alert alerts me us when whenever if please notify warn tell send ping let know as soon "
        "i want to"
    )
)
_EXPECTED = {
    "NOUN": "an object (person, car, bag…)",
    "PLACE": "a zone or line name",
    "UNIT": "a unit (seconds, minutes, hours)",
    "NUMBER": "a number",
    "CLOCK": "a clock time (22:00)",
    "MERIDIEM": "am / pm",
    "DIR": "a direction (inwards / outwards)",
    "DAYS": "days (weekdays, weekends, monday…)",
    "TEXT": 'a quoted "text"',
    "PRESENT": "'present'",
    "APPEAR": "a verb (appears, enters, leaves, falls, stops, is left unattended…)",
    "DWELL": "a verb (appears, enters, leaves, falls, stops, is left unattended…)",
    "FOR": "a duration ('for 10 seconds')",
    "AND": "'and' / 'or'",
    "RPAR": "')'",
    "TIMES": "'times'",
    "CMP": "a comparison (more than, at least, fewer than…)",
}


class _ListLexer(Lexer):
    """Feeds pre-typed lexemes to Lark; each token's start_pos indexes the lexeme list."""

    def __init__(self, lexer_conf: Any) -> None:
        pass

    # Lark wraps a lexer of this old one-argument shape and hands it the input as given
    def lex(self, data: list[Lexeme]) -> Iterator[Token]:  # type: ignore[override]
        for i, lx in enumerate(data):
            yield Token(lx.terminal, lx.text, start_pos=i)


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark.open_from_package(
        "streamd.rules", "grammar.lark", parser="earley", lexer=_ListLexer
    )


def parse_rule(
    text: str,
    zones: Sequence[str] = (),
    lines: Sequence[str] = (),
    resolver: WordResolver | None = None,
) -> RuleIR:
    """Parse a rule's text for a camera with these zone and line names."""
    if not text.strip():
        raise RuleCompileError(text, [], [], "the rule text is empty")
    lexemes = lex(text, zones, lines)
    lexemes = _resolve_unknown(text, lexemes, zones, lines, resolver or default_resolver())
    words = [lx for lx in lexemes if lx.terminal != "FILLER"]
    mappings = _mappings(words)
    if not words:
        raise RuleCompileError(text, [], [], "the rule names nothing to watch for")
    if any(lx.terminal == "SCENE_WORD" for lx in words):
        return _scene(text, lexemes, words, mappings)
    try:
        tree = _parser().parse(words)
        builder = TreeToIR(text, words, zones, lines)
        root = builder.transform(tree)
        root, notes = _defaults(root, builder.notes)
        return RuleIR(root=root, mappings=mappings, notes=tuple(notes))
    except UnexpectedInput as exc:
        raise _syntax_error(text, words, exc, zones, lines) from exc
    except VisitError as exc:
        inner = exc.orig_exc
        if isinstance(inner, RuleCompileError):
            raise inner from exc
        if isinstance(inner, ValidationError):
            raise _invalid(text, words, inner) from exc
        raise
    except ValidationError as exc:
        raise _invalid(text, words, exc) from exc


def _resolve_unknown(
    text: str,
    lexemes: list[Lexeme],
    zones: Sequence[str],
    lines: Sequence[str],
    resolver: WordResolver,
) -> list[Lexeme]:
    out: list[Lexeme] = []
    unknown: list[str] = []
    for lx in lexemes:
        if lx.terminal != "UNKNOWN":
            out.append(lx)
            continue
        hit = resolver.resolve(lx.text)
        if hit is None:
            unknown.append(lx.text)
            continue
        out.append(
            Lexeme(
                hit.entry.terminal,
                lx.text,
                hit.entry.value,
                hit.entry,
                {"minilm": hit.score, "neighbour": hit.neighbour},
            )
        )
    if unknown:
        hints = []
        for word in unknown:
            sugg = resolver.suggest(word, [*zones, *lines])
            hints.append(
                f"{word!r}: did you mean {' / '.join(map(repr, sugg))}?"
                if sugg
                else f"{word!r}: no similar word known"
            )
        places = _places_hint(zones, lines)
        if resolver.unavailable:
            places += f"; (no synonyms by meaning: {resolver.unavailable})"
        understood = [lx.text for lx in out if lx.terminal not in ("FILLER",)]
        raise RuleCompileError(
            text,
            understood,
            unknown,
            "; ".join(hints) + places + '; for anything else, ask the VLM: scene "<text>"',
        )
    return out


def _places_hint(zones: Sequence[str], lines: Sequence[str]) -> str:
    parts = []
    if zones:
        parts.append("zones here: " + ", ".join(zones))
    if lines:
        parts.append("lines here: " + ", ".join(lines))
    return ("; " + "; ".join(parts)) if parts else ""


def _mappings(words: list[Lexeme]) -> tuple[WordMapping, ...]:
    out: dict[str, WordMapping] = {}
    for lx in words:
        if lx.terminal != "NOUN" or lx.entry is None:
            continue
        if "minilm" in lx.extra:
            out[lx.text] = WordMapping(
                word=lx.text, classes=lx.value, source="minilm", score=lx.extra["minilm"]
            )
        elif lx.entry.synonym:
            out[lx.text] = WordMapping(word=lx.text, classes=lx.value, source="synonym")
    return tuple(out.values())


def _scene(
    text: str, lexemes: list[Lexeme], words: list[Lexeme], mappings: tuple[WordMapping, ...]
) -> RuleIR:
    start = 0
    while start < len(lexemes) and (
        lexemes[start].terminal == "FILLER"
        and all(w in _PREFIX_FILLERS for w in lexemes[start].text.split())
    ):
        start += 1
    scene_text = " ".join(lx.text for lx in lexemes[start:]).replace('"', "")
    nouns = [lx for lx in words if lx.terminal == "NOUN"]
    subject = None
    if nouns and nouns[0].value != (ANY_CLASS,):
        entry = nouns[0].entry
        subject = Subject(classes=nouns[0].value, verify=entry.verify if entry else None)
    scene_words = [lx.text for lx in words if lx.terminal == "SCENE_WORD"]
    note = (
        f"scene predicate: the world model has nothing for {', '.join(map(repr, scene_words))}; "
        "candidates come from the window's tokens and need the VLM verifier"
    )
    return RuleIR(root=Scene(text=scene_text, subject=subject), mappings=mappings, notes=(note,))


def _syntax_error(
    text: str,
    words: list[Lexeme],
    exc: UnexpectedInput,
    zones: Sequence[str],
    lines: Sequence[str],
) -> RuleCompileError:
    token = getattr(exc, "token", None)
    pos = token.start_pos if isinstance(token, Token) and token.type != "$END" else None
    expected = sorted({_EXPECTED.get(t, "") for t in getattr(exc, "expected", ())} - {""})
    understood = [lx.text for lx in (words if pos is None else words[:pos])]
    if pos is None:
        hint = "the rule stops too early"
        bad: list[str] = []
    else:
        hint = f"{words[pos].text!r} does not fit here"
        bad = [words[pos].text]
    if expected:
        hint += "; expected " + " or ".join(expected)
    return RuleCompileError(text, understood, bad, hint + _places_hint(zones, lines))


def _invalid(text: str, words: list[Lexeme], exc: ValidationError) -> RuleCompileError:
    problems = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]
    return RuleCompileError(text, [lx.text for lx in words], [], "; ".join(problems))


def _defaults(root: Node, notes: list[str]) -> tuple[Node, list[str]]:
    """'left unattended' with no time given: the default time, said in the notes."""
    if isinstance(root, Unattended):
        notes.append(f"no time given for 'left unattended': {DEFAULT_UNATTENDED_S:g} s (default)")
        return Held(item=root, seconds=DEFAULT_UNATTENDED_S), notes
    if isinstance(root, Held) and isinstance(root.item, Unattended):
        return root, notes
    if isinstance(root, And | Or):
        items = tuple(_defaults(i, notes)[0] for i in root.items)
        return root.model_copy(update={"items": items}), notes
    if isinstance(root, Not | Held | Times):
        return root.model_copy(update={"item": _defaults(root.item, notes)[0]}), notes
    if isinstance(root, Within):
        first, then = _defaults(root.first, notes)[0], _defaults(root.then, notes)[0]
        return root.model_copy(update={"first": first, "then": then}), notes
    return root, notes
