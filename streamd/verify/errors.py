"""What can go wrong while verifying a candidate; the verifier turns each into its policy."""

from __future__ import annotations

from streamd.errors import StreamdError


class VerifyError(StreamdError):
    """A verification attempt failed (backend unreachable, bad answer, unusable reply)."""


class BackendError(VerifyError):
    """The backend could not produce a reply: HTTP error, malformed response, generation failed."""


class VerdictParseError(VerifyError):
    """The model replied, but no JSON verdict of the expected shape could be read from it."""
