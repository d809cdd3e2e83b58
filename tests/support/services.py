"""Private Mosquitto and PostgreSQL instances for fault drills, started and stopped by the test.

The shared services (127.0.0.1:1883, 127.0.0.1:5432) are never stopped or reconfigured: a drill
that takes a service away does it to one of these, on a free loopback port in a temp directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


class ServiceUnavailable(Exception):
    """The binaries a private service needs are not installed here (the test skips)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class PrivateMosquitto:
    """A Mosquitto of the test's own, persistent across restarts (sessions survive a stop)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise ServiceUnavailable("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.port = free_port()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "mosquitto")
        self.conf.write_text(
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
            # As root Mosquitto would switch to user "mosquitto", who cannot write here.
            f"user {user}\n"
            # The drill's backlog is larger than the default in-flight/queue limits.
            "max_queued_messages 100000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.proc.poll() is not None:
                log = (self.dir / "mosquitto.log").read_text(errors="replace")
                raise RuntimeError(f"private mosquitto exited: {log[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"private mosquitto not listening within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        # SIGTERM: a clean exit saves the persistent sessions the drill's subscriber relies on.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise ServiceUnavailable("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class PrivatePostgres:
    """initdb + pg_ctl in a temp directory on a free port: a server the test may stop at will.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user (its
    directory is made under /tmp, which that user can reach; pytest's tmp_path is 0700 root).
    """

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ServiceUnavailable("running as root and no `postgres` user exists") from exc
            self.user = "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="streamd-pg-"))
        if self.user is not None:
            shutil.chown(self.dir, self.user, self.user)
        self.data = self.dir / "data"
        self.logfile = self.dir / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@{HOST}:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.dir
        )

    def init(self) -> None:
        out = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
            "-E", "UTF8",
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stderr[-2000:]}")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -c listen_addresses={HOST} -c unix_socket_directories={self.dir} "
            "-c fsync=off -c max_connections=50"
        )
        out = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", opts, "-w", "-t", "30",
            "start",
        )  # fmt: skip
        if out.returncode != 0:
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {out.stderr[-1000:]} {log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: roll back open transactions and disconnect everyone)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
