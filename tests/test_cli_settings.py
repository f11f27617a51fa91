"""Settings checked once, at start, through the real CLI: a broker URL dtf cannot use, or no
broker at all, is one line on stderr and exit 2 for every command, with no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dtf.errors import DtfError
from dtf.settings import Settings, check_broker_url

from .conftest import REPO, dtf_cmd, dtf_env

SUITE = str(REPO / "examples" / "smoke.yaml")
COMMANDS = {
    "submit": ["submit", SUITE],
    "status": ["status", "some-run"],
    "results": ["results", "some-run"],
    "report": ["report", "some-run"],
    "workers": ["workers"],
    "runs": ["runs"],
    "flower": ["flower"],
    "dashboard": ["dashboard"],
    "worker": ["worker"],
    "coordinator": ["coordinator", "--db", "never.duckdb"],
}


def run_cli(tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dtf_cmd(*args), env=dtf_env(DTF_STATE_DIR=str(tmp_path / "state"), **env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("url", ["http://broker.example:80/", "not-a-url"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unusable_broker_url_is_one_line_and_exit_2(tmp_path: Path, command: str, url: str) -> None:
    proc = run_cli(tmp_path, [*COMMANDS[command], "--broker", url])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert url in lines[0] and "broker URL" in lines[0]
    assert not (tmp_path / "never.duckdb").exists()


def test_the_environment_variable_is_checked_the_same_way(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, ["workers"], DTF_BROKER_URL="amqp://guest@localhost//")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "unsupported scheme 'amqp'" in proc.stderr


@pytest.mark.parametrize("command", ["status", "results", "report", "workers", "runs"])
def test_no_broker_configured_is_said_at_once(tmp_path: Path, command: str) -> None:
    """Before: each asked the in-process memory:// broker and gave up after 15 s (report 120 s)."""
    proc = run_cli(tmp_path, COMMANDS[command])
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no broker configured: set DTF_BROKER_URL or --broker"), proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:secret@redis.internal:6380/2", "redis://h",
                                 "memory://", "sentinel://s1:26379;sentinel://s2:26379"])
def test_usable_urls_pass(url: str) -> None:
    check_broker_url(url)
    assert Settings.from_env({}, broker_url=url).broker_url == url


@pytest.mark.parametrize(("url", "says"), [
    ("redis://h:port/0", "Port could not be cast"),
    ("redis://h/zero", "database number"),
    ("redis://:hunter2@h;http://x", "unsupported scheme 'http'"),
])
def test_unusable_urls_say_why_without_the_password(url: str, says: str) -> None:
    with pytest.raises(DtfError, match=says) as info:
        Settings.from_env({"DTF_BROKER_URL": url})
    assert "hunter2" not in str(info.value)


def test_the_spool_lives_in_the_state_directory() -> None:
    assert Settings.from_env({"XDG_STATE_HOME": "/xdg"}).spool_dir == "/xdg/dtf/spool"
    assert Settings.from_env({"DTF_STATE_DIR": "/st"}).spool_dir == "/st/spool"
    assert Settings.from_env({"DTF_STATE_DIR": "/st", "DTF_SPOOL_DIR": "/sp"}).spool_dir == "/sp"
