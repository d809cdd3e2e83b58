"""Hostile and broken config files, secrets in messages, `check`'s source probe, read-only CLI.

Every bad input is exit 2 (or a ConfigError) with a message naming the problem and its line, and
no message ever carries a password or token from the file.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from alembic.script import ScriptDirectory

from streamd.config import parse_config, redact_text, redact_url
from streamd.errors import ConfigError
from streamd.events.db import alembic_config, upgrade

SECRET = "Hx7kq9Zw"  # a password that no message has any other reason to contain


def run_cli(*args: str, cwd: Path, limit_mb: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit_memory() -> None:
        if limit_mb is not None:
            size = limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return subprocess.run(
        [sys.executable, "-m", "streamd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=limit_memory,
    )


def _bomb(levels: int = 9) -> str:
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    prev = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


# ---------------------------------------------------------------------------------------------
# hostile structure


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cameras:\n  a: {demo: true}\n  a: {demo: true}\n",
            "cfg.yaml:3: duplicate key 'a' (first at line 2)",
        ),
        (
            "api: {listen: '127.0.0.1:1'}\nrules: []\napi: {listen: '127.0.0.1:2'}\n",
            "cfg.yaml:3: duplicate key 'api' (first at line 1)",
        ),
        (
            "cameras:\n  a: {demo: true, fps: 1, fps: 2}\n",
            "cfg.yaml:2: duplicate key 'fps' (first at line 2)",
        ),
        ("cameras: &c {a: *c}\n", "cfg.yaml:1: an alias refers to its own anchor"),
        ("a: &a [1, [2, *a]]\n", "an alias refers to its own anchor"),
        (_bomb(), "aliases expand this file beyond 100000 values"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "cfg.yaml:1: nested more than 40 levels deep"),
        ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 60)), "nested more than 40"),
        ("x: &x 1\n" + "".join(f"k{i}: *x\n" for i in range(300)), "more than 200 aliases"),
        ("cameras: {a: {url: 'rtsp://h/x'}\n", "cfg.yaml:2:1: invalid YAML"),
        ("a: !!python/object:os.system {}\n", "invalid YAML"),
    ],
)
def test_hostile_yaml_is_refused_with_its_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    assert expected in str(info.value)


def test_anchors_and_merge_keys_within_budget_still_work() -> None:
    cfg = parse_config("cameras:\n  a: &base {demo: true, fps: 2}\n  b: {<<: *base, fps: 3}\n")
    assert cfg.cameras["a"].fps == 2
    assert cfg.cameras["b"].fps == 3
    assert cfg.cameras["b"].demo


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("bomb", _bomb(10).encode(), "aliases expand this file beyond"),
        ("latin1", "cameras:\n  caf\xe9: {demo: true}\n".encode("latin-1"), "s.yaml:2: not UTF-8"),
        ("utf16", "cameras: {}\n".encode("utf-16"), "s.yaml:1: not UTF-8 text (byte 0xff"),
        ("deep", b"a: " + b"{b: " * 20000 + b"1" + b"}" * 20000, "nested more than 40"),
        ("huge", b"# " + b"x" * (2 * 1024 * 1024), "larger than 1048576 bytes"),
        ("recursive", b"cameras: &c\n  a: *c\n", "refers to its own anchor"),
    ],
)
def test_check_refuses_hostile_files_in_bounded_memory(
    tmp_path: Path, name: str, body: bytes, expected: str
) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(body)
    # 1.5 GiB of address space: the interpreter with pydantic needs a few hundred MiB, a YAML
    # bomb expanded by PyYAML and walked by pydantic needs several GiB.
    out = run_cli("check", "-c", str(path), cwd=tmp_path, limit_mb=1536)
    assert out.returncode == 2, (name, out.stdout, out.stderr[-2000:])
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert "config OK" not in out.stdout


def test_utf8_with_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes("\ufeffcameras:\n  a: {demo: true}\n".encode())
    out = run_cli("check", "-c", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "config OK: 1 camera(s), 0 rule(s)" in out.stdout


# ---------------------------------------------------------------------------------------------
# secrets never appear in a message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"database: {{url: 'postgres:/u:{SECRET}@db/x'}}\n", "not a database URL"),
        (f"database: {{url: 'u:{SECRET}@db/x'}}\n", "not a database URL"),
        (f"database: {{url: 'postgresql://u:{SECRET}@h:port/x'}}\n", "cannot parse database URL"),
        (f"database: {{url: 'mysql://u:{SECRET}@h/x'}}\n", "unsupported database 'mysql'"),
        (f"cameras: {{a: {{webrtc: {{whep: 'ftp://u:{SECRET}@h/w'}}}}}}\n", "http:// or https://"),
        (f"cameras: {{a: {{webrtc: {{whep: 'ftp://h/w?token={SECRET}'}}}}}}\n", "http://"),
        (f"cameras: {{a: {{webrtc: {{whep: 'https://u:ab#{SECRET}@h/w'}}}}}}\n", "unencoded '#'"),
        (f"cameras: {{a: {{url: 'rtsp://admin:{SECRET}#tail@h/x'}}}}\n", "unencoded '#'"),
        (f"cameras: {{a: {{url: 'rtsp://admin:{SECRET}/tail@h/x'}}}}\n", "unencoded '/'"),
        (f"cameras: {{a: {{url: 'rtsp://admin:{SECRET}?tail@h/x'}}}}\n", "unencoded '?'"),
        (f"cameras: {{a: {{url: 'http://admin:{SECRET}@h/x'}}}}\n", "rtsp:// or rtsps://"),
        (f"cameras: {{a: {{url: 'rtsp://admin:{SECRET}@h:99999/x'}}}}\n", "invalid port"),
        (f"cameras:\n  a: {{url: 'rtsp://u:{SECRET}@h/x'\n  b: [\n", "invalid YAML"),
        (f"mqtt: {{password: {SECRET}, port: 0}}\n", "mqtt.port"),
        (f"api: {{token: {SECRET}, listen: nowhere}}\n", "host:port"),
    ],
)
def test_no_secret_in_any_config_error(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    message = str(info.value)
    assert expected in message
    assert SECRET not in message
    assert "tail" not in message  # nor the part of a password after an unencoded character


def test_no_secret_from_the_environment_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_URL", f"postgresql://u:{SECRET}@h:port/x")
    with pytest.raises(ConfigError) as info:
        parse_config("database: {url: '${DB_URL}'}\n", "cfg.yaml")
    assert "cannot parse database URL" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1"),
        ("rtsp://10.0.0.5/s1", "rtsp://10.0.0.5/s1"),
        ("rtsp://admin:pa#ss/w?d@h/s", "rtsp://admin:***@h/s"),
        ("https://h/whep?src=gate&token=abc123", "https://h/whep?src=gate&token=***"),
        ("postgresql+asyncpg://u:p%40ss@db:5432/x", "postgresql+asyncpg://u:***@db:5432/x"),
        ("rtsp://h/x?e=a@b", "rtsp://h/x?e=a@b"),
    ],
)
def test_redact_url(url: str, masked: str) -> None:
    assert redact_url(url) == masked


def test_redact_text_masks_every_url_in_a_message() -> None:
    text = "cannot open 'rtsp://a:b1c2@h/x' nor rtsp://u:pw#x@h2/y (timeout)"
    assert redact_text(text) == "cannot open 'rtsp://a:***@h/x' nor rtsp://u:***@h2/y (timeout)"


def test_check_output_never_holds_a_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"database: {{url: 'postgresql://u:{SECRET}@127.0.0.1/x'}}\n"
        f"mqtt: {{password: {SECRET}x}}\n"
        f"api: {{token: {SECRET}y}}\n"
        "cameras:\n"
        f"  a: {{url: 'rtsp://u:{SECRET}z@127.0.0.1/x'}}\n"
        f"  b: {{webrtc: {{whep: 'https://u:{SECRET}w@127.0.0.1/w?token={SECRET}t'}}}}\n"
        f"rules:\n  - {{name: r, text: 'alert when a person is dancing {SECRET}'}}\n"
    )
    out = run_cli("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert "'dancing'" in out.stderr  # the rule error is reported...
    assert SECRET not in out.stdout + out.stderr  # ...without any secret, even the rule's own
    assert "camera a: rtsp://u:***@127.0.0.1/x" in out.stdout


# ---------------------------------------------------------------------------------------------
# `check` looks at file sources and says OK only when everything is


def _write_clip(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 5)
        for i in range(5):
            image = np.full((48, 64, 3), i * 40, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


@pytest.mark.parametrize(
    ("make", "status", "expected"),
    [
        ("video", 0, "config OK: 1 camera(s), 1 rule(s)"),
        ("missing", 2, "cameras.a.file: file clip.mp4 does not exist"),
        ("text", 2, "cameras.a.file: file clip.mp4 is not a video FFmpeg can read"),
        ("empty", 2, "cameras.a.file: file clip.mp4 is not a video FFmpeg can read"),
        ("directory", 2, "cameras.a.file: clip.mp4 is not a file"),
        ("audio", 2, "cameras.a.file: file clip.mp4 has no video stream"),
    ],
)
def test_check_probes_file_sources(tmp_path: Path, make: str, status: int, expected: str) -> None:
    clip = tmp_path / "clip.mp4"
    if make == "video":
        _write_clip(clip)
    elif make == "text":
        clip.write_text("not a video at all\n" * 100)
    elif make == "empty":
        clip.touch()
    elif make == "directory":
        clip.mkdir()
    elif make == "audio":
        with av.open(str(clip), "w") as out:
            stream = out.add_stream("aac", rate=8000)
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = 8000
            for packet in (*stream.encode(frame), *stream.encode(None)):
                out.mux(packet)
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "cameras:\n  a: {file: clip.mp4}\nrules:\n  - {name: r, text: 'a person for 3 s'}\n"
    )
    out = run_cli("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == status, out.stderr
    assert expected in (out.stdout if status == 0 else out.stderr)
    assert ("config OK" in out.stdout) == (status == 0)


def test_check_says_ok_only_when_the_rules_compile(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "cameras:\n  a: {demo: true}\nrules:\n"
        "  - {name: good, text: 'a person for 3 s'}\n"
        "  - {name: bad, text: 'alert when a person is dancing'}\n"
    )
    out = run_cli("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert "config OK" not in out.stdout
    assert "rules[1] (bad)" in out.stderr
    assert "config has 1 error(s)" in out.stderr


@pytest.mark.parametrize(
    ("api", "status", "expected"),
    [
        ("{listen: '0.0.0.0:8080'}", 0, "warning: the HTTP API listens on 0.0.0.0:8080"),
        ("{listen: '[::]:8080'}", 0, "reachable beyond this machine"),
        ("{listen: '0.0.0.0:8080', token: abcdef}", 0, ""),
        ("{listen: '127.0.0.1:8080'}", 0, ""),
        ("{listen: 'localhost:8080'}", 0, ""),
        (
            "{listen: '0.0.0.0:8080', require_token_off_loopback: true}",
            2,
            "api: Value error, listen 0.0.0.0:8080 is reachable beyond this machine but no token",
        ),
        ("{listen: '0.0.0.0:8080', require_token_off_loopback: true, token: abcdef}", 0, ""),
        ("{listen: '10.1.2.3:8080', require_token_off_loopback: true, enabled: false}", 0, ""),
    ],
)
def test_api_beyond_loopback_without_token(
    tmp_path: Path, api: str, status: int, expected: str
) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"api: {api}\ncameras:\n  a: {{demo: true}}\n")
    out = run_cli("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == status, out.stderr
    if expected:
        assert expected in out.stderr
    else:
        assert "warning" not in out.stderr


# ---------------------------------------------------------------------------------------------
# read-only commands create nothing


def test_events_never_creates_a_database(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "e.db"
    out = run_cli("events", "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"no database at sqlite+aiosqlite:///{db}" in out.stderr
    assert "streamd db upgrade" in out.stderr
    assert not db.exists()
    assert not db.parent.exists()


def test_events_on_an_empty_or_outdated_database_migrates_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    out = run_cli("events", "--db", f"sqlite:///{empty}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "is at schema none (no streamd tables)" in out.stderr
    assert empty.stat().st_size == 0

    old = tmp_path / "old.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{old}", "0001"))
    out = run_cli("events", "--db", f"sqlite:///{old}", cwd=tmp_path)
    assert out.returncode == 2
    head = ScriptDirectory.from_config(alembic_config(f"sqlite:///{old}")).get_current_head()
    assert head is not None
    assert head > "0001"
    assert f"is at schema 0001, this streamd reads {head}: run `streamd db upgrade` first" in (
        out.stderr
    )
    assert run_cli("db", "upgrade", "--db", f"sqlite:///{old}", cwd=tmp_path).returncode == 0
    out = run_cli("events", "--db", f"sqlite:///{old}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "no events" in out.stdout


def test_events_on_an_empty_postgres_database_creates_no_table(pg_url: str, tmp_path: Path) -> None:
    import asyncpg

    out = run_cli("events", "--db", pg_url, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "is at schema none" in out.stderr

    async def tables() -> list[str]:
        conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""), timeout=5)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        finally:
            await conn.close()
        return [r["tablename"] for r in rows]

    assert asyncio.run(tables()) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--since", "1e400"], "--since: time '1e400' is not a finite number of seconds"),
        (["--since=-Infinity"], "not a finite number"),
        (["--since", "NaN"], "not a finite number"),
        (["--until", "99999999999999"], "--until: time '99999999999999' is out of range"),
        (["--since", "99999999999999999d"], "out of range (years 1 to 9999)"),
        (["--since", "1h", "--until", "2h"], "--since is after --until"),
        (["--limit", "0"], "must be between 1 and 100000"),
        (["--limit", "10000000000000000000000"], "must be between 1 and 100000"),
        (["--db", "mysql://u:pw@h/x"], "--db: Value error, unsupported database 'mysql'"),
        (["--db", f"u:{SECRET}@h/x"], "--db: Value error, not a database URL"),
    ],
)
def test_events_bad_arguments_are_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    db = [] if args[0] == "--db" else ["--db", f"sqlite:///{tmp_path / 'e.db'}"]
    out = run_cli("events", *db, *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert SECRET not in out.stderr
    assert not (tmp_path / "e.db").exists()


def test_detector_providers_are_checked_by_name() -> None:
    cfg = parse_config(
        "model: {detector: {providers: [CUDAExecutionProvider, CPUExecutionProvider]}}\n",
        "cfg.yaml",
    )
    assert cfg.model.detector.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ConfigError) as info:
        parse_config("model: {detector: {providers: [cuda]}}\n", "cfg.yaml")
    assert "'cuda' is not an ONNX Runtime execution provider name" in str(info.value)
    assert "model.detector.providers" in str(info.value)


def test_detector_weak_threshold_must_be_below_the_threshold() -> None:
    cfg = parse_config("model: {detector: {weak_threshold: null}}\n", "cfg.yaml")
    assert cfg.model.detector.weak_threshold is None
    assert parse_config("rules: []\n", "cfg.yaml").model.detector.weak_threshold == 0.1
    with pytest.raises(ConfigError) as info:
        parse_config(
            "model:\n  detector: {score_threshold: 0.3, weak_threshold: 0.4}\n", "cfg.yaml"
        )
    assert "weak_threshold (0.4) must be below score_threshold (0.3)" in str(info.value)
    assert "cfg.yaml:2" in str(info.value)
