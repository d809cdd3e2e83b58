"""Changing rules while the daemon runs: POST/DELETE /api/rules, and reloading the file.

Rules added through the API are compiled, attached to the matching cameras' engines at once,
and stored in SQL so a restart keeps them. Rules from the config file change when the file is
reloaded (SIGHUP, or POST /api/rules/reload): every rule of the new file is compiled first, and
only if all compile are they swapped in — a reload is never half-applied. Unchanged rules keep
their runners (and their open events and timers); removed or changed ones end their events.
Camera connections are not touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from streamd.config import Config, RuleConfig
from streamd.errors import StreamdError
from streamd.events.change import EventChange
from streamd.events.rule_store import RuleStore
from streamd.pipeline import CameraPipeline
from streamd.rules.compiler import compile_config_rule
from streamd.rules.engine import RuleRunner
from streamd.rules.plan import Plan

log = logging.getLogger(__name__)


class RuleConflict(StreamdError):
    """The name is taken, or the rule belongs to the config file."""


class UnknownRule(StreamdError):
    """No rule has that name."""


@dataclass
class RuleManager:
    pipelines: dict[str, CameraPipeline]
    store: RuleStore
    sink: Callable[[EventChange], Awaitable[None]]
    config_rules: dict[str, tuple[RuleConfig, Plan]]
    api_rules: dict[str, tuple[RuleConfig, Plan]] = field(default_factory=dict)
    config: Config | None = None  # the cameras' zones and lines

    def all(self) -> list[tuple[RuleConfig, Plan, str]]:
        return [(r, p, "config") for r, p in self.config_rules.values()] + [
            (r, p, "api") for r, p in self.api_rules.values()
        ]

    def _check_cameras(self, rule: RuleConfig) -> None:
        for cam in rule.cameras or ():
            if cam not in self.pipelines:
                raise UnknownRule(f"rule {rule.name!r} names unknown camera {cam!r}")

    def attach(self, rule: RuleConfig, plan: Plan) -> None:
        for name, p in self.pipelines.items():
            if rule.cameras is None or name in rule.cameras:
                p.rules.append((rule, plan))
                p.engine.runners.append(p.runner(rule, plan))
        self.api_rules[rule.name] = (rule, plan)

    def _compile(self, rule: RuleConfig) -> Plan:
        cfg = self.config if self.config is not None else Config()
        return compile_config_rule(cfg, rule)

    async def load(self) -> None:
        """Attach the stored rules at start; one that no longer fits is skipped, loudly."""
        for rule in await self.store.list():
            try:
                if rule.name in self.config_rules:
                    raise RuleConflict("the config file now defines a rule of that name")
                self._check_cameras(rule)
                self.attach(rule, self._compile(rule))
            except StreamdError as exc:
                log.warning("stored rule %s not loaded: %s", rule.name, exc)

    async def add(self, rule: RuleConfig) -> Plan:
        """Compile, attach and store; raises RuleCompileError, RuleConflict or UnknownRule."""
        if rule.name in self.config_rules or rule.name in self.api_rules:
            raise RuleConflict(f"a rule named {rule.name!r} already exists")
        self._check_cameras(rule)
        plan = await asyncio.to_thread(self._compile, rule)  # MiniLM: never on the loop
        await self.store.add(rule)
        self.attach(rule, plan)
        log.info("rule %s added: %s", rule.name, plan.describe())
        return plan

    async def reload(self, cfg: Config) -> dict[str, list[str]]:
        """Swap the config file's rules for those of `cfg` (same cameras); returns what changed.

        Raises RuleCompileError (nothing applied) when any new rule does not compile."""
        plans = await asyncio.to_thread(  # all or nothing, off the loop
            lambda: {r.name: compile_config_rule(cfg, r) for r in cfg.rules}
        )
        for rule in cfg.rules:
            if rule.name in self.api_rules:
                raise RuleConflict(f"rule {rule.name!r} was added through the API; remove it first")
        old = self.config_rules
        new = {r.name: (r, plans[r.name]) for r in cfg.rules}
        removed = [n for n in old if n not in new]
        changed = [n for n in new if n in old and old[n][0] != new[n][0]]
        added = [n for n in new if n not in old]
        now = time.time()
        for name in removed + changed:
            await self._detach(name, now)
        for name in changed + added:
            rule, plan = new[name]
            for cam, p in self.pipelines.items():
                if rule.cameras is None or cam in rule.cameras:
                    p.rules.append((rule, plan))
                    p.engine.runners.append(p.runner(rule, plan))
        self.config_rules = new
        self.config = cfg
        log.info(
            "rules reloaded: %d added, %d changed, %d removed, %d unchanged",
            len(added),
            len(changed),
            len(removed),
            len(new) - len(added) - len(changed),
        )
        return {"added": added, "changed": changed, "removed": removed}

    async def _detach(self, name: str, now: float) -> None:
        for p in self.pipelines.values():
            keep = []
            for runner in p.engine.runners:
                if runner.rule.name == name:
                    for change in runner.close(now):  # an open event ends with its rule
                        await self.sink(change)
                else:
                    keep.append(runner)
            p.engine.runners[:] = keep
            p.rules[:] = [(r, pl) for r, pl in p.rules if r.name != name]

    def runners(self, name: str) -> list[RuleRunner]:
        """The live runners of a rule (one per camera)."""
        return [r for p in self.pipelines.values() for r in p.engine.runners if r.rule.name == name]

    async def remove(self, name: str) -> None:
        if name in self.config_rules:
            raise RuleConflict(f"rule {name!r} comes from the config file: edit the file")
        if name not in self.api_rules:
            raise UnknownRule(f"no rule named {name!r}")
        await self._detach(name, time.time())
        del self.api_rules[name]
        await self.store.delete(name)
        log.info("rule %s removed", name)
