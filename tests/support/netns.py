"""Run a command in a private network namespace with only loopback, as WebRTC tests need.

aioice skips exactly 127.0.0.1 when it gathers host candidates, so two aiortc peers on one machine
find no candidate pair on plain loopback. A fresh namespace (`unshare -n`, root) with lo up and
127.0.0.2/8 added gives every peer a usable address, and nothing can leave the machine. Every
process of a scenario (daemon, publishers, browser, servers) must run inside the same namespace,
so the test runs one script there and reads its JSON report.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence

ADDR = "127.0.0.2"
_SETUP = f'ip link set lo up && ip addr add {ADDR}/8 dev lo && exec "$@"'


@functools.cache
def netns_available() -> tuple[bool, str]:
    """(True, "") when `unshare -n` works here, else (False, a reason for pytest.skip)."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found (util-linux / iproute2): WebRTC tests need a netns"
    if os.geteuid() != 0:
        return False, "WebRTC tests need root for `unshare -n` (a private loopback namespace)"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", _SETUP, "netns", "true"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if probe.returncode != 0:
        return False, f"`unshare -n` failed here: {probe.stderr.strip()[:200]}"
    return True, ""


def run_in_netns(
    argv: Sequence[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside a new network namespace (lo up, 127.0.0.2/8 added)."""
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", _SETUP, "netns", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
