"""Optional VLM confirmation of candidate events (OpenAI-compatible server or local model).

Sits between rules and events: a rule that enables verification hands its candidate (a few
frames, the subject's boxes, the rule text) to `Verifier.verify`, which answers confirmed,
rejected or unverified, with the rule's failure policy already applied.
"""

from streamd.verify.config import (
    OpenAIVerifyConfig,
    RuleVerifyConfig,
    TransformersVerifyConfig,
    VerifyConfig,
)
from streamd.verify.errors import BackendError, VerdictParseError, VerifyError
from streamd.verify.model import Candidate, Verdict, VerifyResult, VlmVerdict, parse_verdict
from streamd.verify.verifier import RATE_LIMITED, Verifier, load_verifier

__all__ = [
    "RATE_LIMITED",
    "BackendError",
    "Candidate",
    "OpenAIVerifyConfig",
    "RuleVerifyConfig",
    "TransformersVerifyConfig",
    "Verdict",
    "VerdictParseError",
    "Verifier",
    "VerifyConfig",
    "VerifyError",
    "VerifyResult",
    "VlmVerdict",
    "load_verifier",
    "parse_verdict",
]
