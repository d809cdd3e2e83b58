"""The `openai` backend: any OpenAI-compatible chat-completions endpoint over httpx.

vLLM, Ollama and llama.cpp's server all speak this: POST {base_url}/chat/completions with
image_url parts carrying base64 data URLs, temperature 0 and a json_schema response_format.
The API key goes only into the Authorization header of the client, never into a message.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from streamd.verify.config import OpenAIVerifyConfig
from streamd.verify.errors import BackendError
from streamd.verify.model import response_format
from streamd.verify.prompt import Prompt, openai_messages

__all__ = ["OpenAIBackend"]

log = logging.getLogger(__name__)

_BODY_EXCERPT = 200


class OpenAIBackend:
    """One pooled HTTP client per verifier; requests are bounded by `timeout_s`."""

    def __init__(
        self, cfg: OpenAIVerifyConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.cfg = cfg
        self._url = str(cfg.base_url).rstrip("/") + "/chat/completions"
        headers = {"Accept": "application/json"}
        if cfg.api_key is not None:
            headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(cfg.timeout_s), transport=transport
        )

    @property
    def name(self) -> str:
        return f"openai:{self.cfg.model}"

    def __repr__(self) -> str:
        key = "set" if self.cfg.api_key is not None else "none"
        return f"OpenAIBackend(url={self._url!r}, model={self.cfg.model!r}, api_key={key})"

    async def start(self) -> None:
        log.info("VLM verifier: %s at %s", self.name, self._url)

    def request_body(self, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": openai_messages(prompt),
            "temperature": 0,
            "max_tokens": self.cfg.max_tokens,
        }
        if self.cfg.json_schema:
            body["response_format"] = response_format()
        return body

    async def judge(self, prompt: Prompt) -> str:
        try:
            resp = await self._client.post(self._url, json=self.request_body(prompt))
        except httpx.TimeoutException as exc:
            raise BackendError(
                f"{self._url}: no answer within {self.cfg.timeout_s:g} s ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise BackendError(f"{self._url}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code != httpx.codes.OK:
            raise BackendError(
                f"{self._url} answered HTTP {resp.status_code}: {_excerpt(resp.text)!r}"
            )
        return _reply_text(self._url, resp)

    async def aclose(self) -> None:
        await self._client.aclose()


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _BODY_EXCERPT else flat[:_BODY_EXCERPT] + "…"


def _reply_text(url: str, resp: httpx.Response) -> str:
    """choices[0].message.content, or a BackendError saying which part is missing."""
    try:
        data = resp.json()
    except ValueError as exc:
        raise BackendError(f"{url} answered non-JSON: {_excerpt(resp.text)!r}") from exc
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise BackendError(
            f"{url} answered without choices[0].message.content: {_excerpt(resp.text)!r}"
        ) from exc
    if isinstance(content, list):  # some servers return content parts
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    if not isinstance(content, str) or not content.strip():
        raise BackendError(f"{url} answered an empty message: {_excerpt(resp.text)!r}")
    return content
