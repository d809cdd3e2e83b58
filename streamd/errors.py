"""The project's exceptions. Each carries enough context to name what is wrong."""

from __future__ import annotations


class StreamdError(Exception):
    """Base class for every error streamd raises on purpose."""


class ConfigError(StreamdError):
    """The configuration file is invalid; the message names the key (and line)."""


class RuleCompileError(StreamdError):
    """A rule's text could not be compiled into a plan.

    `understood` lists what the compiler did make of the text, `not_understood` the words it
    could not place, so the user can rephrase instead of guessing.
    """

    def __init__(self, text: str, understood: list[str], not_understood: list[str], hint: str = ""):
        self.text = text
        self.understood = understood
        self.not_understood = not_understood
        parts = [f"cannot compile rule {text!r}"]
        if understood:
            parts.append("understood: " + "; ".join(understood))
        if not_understood:
            parts.append("did not understand: " + ", ".join(repr(w) for w in not_understood))
        if hint:
            parts.append(hint)
        super().__init__(" — ".join(parts))


class SchemaMissing(StreamdError):
    """A read-only command found no database, or one at another schema than this streamd's."""


class SourceError(StreamdError):
    """A camera source failed (open, read or decode); the pipeline reconnects."""


class ModelError(StreamdError):
    """A model file is missing, corrupt or failed its checksum."""


class QueryError(StreamdError):
    """A search or event query is invalid (empty text, unknown camera, inverted range)."""
