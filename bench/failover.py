"""Failover time of camera leases: kill -9 one of two real daemons, time until its cameras are
analysed by the other, for each lease setting.

    python bench/failover.py                      # TTL/renewal 6:2 and 15:5 (the default)
    python bench/failover.py --settings 15:5 --cameras 4

Needs PostgreSQL on 127.0.0.1:5432 (a private database per setting, dropped afterwards) and
Mosquitto on 127.0.0.1:1883. Prints one row per setting with the measured time against the
bound the design gives (TTL + one renewal period): the ratio is the share of that bound used.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.daemon import StreamdProcess, free_port, wait_for  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _config(tmp: Path, name: str, db: str, cams: list[str], ttl: float, renew: float) -> Any:
    return {
        "instance": {"name": name},
        "cluster": {"lease_ttl_s": ttl, "renew_s": renew},
        "data_dir": str(tmp / name / "data"),
        "database": {"url": db},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "topic_prefix": f"bench-{tmp.name}",
                 "discovery": False},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "window": {"enabled": False},
        "model": {"detector": {"path": str(tmp / "none.onnx"), "url": None}},
        "cameras": {c: {"demo": True, "fps": 2} for c in cams},
        "rules": [{"name": "moving", "text": "there is motion", "cooldown_s": 0}],
    }  # fmt: skip


def _analysing(api: str) -> set[str]:
    try:
        cams = httpx.get(f"{api}/api/cameras", timeout=3).json()
    except (httpx.HTTPError, ValueError):
        return set()
    return {c for c, v in cams.items() if v["local"] and (v["analysed_frames"] or 0) > 0}


def measure(ttl: float, renew: float, n_cams: int, start_timeout: float) -> dict[str, float]:
    cams = [f"cam{i}" for i in range(n_cams)]
    dbname = f"streamd_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{dbname}"'))
    db = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{dbname}"
    procs: list[StreamdProcess] = []
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            apis = {}
            for name in ("a", "b"):
                (tmp / name).mkdir()
                cfg = _config(tmp, name, db, cams, ttl, renew)
                apis[name] = f"http://{cfg['api']['listen']}"
                procs.append(StreamdProcess(cfg, tmp / name).start())
            t0 = time.monotonic()
            half = n_cams // 2

            def balanced() -> bool:
                return all(len(_analysing(api)) == half for api in apis.values())

            if not wait_for(balanced, start_timeout, interval=1.0):
                raise RuntimeError("instances did not settle:\n" + procs[1].log()[-2000:])
            settled = time.monotonic() - t0
            victim = _analysing(apis["b"])
            t_kill = time.monotonic()
            procs[1].kill()
            if not wait_for(lambda: victim <= _analysing(apis["a"]), 120, interval=0.1):
                raise RuntimeError("cameras not taken over:\n" + procs[0].log()[-2000:])
            failover = time.monotonic() - t_kill
            return {"settle_s": settled, "failover_s": failover}
    finally:
        for p in procs:
            if p.proc is not None and p.proc.poll() is None:
                p.terminate(timeout=15)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="6:2,15:5", help="TTL:renewal pairs in seconds")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--start-timeout", type=float, default=420.0)
    args = ap.parse_args()
    rows = []
    for pair in args.settings.split(","):
        ttl, renew = (float(x) for x in pair.split(":"))
        got = measure(ttl, renew, args.cameras, args.start_timeout)
        rows.append((ttl, renew, got))
        print(f"  measured TTL {ttl:g} s / renew {renew:g} s: failover {got['failover_s']:.1f} s",
              flush=True)  # fmt: skip
    print(f"\n{'TTL s':>6} {'renew s':>8} {'settle s':>9} {'failover s':>11} {'bound s':>8} "
          f"{'ratio':>6}")  # fmt: skip
    for ttl, renew, got in rows:
        bound = ttl + renew
        print(f"{ttl:>6g} {renew:>8g} {got['settle_s']:>9.1f} {got['failover_s']:>11.1f} "
              f"{bound:>8g} {got['failover_s'] / bound:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
