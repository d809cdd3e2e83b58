"""Rule text (or a rule written as its IR in YAML) → Plan.

Text goes through the Lark grammar (parser.py) with the zone and line names of the cameras the
rule runs on; an unknown word, zone or shape is a RuleCompileError that says what was
understood and what was not. A rule is never half-applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from streamd.errors import RuleCompileError
from streamd.rules.ir import parse_ir
from streamd.rules.parser import parse_rule
from streamd.rules.plan import Plan

if TYPE_CHECKING:
    from streamd.config import Config, RuleConfig
    from streamd.verify.config import RuleVerifyConfig

__all__ = ["compile_config_rule", "compile_rule", "places_for", "verification_for"]


def compile_rule(
    text: str,
    zones: Sequence[str] = (),
    lines: Sequence[str] = (),
    structured: Mapping[str, Any] | None = None,
) -> Plan:
    """Compile a rule for cameras with these zone and line names."""
    ir = parse_ir(dict(structured)) if structured is not None else parse_rule(text, zones, lines)
    plan = Plan(text, ir)
    used_zones, used_lines = plan.places()
    unknown = sorted(used_zones - set(zones)) + sorted(used_lines - set(lines))
    if unknown:
        known = ", ".join(sorted({*zones, *lines})) or "none configured"
        raise RuleCompileError(
            text or "<structured rule>",
            [],
            unknown,
            f"no zone or line named {', '.join(map(repr, unknown))} on the rule's cameras "
            f"(known: {known})",
        )
    return plan


def places_for(cfg: Config, rule: RuleConfig) -> tuple[list[str], list[str]]:
    """The zone and line names of the cameras a rule runs on."""
    zones: set[str] = set()
    lines: set[str] = set()
    for name, cam in cfg.cameras.items():
        if rule.cameras is None or name in rule.cameras:
            zones |= set(cam.zones)
            lines |= set(cam.lines)
    return sorted(zones), sorted(lines)


def compile_config_rule(cfg: Config, rule: RuleConfig) -> Plan:
    """A configured rule, compiled against its cameras' zones and lines; one that only a VLM
    can judge (a scene predicate, an attribute such as "child") needs `verify:` configured."""
    zones, lines = places_for(cfg, rule)
    plan = compile_rule(rule.text, zones, lines, structured=rule.ir)
    needs = plan.needs_verifier()
    if needs and cfg.verify is None:
        raise RuleCompileError(
            rule.text,
            [plan.describe()],
            [],
            f"this rule needs a VLM verifier ({'; '.join(needs)}): nothing structured in the "
            "world model can tell; configure `verify:` (an OpenAI-compatible server such as "
            "vLLM serving Qwen2.5-VL, or a local transformers model) or rephrase it",
        )
    return plan


def verification_for(plan: Plan, rule: RuleConfig) -> RuleVerifyConfig | None:
    """The rule's verification policy: its own when enabled, the default one when its plan
    cannot run without a verifier, else none."""
    if rule.verify.enabled:
        return rule.verify
    if plan.needs_verifier():
        return rule.verify.model_copy(update={"enabled": True})
    return None
