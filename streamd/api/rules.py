"""GET/POST/DELETE /api/rules: the rules in force, and rules added or removed at run time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from streamd.api.errors import responses
from streamd.api.params import RuleName
from streamd.api.state import ApiState, Authorized, State
from streamd.config import RuleConfig
from streamd.errors import ConfigError, RuleCompileError, StreamdError
from streamd.rules.manager import RuleConflict, RuleManager, UnknownRule
from streamd.rules.plan import Plan

router = APIRouter(tags=["rules"], dependencies=Authorized)


def rule_json(
    rule: RuleConfig, plan: Plan, source: str, st: ApiState | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": rule.name,
        "text": rule.text,
        "cameras": rule.cameras,
        "plan": plan.describe(),
        "ir": plan.ir_json(),
        "cooldown_s": rule.cooldown_s,
        "clear_s": rule.clear_s,
        "severity": rule.severity,
        "verify": rule.verify.model_dump(),
        "source": source,
    }
    if st is not None and st.rules is not None:
        # live state per camera: holding since, open events; and the last verdict
        out["live"] = [r.state() for r in st.rules.runners(rule.name)]
        out["last_verdict"] = st.verdicts.get(rule.name)
    return out


def _manager(st: ApiState) -> RuleManager:
    if st.rules is None:
        raise HTTPException(503, "rules cannot be changed on this server")
    return st.rules


@router.get("/api/rules", summary="Every rule with its compiled plan", responses=responses())
async def rules(st: State) -> list[dict[str, Any]]:
    if st.rules is not None:
        return [rule_json(r, p, src, st) for r, p, src in st.rules.all()]
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


@router.post(
    "/api/rules/reload",
    summary="Re-read the config file's rules (all or nothing; camera connections stay)",
    responses=responses(
        400, 409, 503, e400="The file or one of its rules is invalid: nothing changed",
        e409="Cameras changed in the file (restart to apply), or there is no file (demo)",
        e503="Rules cannot be changed on this server",
    ),
)  # fmt: skip
async def reload_rules(st: State) -> dict[str, list[str]]:
    if st.reload is None:
        raise HTTPException(503, "this server has no config file to reload")
    try:
        return await st.reload()
    except (ConfigError, RuleCompileError, RuleConflict) as exc:
        raise HTTPException(400, str(exc)) from exc
    except StreamdError as exc:
        raise HTTPException(409, str(exc)) from exc


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
