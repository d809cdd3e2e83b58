"""Config validation and `streamd check`: every bad input is exit 2 with the problem named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamd.config import parse_config, redact_url
from streamd.errors import ConfigError

GOOD = """
database: {url: "sqlite:///x.db"}
cameras:
  lobby: {url: "rtsp://cam:secret@127.0.0.1:8554/lobby", fps: 2}
rules:
  - {name: unattended-bag, text: "alert when a bag is left unattended for 30 seconds",
     cameras: [lobby]}
  - {name: crowd, text: "more than 3 people for 10 s"}
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_good_config_parses_with_async_driver() -> None:
    cfg = parse_config(GOOD)
    assert cfg.database.url == "sqlite+aiosqlite:///x.db"
    assert cfg.cameras["lobby"].fps == 2
    assert [r.name for r in cfg.rules_for("lobby")] == ["unattended-bag", "crowd"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cameras:\n  a: {url: 'rtsp://h/x', colour: red}\n",
            "cfg.yaml:2: cameras.a.colour: unknown key",
        ),
        ("databse: {url: 'sqlite:///x'}\n", "cfg.yaml:1: databse: unknown key"),
        ("cameras:\n  a: {url: 'http://h/x'}\n", "rtsp:// or rtsps://"),
        ("cameras:\n  a: {url: 'rtsp://h:99999/x'}\n", "invalid port"),
        ("cameras:\n  a: {url: 'rtsp:///x'}\n", "no host"),
        ("cameras:\n  a: {}\n", "exactly one source"),
        ("cameras:\n  a: {url: 'rtsp://h/x', fps: 0}\n", "cameras.a.fps"),
        ("rules:\n  - {name: r, text: 'a bag', cameras: [nope]}\n", "unknown camera 'nope'"),
        ("rules:\n  - {name: 'Bad Name', text: 'a bag'}\n", "rules[0].name"),
        ("database: {url: 'mysql://x'}\n", "unsupported database"),
        ("mqtt: {topic_prefix: 'a/#'}\n", "invalid MQTT topic prefix"),
        ("api: {listen: 'nowhere'}\n", "host:port"),
        ("cameras: [1, 2]\n", "cameras"),
        ("- just a list\n", "top level must be a mapping"),
        ("cameras: {a: {url: 'rtsp://h/x'}\n", "invalid YAML"),
        ("cameras:\n  a: {url: 'rtsp://u:${NOT_SET_ANYWHERE}@h/x'}\n", "NOT_SET_ANYWHERE"),
    ],
)
def test_bad_config_names_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    assert expected in str(info.value)


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PW", "s3cret")
    monkeypatch.setenv("STREAMD_MQTT_PASSWORD", "mq-pw")
    cfg = parse_config("mqtt: {}\ncameras:\n  a: {url: 'rtsp://u:${CAM_PW}@h/x'}\n")
    assert cfg.cameras["a"].url == "rtsp://u:s3cret@h/x"
    assert cfg.mqtt is not None
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "mq-pw"
    assert "mq-pw" not in repr(cfg)


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert redact_url("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"


def test_check_prints_plans(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(GOOD)
    out = run_cli("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        "plan: backpack|handbag|suitcase left unattended (owner > 2 widths away) held for ≥ 30 s"
        in out.stdout
    )
    assert "plan: count(person) > 3 held for ≥ 10 s" in out.stdout
    # each rule's effective options and its IR
    assert "options: cooldown 30 s, clear 4 s, severity warning" in out.stdout
    assert '"kind":"unattended"' in out.stdout
    assert "secret" not in out.stdout  # the camera password is redacted
    assert "rtsp://cam:***@127.0.0.1:8554/lobby" in out.stdout


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("cameras:\n  a: {url: 'rtsp://h/x', bogus: 1}\n", "cameras.a.bogus: unknown key"),
        ("cameras:\n  a: {url: 'ftp://h/x'}\n", "rtsp://"),
        ("rules:\n  - {name: r, text: 'alert when a person is dancing'}\n", "'dancing'"),
    ],
)
def test_check_and_run_exit_2_on_bad_input(tmp_path: Path, body: str, expected: str) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(body)
    for cmd in ("check", "run"):
        out = run_cli(cmd, "-c", str(cfg), cwd=tmp_path)
        assert out.returncode == 2, (cmd, out.stdout, out.stderr)
        assert expected in out.stderr
    assert not (tmp_path / "streamd.db").exists()  # nothing was started


def test_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    out = run_cli("check", "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert out.returncode == 2
    assert "cannot read config" in out.stderr


def test_events_rejects_bad_time(tmp_path: Path) -> None:
    out = run_cli("events", "--db", f"sqlite:///{tmp_path / 'e.db'}", "--since", "yesterday-ish",
                  cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2
    assert "cannot read time 'yesterday-ish'" in out.stderr


def test_structured_rule_in_the_config_is_checked_and_printed(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "cameras: {lobby: {url: 'rtsp://127.0.0.1:8554/lobby'}}\n"
        "rules:\n"
        "  - name: left-backpack\n"
        "    ir: {root: {kind: held, seconds: 20, item: {kind: unattended, "
        "subject: {classes: [backpack]}}}}\n"
    )
    out = run_cli("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "plan: backpack left unattended (owner > 2 widths away) held for ≥ 20 s" in out.stdout
    bad = tmp_path / "b.yaml"
    bad.write_text(
        "rules:\n  - name: r\n    ir: {root: {kind: held, seconds: 20, item: {kind: nope}}}\n"
    )
    out = run_cli("check", "-c", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert "root.held.item" in out.stderr  # the bad key, by its path


def test_a_rule_only_a_vlm_can_judge_needs_a_verifier(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("rules:\n  - {name: smoke, text: smoke or fire}\n")
    out = run_cli("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert "needs a VLM verifier" in out.stderr
    cfg.write_text(
        "verify: {backend: openai, openai: {base_url: 'http://127.0.0.1:9/v1', model: m}}\n"
        "rules:\n  - {name: smoke, text: smoke or fire}\n"
    )
    out = run_cli("check", "-c", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert 'scene "smoke or fire"' in out.stdout
