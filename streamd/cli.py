"""The `streamd` command: run, check, events, search, db upgrade.

Exit codes: 0 ok, 1 runtime failure, 2 bad input (config, rule, arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from streamd.config import Config, SecretScrubber, load_config, redact_url
from streamd.config.secrets import secrets_in
from streamd.errors import (
    ConfigError,
    QueryError,
    RuleCompileError,
    SchemaMissing,
    StreamdError,
)

log = logging.getLogger("streamd")


class _Redact(logging.Filter):
    """Last line of defence: scrub URL passwords, and every secret of the loaded config, from
    each log message."""

    def __init__(self) -> None:
        super().__init__()
        self.scrub = SecretScrubber()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = self.scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


_REDACT = _Redact()


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_REDACT)
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

        cfg = demo_config()
    else:
        cfg = load_config(Path(args.config))
    # From here on no log line carries one of this config's secrets.
    _REDACT.scrub.add(secrets_in(cfg.model_dump(mode="python", context=None)))
    _REDACT.scrub.add(_secret_values(cfg))
    return cfg


def _secret_values(cfg: Config) -> list[str]:
    """The SecretStr values model_dump masks: tokens and passwords from the environment."""
    values = [cfg.api.token, cfg.mqtt.password if cfg.mqtt else None]
    values += [s.credential for s in cfg.webrtc.ice_servers]
    for cam in cfg.cameras.values():
        if cam.webrtc is not None and not isinstance(cam.webrtc, str):
            values.append(cam.webrtc.token)
    return [v.get_secret_value() for v in values if v is not None]


def cmd_check(args: argparse.Namespace) -> int:
    from streamd.config.sources import check_sources
    from streamd.rules.compiler import compile_config_rule

    cfg = _config(args)
    scrub = _REDACT.scrub
    errors = check_sources(cfg)
    lines = []
    for name, cam in cfg.cameras.items():
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
        lines.append(
            f"  camera {name}: {src} at {cam.fps:g} fps, window {cam.window_tokens} tokens"
        )
    for i, rule in enumerate(cfg.rules):
        try:
            plan = compile_config_rule(cfg, rule)
        except RuleCompileError as exc:
            errors.append(f"rules[{i}] ({rule.name}): {exc}")
            continue
        cams = ", ".join(rule.cameras) if rule.cameras else "all cameras"
        lines.append(f"  rule {rule.name} [{cams}]: {rule.text!r}")
        plan_lines = plan.explain()
        lines.append(f"    plan: {plan_lines[0]}")
        lines += [f"      {line}" for line in plan_lines[1:]]
        lines.append(
            f"    options: cooldown {rule.cooldown_s:g} s, clear {rule.clear_s:g} s, "
            f"severity {rule.severity}"
        )
        lines.append(f"    ir: {json.dumps(plan.ir_json(), separators=(',', ':'))}")
    if warning := cfg.api.exposure_warning():
        print(f"warning: {warning}", file=sys.stderr)
    for line in lines:
        print(scrub(line))
    for error in errors:
        print(f"error: {scrub(error)}", file=sys.stderr)
    if errors:
        print(f"config has {len(errors)} error(s)", file=sys.stderr)
        return 2
    print(f"config OK: {len(cfg.cameras)} camera(s), {len(cfg.rules)} rule(s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from streamd.daemon import Daemon, compile_plans

    cfg = _config(args)
    if args.config is None:
        log.info("no config given: running the built-in demo (generated scene, SQLite, one rule)")
    compile_plans(cfg)  # a rule that does not compile stops start-up with exit 2
    try:
        import uvloop

        uvloop.run(Daemon(cfg, Path(args.config) if args.config else None).run())
    except StreamdError as exc:
        log.error("%s", exc)
        return 1
    finally:
        # The loop and its worker threads are down: the stuck-shutdown stack dump armed at
        # SIGTERM (daemon.py) has nothing left to report.
        faulthandler.cancel_dump_traceback_later()
    return 0


def _fmt_time(epoch: float | None) -> str:

    if epoch is None:
        return "active"
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _db_url(args: argparse.Namespace) -> str:
    if getattr(args, "db", None):
        from pydantic import ValidationError

        from streamd.config import DatabaseConfig

        try:
            return DatabaseConfig(url=args.db).url
        except ValidationError as exc:
            why = "; ".join(e["msg"] for e in exc.errors(include_input=False))
            raise ConfigError(f"--db: {why}") from None
    return _config(args).database.url


def _time_arg(value: str | None, option: str) -> datetime | None:
    from streamd.timeparse import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def cmd_events(args: argparse.Namespace) -> int:
    from streamd.events.db import make_engine, require_current
    from streamd.events.store import EventStore

    since, until = _time_arg(args.since, "--since"), _time_arg(args.until, "--until")
    if since and until and since > until:
        raise ConfigError("--since is after --until")
    url = _db_url(args)

    async def go() -> list[dict[str, Any]]:
        # Read-only: a wrong path or an old database is reported, never created or migrated.
        await require_current(url)
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


def _limit(most: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
        if not 1 <= n <= most:
            raise argparse.ArgumentTypeError(f"must be between 1 and {most}, got {n}")
        return n

    return parse


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
    sp.add_argument("--limit", type=_limit(100_000), default=50, help="at most 100000")
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
    except (ConfigError, RuleCompileError, QueryError, SchemaMissing) as exc:
        print(f"error: {_REDACT.scrub(str(exc))}", file=sys.stderr)
        return 2
    except StreamdError as exc:
        print(f"error: {_REDACT.scrub(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
