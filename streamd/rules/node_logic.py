"""Combinators and time: and, or, not, held for, within, N times in M."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from streamd.perception.world import WorldState
from streamd.rules.truth import SCENE, Context, Hit, Key, NodeEval, Truth, scene_truth


def _merge(a: Hit, b: Hit) -> Hit:
    sinces = [s for s in (a.since, b.since) if s is not None]
    return Hit(
        since=max(sinces) if sinces else None,  # both hold from the later start
        score=max(a.score, b.score),
        boxes=a.boxes + tuple(x for x in b.boxes if x not in a.boxes),
        details={**b.details, **a.details},
    )


@dataclass
class AndEval:
    items: list[NodeEval]

    def step(self, world: WorldState) -> Truth:
        truths = [i.step(world) for i in self.items]  # every item steps: they keep state
        if not all(t.holds for t in truths):
            return Truth({}, scene_level=all(t.scene_level for t in truths))
        scene = [t for t in truths if t.scene_level]
        tracked = [t for t in truths if not t.scene_level]
        if not tracked:
            hit = Hit()
            for t in scene:
                hit = _merge(hit, t.hits[SCENE])
            return Truth({SCENE: hit}, scene_level=True)
        keys = set(tracked[0].hits)
        for t in tracked[1:]:
            keys &= set(t.hits)
        extra = Hit()
        for t in scene:
            extra = _merge(extra, t.hits[SCENE])
        if keys:
            out: dict[Key, Hit] = {}
            for k in keys:
                hit = extra
                for t in tracked:
                    hit = _merge(t.hits[k], hit)
                out[k] = hit
            return Truth(out)
        # Different things hold together ("a person and a car"): the scene is the subject.
        hit = extra
        for t in tracked:
            for h in t.hits.values():
                hit = _merge(hit, h)
        return Truth({SCENE: hit}, scene_level=True)


@dataclass
class OrEval:
    items: list[NodeEval]

    def step(self, world: WorldState) -> Truth:
        truths = [i.step(world) for i in self.items]
        out: dict[Key, Hit] = {}
        for t in truths:
            for k, h in t.hits.items():
                out[k] = _merge(out[k], h) if k in out else h
        return Truth(out, scene_level=all(t.scene_level for t in truths))


@dataclass
class NotEval:
    item: NodeEval

    def step(self, world: WorldState) -> Truth:
        inner = self.item.step(world)
        return scene_truth(not inner.holds, Hit(score=1.0))


@dataclass
class HeldEval:
    item: NodeEval
    seconds: float
    ctx: Context
    first: dict[Key, float] = field(default_factory=dict)
    last: dict[Key, float] = field(default_factory=dict)

    def step(self, world: WorldState) -> Truth:
        inner = self.item.step(world)
        now = world.ts
        for k in [k for k, t in self.last.items() if now - t > self.ctx.tolerance_s]:
            # missing for longer than a dropout: the clock starts again
            self.first.pop(k, None)
            self.last.pop(k, None)
        out: dict[Key, Hit] = {}
        for k, h in inner.hits.items():
            start = self.first.setdefault(k, now)
            if h.since is not None:
                start = min(start, h.since)
                self.first[k] = start
            self.last[k] = now
            if now - start + 0.1 >= self.seconds:  # 1 fps timestamps jitter by tens of ms
                out[k] = Hit(h.since if h.since is not None else start, h.score, h.boxes, h.details)
        return Truth(out, inner.scene_level)


@dataclass
class WithinEval:
    first: NodeEval
    then: NodeEval
    seconds: float
    seen: dict[Key, float] = field(default_factory=dict)
    any_seen: float | None = None

    def step(self, world: WorldState) -> Truth:
        a = self.first.step(world)
        b = self.then.step(world)
        now = world.ts
        for k in a.hits:
            self.seen[k] = now
            self.any_seen = now
        out: dict[Key, Hit] = {}
        for k, h in b.hits.items():
            when = self.seen.get(k) if not a.scene_level else self.any_seen
            if when is None and (b.scene_level or a.scene_level):
                when = self.any_seen
            if when is not None and now - when <= self.seconds:
                out[k] = h
        for k in [k for k, t in self.seen.items() if now - t > self.seconds]:
            del self.seen[k]
        return Truth(out, b.scene_level)


@dataclass
class TimesEval:
    item: NodeEval
    n: int
    seconds: float
    seen: deque[tuple[float, Key]] = field(default_factory=deque)
    active: set[Key] = field(default_factory=set)

    def step(self, world: WorldState) -> Truth:
        inner = self.item.step(world)
        now = world.ts
        for k in inner.hits:
            if k not in self.active:  # a new occurrence, not the same one still holding
                self.seen.append((now, k))
        self.active = set(inner.hits)
        while self.seen and now - self.seen[0][0] > self.seconds:
            self.seen.popleft()
        holds = len(self.seen) >= self.n
        return scene_truth(holds, Hit(score=1.0, details={"occurrences": len(self.seen)}))
