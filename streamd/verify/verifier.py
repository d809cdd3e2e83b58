"""The verifier: bounded, rate-limited VLM calls with each rule's failure policy applied.

`verify()` never raises for a backend's trouble: a timeout, an HTTP error or an unreadable
reply becomes a result according to the rule's `on_failure` — publish (unverified), drop
(rejected) or hold (retry with backoff until `hold_s`, then unverified). Waiting for a free
slot counts towards the call's timeout, so a backlog delays an alert by at most that much.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from streamd.verify.backend import Backend
from streamd.verify.config import RuleVerifyConfig, VerifyConfig
from streamd.verify.errors import VerifyError
from streamd.verify.model import Candidate, Verdict, VerifyResult, parse_verdict
from streamd.verify.prompt import Prompt, build_prompt
from streamd.verify.ratelimit import CameraRateLimiter

__all__ = ["RATE_LIMITED", "Verifier", "load_verifier"]

log = logging.getLogger(__name__)

RATE_LIMITED = "rate limited"


@dataclass
class _Stats:
    calls: int = 0
    confirmed: int = 0
    rejected: int = 0
    unverified: int = 0
    failures: int = 0
    rate_limited: int = 0
    latency_total_s: float = 0.0
    answered: int = 0
    last_error: str | None = None


class Verifier:
    """Owns one backend; use as an async context manager (start loads, exit closes)."""

    def __init__(
        self,
        cfg: VerifyConfig,
        backend: Backend,
        *,
        retry_delay_s: float = 0.5,
        max_retry_delay_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.timeout_s = cfg.call_timeout_s
        self._slots = asyncio.Semaphore(cfg.max_concurrency)
        self._limiter = CameraRateLimiter(cfg.rate_per_camera_per_min, clock=clock)
        self._retry_delay_s = retry_delay_s
        self._max_retry_delay_s = max_retry_delay_s
        self._clock = clock
        self._stats = _Stats()
        self._in_flight = 0

    def __repr__(self) -> str:
        return f"Verifier(backend={self.backend!r}, max_concurrency={self.cfg.max_concurrency})"

    async def __aenter__(self) -> Self:
        await self.backend.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.backend.aclose()

    async def verify(self, candidate: Candidate, policy: RuleVerifyConfig) -> VerifyResult:
        """The verdict for `candidate`, with `policy` applied when the backend fails."""
        start = self._clock()
        self._stats.calls += 1
        if not self._limiter.try_take(candidate.camera):
            self._stats.rate_limited += 1
            return self._finish(
                VerifyResult("unverified", None, "", self.backend.name, 0.0, RATE_LIMITED)
            )
        prompt = build_prompt(candidate, self.cfg.frames, self.cfg.max_side_px)
        hold_until = start + policy.hold_s if policy.on_failure == "hold" else None
        delay = self._retry_delay_s
        attempts = 0
        # Bounded: without hold one attempt; with hold, attempts stop once hold_s has passed.
        while True:
            attempts += 1
            timeout = self.timeout_s
            if hold_until is not None:
                timeout = min(timeout, max(0.0, hold_until - self._clock()))
            try:
                if timeout <= 0:
                    raise TimeoutError
                async with asyncio.timeout(timeout):
                    reply = await self._judge(prompt)
                verdict = parse_verdict(reply)
            except Exception as exc:
                # Anything a backend raises is the backend's failure, never the camera's:
                # the rule's policy decides. Unexpected kinds get a traceback in the log.
                if not isinstance(exc, VerifyError | TimeoutError):
                    log.exception("verifier backend %s raised unexpectedly", self.backend.name)
                error = _describe_failure(exc, timeout)
                self._stats.failures += 1
                self._stats.last_error = error
                log.warning(
                    "camera %s: rule %s: verification attempt %d failed: %s",
                    candidate.camera,
                    candidate.rule_name,
                    attempts,
                    error,
                )
                if hold_until is not None and self._clock() + delay < hold_until:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_retry_delay_s)
                    continue
                return self._finish(self._on_failure(policy, error, start, attempts))
            latency = self._clock() - start
            return self._finish(
                VerifyResult(
                    "confirmed" if verdict.match else "rejected",
                    verdict.confidence,
                    verdict.explanation,
                    self.backend.name,
                    latency,
                    None,
                )
            )

    async def _judge(self, prompt: Prompt) -> str:
        async with self._slots:
            self._in_flight += 1
            try:
                return await self.backend.judge(prompt)
            finally:
                self._in_flight -= 1

    def _on_failure(
        self, policy: RuleVerifyConfig, error: str, start: float, attempts: int
    ) -> VerifyResult:
        latency = self._clock() - start
        if attempts > 1:
            error = f"{error} (after {attempts} attempts)"
        verdict: Verdict = "rejected" if policy.on_failure == "drop" else "unverified"
        explanation = f"not verified: {policy.on_failure} on failure"
        return VerifyResult(verdict, None, explanation, self.backend.name, latency, error)

    def _finish(self, result: VerifyResult) -> VerifyResult:
        stats = self._stats
        if result.verdict == "confirmed":
            stats.confirmed += 1
        elif result.verdict == "rejected":
            stats.rejected += 1
        else:
            stats.unverified += 1
        if result.error is None:
            stats.answered += 1
            stats.latency_total_s += result.latency_s
        return result

    def describe(self) -> dict[str, Any]:
        """Counters for /api and metrics; mean latency is over answered calls only."""
        s = self._stats
        return {
            "backend": self.backend.name,
            "calls": s.calls,
            "confirmed": s.confirmed,
            "rejected": s.rejected,
            "unverified": s.unverified,
            "failures": s.failures,
            "rate_limited": s.rate_limited,
            "mean_latency_s": round(s.latency_total_s / s.answered, 3) if s.answered else None,
            "in_flight": self._in_flight,
            "max_concurrency": self.cfg.max_concurrency,
            "last_error": s.last_error,
        }


def _describe_failure(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, VerifyError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def load_verifier(cfg: VerifyConfig, **kwargs: Any) -> Verifier:
    """The verifier for `cfg` with its backend built (not yet started: use `async with`)."""
    backend: Backend
    if cfg.backend == "openai":
        from streamd.verify.openai_backend import OpenAIBackend

        assert cfg.openai is not None
        backend = OpenAIBackend(cfg.openai)
    else:
        from streamd.verify.transformers_backend import TransformersBackend

        assert cfg.transformers is not None
        backend = TransformersBackend(cfg.transformers)
    return Verifier(cfg, backend, **kwargs)
