"""GET/POST/DELETE /api/rules: the rules in force, and rules added or removed at run time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from streamd.api.errors import responses
from streamd.api.params import RuleName
from streamd.api.state import ApiState, Authorized, State
from streamd.config import RuleConfig
from streamd.errors import RuleCompileError
from streamd.rules.manager import RuleConflict, RuleManager, UnknownRule
from streamd.rules.plan import Plan

router = APIRouter(tags=["rules"], dependencies=Authorized)


def rule_json(rule: RuleConfig, plan: Plan, source: str) -> dict[str, Any]:
    return {
        "name": rule.name,
        "text": rule.text,
        "cameras": rule.cameras,
        "plan": plan.describe(),
        "cooldown_s": rule.cooldown_s,
        "clear_s": rule.clear_s,
        "severity": rule.severity,
        "source": source,
    }


def _manager(st: ApiState) -> RuleManager:
    if st.rules is None:
        raise HTTPException(503, "rules cannot be changed on this server")
    return st.rules


@router.get("/api/rules", summary="Every rule with its compiled plan", responses=responses())
async def rules(st: State) -> list[dict[str, Any]]:
    if st.rules is not None:
        return [rule_json(r, p, src) for r, p, src in st.rules.all()]
    return [rule_json(r, st.plans[r.name], "config") for r in st.config.rules]


@router.post(
    "/api/rules",
    status_code=201,
    summary="Add a rule while running; it is stored and survives restarts",
    responses=responses(
        400,
        409,
        503,
        e400="The text does not compile, or names an unknown camera",
        e409="A rule of that name exists",
        e503="Rules cannot be changed on this server, or the database is unreachable",
    ),
)
async def add_rule(st: State, rule: RuleConfig) -> dict[str, Any]:
    try:
        plan = await _manager(st).add(rule)
    except RuleCompileError as exc:
        raise HTTPException(400, str(exc)) from exc
    except RuleConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except UnknownRule as exc:
        raise HTTPException(400, str(exc)) from exc
    return rule_json(rule, plan, "api")


@router.delete(
    "/api/rules/{name}",
    status_code=204,
    summary="Remove a rule added through the API (its open events end now)",
    responses=responses(
        404,
        409,
        503,
        e404="No such rule",
        e409="The rule comes from the config file",
        e503="Rules cannot be changed on this server, or the database is unreachable",
    ),
)
async def delete_rule(st: State, name: RuleName) -> None:
    try:
        await _manager(st).remove(name)
    except RuleConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except UnknownRule as exc:
        raise HTTPException(404, str(exc)) from exc
