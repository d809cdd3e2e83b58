"""`streamd search "TEXT"`: ask the running daemon, else search the persisted window.

The daemon (its HTTP API at the config's `api.listen`) sees every token, including its
active segment; without a daemon the search runs here over the sealed segment files (see
`search.open_persisted` for why that is safe while a daemon writes them). `--offline` skips
the daemon. Bad queries raise QueryError, which the CLI turns into exit status 2.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import TYPE_CHECKING, Any

from streamd.errors import QueryError
from streamd.timeparse import parse_time
from streamd.window.query import UnknownCameraError, validate

if TYPE_CHECKING:
    import argparse

    from streamd.config import Config

__all__ = ["run_search"]

log = logging.getLogger(__name__)

_API_TIMEOUT_S = 30.0


def _epoch(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value).timestamp()
    except ValueError as exc:
        raise QueryError(f"{name}: {exc}") from exc


def _api_base(cfg: Config) -> str:
    host = cfg.api.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.api.port}"


def _from_daemon(cfg: Config, params: dict[str, Any]) -> dict[str, Any] | None:
    """The daemon's answer, or None when no daemon answers at the configured address."""
    base = _api_base(cfg)
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    request = urllib.request.Request(f"{base}/api/search?{query}")
    if cfg.api.token is not None:
        request.add_header("Authorization", f"Bearer {cfg.api.token.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=_API_TIMEOUT_S) as resp:
            result: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        if exc.code in (400, 404, 422):
            raise QueryError(str(detail)) from exc
        if exc.code == 401:
            raise QueryError(f"the daemon at {base} refused the API token: {detail}") from exc
        log.warning("the daemon at %s answered %d (%s); searching on disk", base, exc.code, detail)
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.info("no daemon answered at %s (%s); searching the persisted window", base, exc)
        return None
    for m in result.get("moments", []):
        if m.get("snapshot"):
            m["snapshot"] = base + m["snapshot"]
    result["source"] = f"daemon at {base}"
    return result


def _from_disk(
    cfg: Config,
    text: str,
    camera: str | None,
    since: float | None,
    until: float | None,
    limit: int,
    min_score: float | None,
) -> dict[str, Any]:
    from streamd.window.encoders import load_backend
    from streamd.window.query import result_json
    from streamd.window.search import open_persisted

    backend = load_backend(cfg.window)
    with open_persisted(cfg, backend, camera) as searcher:
        found = searcher.search(text, camera, since, until, limit, min_score)

        def snapshot(m: Any) -> str | None:
            path = searcher.snapshot_path(m.camera, m.frame_id) if m.camera else None
            return str(path) if path is not None else None

        result = result_json(found, snapshot)
    result["source"] = f"persisted window in {cfg.data_dir / 'window'}"
    return result


def _local(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print_table(result: dict[str, Any]) -> None:
    moments = result["moments"]
    cams = ", ".join(result["cameras"]) or "no camera with a window"
    print(
        f"{len(moments)} moment(s) for {result['query']!r} in {cams} "
        f"({result['took_ms']:.1f} ms, {result['source']})"
    )
    if not moments:
        return
    print(f"{'start':19}  {'end':8}  {'best':8}  {'camera':12} {'score':>5}  caption")
    for m in moments:
        print(
            f"{_local(m['start']):19}  {_local(m['end'])[11:]:8}  {_local(m['best_time'])[11:]:8}"
            f"  {m['camera']:12} {m['score']:5.3f}  {m['caption']}"
        )
        if m.get("snapshot"):
            print(f"{'':21}snapshot: {m['snapshot']}")


def run_search(args: argparse.Namespace, cfg: Config) -> int:
    since, until = _epoch(args.since, "--since"), _epoch(args.until, "--until")
    text = validate(args.text, since, until, args.limit)
    if args.camera is not None and args.camera not in cfg.cameras:
        known = ", ".join(sorted(cfg.cameras)) or "none"
        raise UnknownCameraError(f"unknown camera {args.camera!r} (configured: {known})")
    result = None
    if not args.offline and cfg.api.enabled:
        result = _from_daemon(
            cfg,
            {
                "q": text,
                "camera": args.camera,
                "since": since,
                "until": until,
                "limit": args.limit,
                "min_score": args.min_score,
            },
        )
    if result is None:
        result = _from_disk(cfg, text, args.camera, since, until, args.limit, args.min_score)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0
