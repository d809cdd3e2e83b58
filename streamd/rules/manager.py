"""Adding and removing rules while the daemon runs (the API's POST/DELETE /api/rules).

Rules from the config file are fixed (edit the file); rules added through the API are compiled,
attached to the matching cameras' engines at once, and stored in SQL so a restart keeps them.
"""

from __future__ import annotations

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
                p.engine.runners.append(RuleRunner(name, rule, plan, p.tz))
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
        plan = self._compile(rule)
        await self.store.add(rule)
        self.attach(rule, plan)
        log.info("rule %s added: %s", rule.name, plan.describe())
        return plan

    async def remove(self, name: str) -> None:
        if name in self.config_rules:
            raise RuleConflict(f"rule {name!r} comes from the config file: edit the file")
        if name not in self.api_rules:
            raise UnknownRule(f"no rule named {name!r}")
        now = time.time()
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
        del self.api_rules[name]
        await self.store.delete(name)
        log.info("rule %s removed", name)
