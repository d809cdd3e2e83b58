"""The `streamd` command: run, check, events, search, db upgrade.

Exit codes: 0 ok, 1 runtime failure, 2 bad input (config, rule, arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamd.config import Config, load_config
from streamd.errors import ConfigError, QueryError, RuleCompileError, StreamdError

log = logging.getLogger("streamd")


class _Redact(logging.Filter):
    """Last line of defence: scrub `user:password@` from any log message."""

    def filter(self, record: logging.LogRecord) -> bool:
        import re

        msg = record.getMessage()
        clean = re.sub(r"(\w+://[^:/@\s]*:)[^@\s/]+@", r"\1***@", msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redact())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in (
        "aiortc",
        "aioice",
        "alembic",
        "apscheduler",
        "httpx",
        "sentence_transformers",
        "uvicorn.access",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config(args: argparse.Namespace) -> Config:
    if args.config is None:
        from streamd.daemon import demo_config

        return demo_config()
    return load_config(Path(args.config))


def cmd_check(args: argparse.Namespace) -> int:
    from streamd.rules.compiler import compile_config_rule

    cfg = _config(args)
    errors = 0
    print(f"config OK: {len(cfg.cameras)} camera(s), {len(cfg.rules)} rule(s)")
    for name, cam in cfg.cameras.items():
        from streamd.config import redact_url

        if cam.url:
            src = redact_url(cam.url)
        elif cam.file:
            src = str(cam.file)
        elif cam.webrtc == "whip":
            src = f"WebRTC WHIP push to POST /api/whip/{name}"
        elif cam.webrtc is not None:
            src = f"WebRTC WHEP pull from {redact_url(cam.webrtc.whep)}"
        else:
            src = "generated demo scene"
        print(f"  camera {name}: {src} at {cam.fps:g} fps, window {cam.window_tokens} tokens")
    for i, rule in enumerate(cfg.rules):
        try:
            plan = compile_config_rule(cfg, rule)
        except RuleCompileError as exc:
            print(f"error: rules[{i}] ({rule.name}): {exc}", file=sys.stderr)
            errors += 1
            continue
        cams = ", ".join(rule.cameras) if rule.cameras else "all cameras"
        print(f"  rule {rule.name} [{cams}]: {rule.text!r}")
        lines = plan.explain()
        print(f"    plan: {lines[0]}")
        for line in lines[1:]:
            print(f"      {line}")
        print(
            f"    options: cooldown {rule.cooldown_s:g} s, clear {rule.clear_s:g} s, "
            f"severity {rule.severity}"
        )
        print(f"    ir: {json.dumps(plan.ir_json(), separators=(',', ':'))}")
    return 2 if errors else 0


def cmd_run(args: argparse.Namespace) -> int:
    from streamd.daemon import Daemon, compile_plans

    cfg = _config(args)
    if args.config is None:
        log.info("no config given: running the built-in demo (generated scene, SQLite, one rule)")
    compile_plans(cfg)  # a rule that does not compile stops start-up with exit 2
    try:
        import uvloop

        uvloop.run(Daemon(cfg).run())
    except StreamdError as exc:
        log.error("%s", exc)
        return 1
    return 0


def _fmt_time(epoch: float | None) -> str:
    from datetime import datetime

    if epoch is None:
        return "active"
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _db_url(args: argparse.Namespace) -> str:
    if getattr(args, "db", None):
        from streamd.config import DatabaseConfig

        return DatabaseConfig(url=args.db).url
    return _config(args).database.url


def cmd_events(args: argparse.Namespace) -> int:
    from streamd.events.db import make_engine, upgrade
    from streamd.events.store import EventStore
    from streamd.timeparse import parse_time

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if since and until and since > until:
        raise ConfigError("--since is after --until")
    url = _db_url(args)

    async def go() -> list[dict[str, Any]]:
        await upgrade(url)
        engine = make_engine(url)
        try:
            store = EventStore(engine, Path("."), None)
            rows = await store.query(
                camera=args.camera, rule=args.rule, since=since, until=until, limit=args.limit
            )
            return [r.to_json_dict() for r in rows]
        finally:
            await engine.dispose()

    rows = asyncio.run(go())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no events")
        return 0
    print(f"{'started':19}  {'ended':19}  {'camera':12} {'rule':20} {'score':>5}  id")
    for r in rows:
        print(
            f"{_fmt_time(r['start_time']):19}  {_fmt_time(r['end_time']):19}  "
            f"{r['camera']:12} {r['rule']:20} {r['top_score']:5.2f}  {r['id']}"
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from streamd.window.search_cli import run_search

    return run_search(args, _config(args))


def cmd_db(args: argparse.Namespace) -> int:
    from streamd.events.db import safe_url, upgrade

    url = _db_url(args)
    asyncio.run(upgrade(url))
    print(f"database {safe_url(url)} is at the latest schema")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamd", description=__doc__)
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser, required: bool = False) -> None:
        sp.add_argument("-c", "--config", required=required, help="streamd.yaml")

    sp = sub.add_parser("run", help="run the daemon (no config: the built-in demo)")
    with_config(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("check", help="validate a config and print each rule's plan")
    with_config(sp, required=True)
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("events", help="list event history")
    with_config(sp)
    sp.add_argument("--db", help="database URL (overrides the config)")
    sp.add_argument("--camera")
    sp.add_argument("--rule")
    sp.add_argument("--since", help="ISO time, epoch, or a span ago (15m, 2h, 1d)")
    sp.add_argument("--until")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_events)

    sp = sub.add_parser("search", help="find moments in the cameras' token windows")
    with_config(sp)
    sp.add_argument("text", help='what to look for, e.g. "a person carrying a bag"')
    sp.add_argument("--camera")
    sp.add_argument("--since", help="ISO time, epoch, or a span ago (15m, 2h, 1d)")
    sp.add_argument("--until")
    sp.add_argument("--limit", type=int, default=10)
    sp.add_argument("--min-score", type=float, help="drop moments scoring below this")
    sp.add_argument(
        "--offline",
        action="store_true",
        help="search the persisted window even if a daemon answers at api.listen",
    )
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_search)

    sp = sub.add_parser("db", help="database maintenance")
    dbsub = sp.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="apply Alembic migrations")
    with_config(up)
    up.add_argument("--db", help="database URL (overrides the config)")
    up.set_defaults(func=cmd_db)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        rc: int = args.func(args)
    except (ConfigError, RuleCompileError, QueryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StreamdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
