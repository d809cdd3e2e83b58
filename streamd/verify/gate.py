"""The verify stage between rules and events.

A rule that asks for verification (or needs it: scene predicates, attributes only a VLM can
see) has each new event checked before anything about it is published: the event's `new`,
and any `update` / `end` that arrive while the verifier thinks, wait in the gate in order.
Then, by verdict: confirmed or unverified (the rule's failure policy said publish) → every
waiting change goes on, each carrying the verdict as its `description` and in its details;
rejected → the event is dropped whole, and its later changes with it.

A camera never waits for the verifier: `submit` only queues; the verification runs in a task
the gate owns. Changes of events that need no verification pass straight through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from streamd.events.change import EventChange
from streamd.verify.config import RuleVerifyConfig
from streamd.verify.model import Candidate, VerifyResult
from streamd.verify.verifier import Verifier

__all__ = ["VerifyGate"]

log = logging.getLogger(__name__)

Sink = Callable[[EventChange], Awaitable[None]]
PolicyFor = Callable[[str], RuleVerifyConfig | None]


@dataclass
class _Pending:
    waiting: list[EventChange] = field(default_factory=list)
    result: VerifyResult | None = None


class VerifyGate:
    """Owns the verification tasks; use as an async context manager around the pipelines."""

    def __init__(self, verifier: Verifier | None, policy_for: PolicyFor, sink: Sink) -> None:
        self.verifier = verifier
        self.policy_for = policy_for
        self.sink = sink
        self._pending: dict[str, _Pending] = {}
        self._verdicts: dict[str, VerifyResult] = {}  # open events, for their later changes
        self._rejected: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.last_verdicts: dict[str, dict[str, Any]] = {}  # rule → its last verdict

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drain()

    async def drain(self) -> None:
        """Wait for the verifications in flight (shutdown: their events still get logged)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def submit(self, change: EventChange) -> None:
        eid = change.event_id
        if eid in self._rejected:
            if change.kind == "end":
                self._rejected.discard(eid)
            return
        pending = self._pending.get(eid)
        if pending is not None:
            pending.waiting.append(change)
            return
        verdict = self._verdicts.get(eid)
        if verdict is not None:
            await self.sink(_with(change, verdict))
            if change.kind == "end":
                del self._verdicts[eid]
            return
        policy = self.policy_for(change.rule_name)
        if change.kind != "new" or policy is None or not policy.enabled:
            await self.sink(change)
            return
        if self.verifier is None:
            # check refuses such a config; a rule added at run time cannot get here either
            await self.sink(change)
            return
        self._pending[eid] = _Pending([change])
        task = asyncio.create_task(self._verify(change, policy), name=f"verify:{eid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _verify(self, change: EventChange, policy: RuleVerifyConfig) -> None:
        assert self.verifier is not None
        snap = change.snapshot
        frames = () if snap is None else (snap.evidence or (snap.image,))
        candidate = Candidate(
            camera=change.camera,
            rule_name=change.rule_name,
            rule_text=change.rule_text,
            ts=change.start_time,
            frames=frames,
            boxes=() if snap is None else snap.boxes,
        )
        result = await self.verifier.verify(candidate, policy)
        self.last_verdicts[change.rule_name] = {"event_id": change.event_id, **result.as_dict()}
        pending = self._pending.pop(change.event_id)
        log.info(
            "camera %s: rule %s verdict %s", change.camera, change.rule_name, result.description
        )
        if result.verdict == "rejected":
            self.dropped += 1
            ended = any(c.kind == "end" for c in pending.waiting)
            if not ended:
                self._rejected.add(change.event_id)
            return
        if not any(c.kind == "end" for c in pending.waiting):
            self._verdicts[change.event_id] = result
        for waiting in pending.waiting:
            await self.sink(_with(waiting, result))


def _with(change: EventChange, result: VerifyResult) -> EventChange:
    return dataclasses.replace(
        change,
        description=result.description,
        details={**change.details, "verification": result.as_dict()},
    )
