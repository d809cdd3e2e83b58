"""A compiled rule: its IR, the plan in words, and fresh evaluators for each camera."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamd.rules.evaluate import Context, NodeEval, build
from streamd.rules.ir import Node, RuleIR, Transition, needs_verifier, walk
from streamd.rules.words import describe, explain

__all__ = ["Plan"]


@dataclass(frozen=True)
class Plan:
    """What a rule means. Shared by every camera the rule runs on; evaluation state lives in
    the evaluator each camera's runner builds with `evaluator`."""

    text: str
    ir: RuleIR

    def describe(self) -> str:
        """The plan in words (itself rule text that parses back to the same IR)."""
        return describe(self.ir.root)

    def explain(self) -> list[str]:
        """The plan, then how words were mapped, the defaults used and what it needs."""
        return explain(self.ir)

    def ir_json(self) -> dict[str, Any]:
        return self.ir.model_dump(mode="json", exclude_defaults=False)

    def needs_verifier(self) -> list[str]:
        return needs_verifier(self.ir)

    def places(self) -> tuple[set[str], set[str]]:
        """The zone and line names the rule refers to."""
        zones: set[str] = set()
        lines: set[str] = set()
        for node in walk(self.ir.root):
            subject = getattr(node, "subject", None)
            zone = getattr(subject, "zone", None)
            if zone:
                zones.add(zone)
            if isinstance(node, Transition):
                if node.zone:
                    zones.add(node.zone)
                if node.line:
                    lines.add(node.line)
        return zones, lines

    def evaluator(self, ctx: Context) -> NodeEval:
        return build(self.ir.root, ctx)

    @property
    def root(self) -> Node:
        return self.ir.root
