"""Configuration of the VLM verifier (`verify:` at the root) and of a rule's use of it.

The lead mounts `VerifyConfig` at the config root and `RuleVerifyConfig` per rule. The API key
comes from the file or, when the file has none, from STREAMD_VLM_API_KEY; it is a SecretStr so
that it never shows in a repr, a log line or `streamd check`.
"""

from __future__ import annotations

import os
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator

__all__ = [
    "API_KEY_ENV",
    "OpenAIVerifyConfig",
    "RuleVerifyConfig",
    "TransformersVerifyConfig",
    "VerifyConfig",
]

API_KEY_ENV = "STREAMD_VLM_API_KEY"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _key_from_env() -> SecretStr | None:
    value = os.environ.get(API_KEY_ENV)
    return SecretStr(value) if value else None


class OpenAIVerifyConfig(_Strict):
    """Any OpenAI-compatible chat-completions server: vLLM, Ollama, llama.cpp's server, …"""

    base_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8000/v1"),
        description="Base URL of the API, up to and including /v1 (http or https); "
        "requests go to {base_url}/chat/completions.",
    )
    model: str = Field(
        min_length=1,
        description="Model name as the server knows it, e.g. Qwen/Qwen2.5-VL-7B-Instruct.",
    )
    api_key: SecretStr | None = Field(
        default_factory=_key_from_env,
        description=f"Bearer token, if the server wants one; default: ${API_KEY_ENV}.",
    )
    timeout_s: float = Field(
        20.0, gt=0, le=600, description="Longest one request may take, connect to last byte."
    )
    max_tokens: int = Field(
        256, ge=16, le=8192, description="Most tokens the model may write for one verdict."
    )
    json_schema: bool = Field(
        True,
        description="Send response_format json_schema; turn off for servers that reject it "
        "(the prompt still asks for the JSON object).",
    )


class TransformersVerifyConfig(_Strict):
    """A local image-text-to-text model loaded with transformers."""

    model: str = Field(
        min_length=1,
        description="Hub id (downloaded once into the Hub cache) or a local directory "
        "written by save_pretrained.",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "auto", description="Where the model runs; auto: cuda when available, else cpu."
    )
    max_new_tokens: int = Field(
        128, ge=1, le=4096, description="Most tokens the model may write for one verdict."
    )
    timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest the verifier waits for one generation (it cannot be interrupted "
        "and finishes in the background; its answer is then discarded).",
    )


class VerifyConfig(_Strict):
    """The VLM verifier shared by every rule that enables verification."""

    backend: Literal["openai", "transformers"] = Field(
        "openai", description="Which backend answers: an OpenAI-compatible server or a local model."
    )
    openai: OpenAIVerifyConfig | None = Field(
        None, description="Settings of the openai backend (required when it is chosen)."
    )
    transformers: TransformersVerifyConfig | None = Field(
        None, description="Settings of the transformers backend (required when it is chosen)."
    )
    max_concurrency: int = Field(
        2, ge=1, le=64, description="Most verifications in flight at once, all cameras together."
    )
    rate_per_camera_per_min: float = Field(
        6.0,
        gt=0,
        le=6000,
        description="Verifications each camera may start per minute (token bucket, bursts up "
        "to this many); over it a candidate is 'unverified' with error 'rate limited'.",
    )
    frames: int = Field(3, ge=1, le=16, description="Frames of the segment sent per candidate.")
    max_side_px: int = Field(
        768,
        ge=64,
        le=4096,
        description="Frames are downsized so their longer side is at most this.",
    )

    @model_validator(mode="after")
    def _backend_section(self) -> Self:
        if getattr(self, self.backend) is None:
            raise ValueError(
                f"backend {self.backend!r} needs its section: verify.{self.backend} "
                "(at least its `model`)"
            )
        return self

    @property
    def call_timeout_s(self) -> float:
        """The per-call limit of the chosen backend."""
        if self.backend == "openai":
            assert self.openai is not None
            return self.openai.timeout_s
        assert self.transformers is not None
        return self.transformers.timeout_s


class RuleVerifyConfig(_Strict):
    """Whether a rule's candidates are verified, and what happens when verification fails."""

    enabled: bool = Field(False, description="Send this rule's candidates to the verifier.")
    on_failure: Literal["publish", "drop", "hold"] = Field(
        "publish",
        description="On timeout or failure: publish (marked unverified), drop (treated as "
        "rejected), or hold (retry until hold_s has passed, then publish unverified).",
    )
    hold_s: float = Field(
        30.0, gt=0, le=3600, description="How long `hold` keeps retrying before it gives up."
    )
