"""Rendering worker deployment files (dtf.deploy): every platform renders files that parse
and lint clean, name only files that exist, never hold a secret, and keep hostile values
quoted; the POSIX start and stop scripts behave as promised when run."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import need_binary
from dtf.deploy import (
    DEFAULT_PREFIX,
    ENV_VAR_NAMES,
    ENV_VARS,
    PLATFORM_FILES,
    PLATFORMS,
    STOP_TIMEOUT_S,
    deploy_options,
    load_host_profile,
    profiles_root,
    quote_xml,
    read_env_file,
    render_deploy,
    render_options,
    render_profile,
    split_broker_url,
    templates_root,
)
from dtf.errors import DtfError

SECRET = "hunter2-Sup3rSecret"
HOSTILE_NAME = 'x"; rm -rf / #'
BROKER_WITH_PASSWORD = f"redis://alice:{SECRET}@cache.example:6379/0"
CLI_ENV_NAMES = {
    "DTF_BROKER_URL", "DTF_SENTINELS", "DTF_SENTINEL_MASTER", "DTF_REDIS_PASSWORD",
    "DTF_REDIS_PASSWORD_FILE", "DTF_REDIS_USERNAME", "DTF_DB", "DTF_WORKER_NAME", "DTF_TAGS",
    "DTF_QUEUES", "DTF_CONCURRENCY", "DTF_PROFILE", "DTF_LOG_LEVEL", "DTF_SPOOL_DIR",
    "DTF_FLOWER_BASIC_AUTH", "DTF_FLOWER_BASIC_AUTH_FILE",
}
PS_QUOTES = "'\u2018\u2019\u201a\u201b"
PS_LITERAL = re.compile(f"[{PS_QUOTES}]((?:[^{PS_QUOTES}]|[{PS_QUOTES}]{{2}})*)[{PS_QUOTES}]")


def render(platform: str, out_dir: Path, **options: Any) -> dict[str, Path]:
    """Render with sensible defaults; returns the files by name."""
    options.setdefault("broker", "redis://cache.example:6379/0")
    options.setdefault("name", "box-01")
    options.setdefault("tags", ["cuda.sm90", "mem>=80g"])
    options.setdefault("queues", ["dtf.cuda", "dtf.cpu"])
    return {path.name: path for path in render_deploy(platform, out_dir, **options)}


@pytest.fixture
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An install folder whose path passes prefix validation (no brackets from test ids)."""
    return tmp_path_factory.mktemp("prefix")


def shellcheck(*paths: Path) -> None:
    binary = need_binary("shellcheck")
    done = subprocess.run([binary, "--norc", *map(str, paths)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def bash_syntax_ok(path: Path) -> None:
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- every platform --------------------------------------------------------------------


@pytest.mark.parametrize("gpu", [None, "cuda", "rocm"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_platform_renders_its_files(platform: str, gpu: str | None, tmp_path: Path) -> None:
    files = render(platform, tmp_path, gpu=gpu)
    assert list(files) == [name for name, _ in PLATFORM_FILES[platform]]
    for path in files.values():
        assert path.read_text(encoding="utf-8").strip()


def test_an_unknown_platform_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DtfError, match=r"unknown platform 'amiga' \(expected one of linux, macos, windows"):
        render("amiga", tmp_path)


def test_env_vars_hold_every_variable_of_the_cli_contract() -> None:
    names = [var.name for var in ENV_VARS]
    assert len(names) == len(set(names)) and set(names) == ENV_VAR_NAMES
    assert CLI_ENV_NAMES <= ENV_VAR_NAMES
    secrets = {var.name for var in ENV_VARS if var.secret}
    assert {"DTF_REDIS_PASSWORD", "DTF_FLOWER_BASIC_AUTH"} <= secrets
    assert all(f"{name}_FILE" in ENV_VAR_NAMES for name in secrets)
    assert all(var.description.endswith(".") for var in ENV_VARS)


def test_every_variable_the_cli_and_settings_read_is_listed_in_env_vars() -> None:
    package = Path(__file__).resolve().parent.parent / "dtf"
    for module in (*sorted((package / "cli").glob("*.py")), package / "settings.py"):
        used = set(re.findall(r"\bDTF_[A-Z0-9_]+", module.read_text(encoding="utf-8")))
        assert used <= ENV_VAR_NAMES, (module.name, sorted(used - ENV_VAR_NAMES))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rendered_files_use_only_known_dtf_variables(platform: str, tmp_path: Path) -> None:
    for path in render(platform, tmp_path, gpu="cuda", broker=BROKER_WITH_PASSWORD).values():
        used = set(re.findall(r"\bDTF_[A-Z0-9_]+", path.read_text(encoding="utf-8")))
        assert used <= ENV_VAR_NAMES, (path.name, used - ENV_VAR_NAMES)


# --- shell -----------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["linux", "macos"])
def test_generated_shell_passes_bash_n(platform: str, tmp_path: Path) -> None:
    files = render(platform, tmp_path, name=HOSTILE_NAME, broker=BROKER_WITH_PASSWORD)
    for name, path in files.items():
        if name.endswith((".sh", ".env")):
            bash_syntax_ok(path)


@pytest.mark.parametrize("gpu", [None, "cuda"])
@pytest.mark.parametrize("platform", ["linux", "macos"])
def test_generated_shell_passes_shellcheck_with_no_warnings(platform: str, gpu: str | None, tmp_path: Path) -> None:
    files = render(platform, tmp_path, name=HOSTILE_NAME, broker=BROKER_WITH_PASSWORD, gpu=gpu)
    shellcheck(*(path for name, path in files.items() if name.endswith((".sh", ".env"))))


def test_scripts_are_executable(tmp_path: Path) -> None:
    for name, path in render("linux", tmp_path).items():
        assert bool(path.stat().st_mode & 0o111) == name.endswith(".sh")


def test_install_scripts_handle_every_package_manager(tmp_path: Path) -> None:
    text = render("linux", tmp_path)["install.sh"].read_text()
    for manager in ("apt-get", "dnf", "yum", "zypper", "apk"):
        assert f"command -v {manager}" in text
    assert "-m venv" in text and "pip install" in text


def test_macos_install_falls_back_to_homebrew_python(tmp_path: Path) -> None:
    text = render("macos", tmp_path)["install.sh"].read_text()
    assert "install python@3.12" in text and "/opt/homebrew/bin/brew" in text


def test_install_scripts_name_only_files_that_are_rendered_beside_them(tmp_path: Path) -> None:
    for platform in ("linux", "macos"):
        files = render(platform, tmp_path / platform)
        referenced = set(re.findall(r'"\$HERE/([^"/]+)"', files["install.sh"].read_text()))
        assert referenced and referenced <= set(files), referenced - set(files)
    windows = render("windows", tmp_path / "windows")
    copied = re.search(r"foreach \(\$file in @\(([^)]*)\)\)", windows["install.ps1"].read_text())
    assert copied is not None
    assert set(PS_LITERAL.findall(copied.group(1))) <= set(windows)
    assert '"%~dp0start-worker.ps1"' in windows["start-worker.bat"].read_text()


# --- env file --------------------------------------------------------------------------


def test_env_file_holds_the_given_options(tmp_path: Path) -> None:
    files = render("linux", tmp_path, concurrency=2, profile="benchmark", sentinels=["s1:26379", "s2:26379"])
    env = read_env_file(files["worker.env"])
    assert env == {
        "DTF_BROKER_URL": "redis://cache.example:6379/0",
        "DTF_SENTINELS": "s1:26379,s2:26379",
        "DTF_SENTINEL_MASTER": "mymaster",
        "DTF_WORKER_NAME": "box-01",
        "DTF_TAGS": "cuda.sm90,mem>=80g",
        "DTF_QUEUES": "dtf.cuda,dtf.cpu",
        "DTF_CONCURRENCY": "2",
        "DTF_PROFILE": "benchmark",
        "DTF_SPOOL_DIR": "/opt/dtf/spool",
        "DTF_SIGNING_KEY_FILE": "/opt/dtf/secrets/signing-key",  # a broker on the network: signed
    }


def test_env_file_leaves_out_options_not_given(tmp_path: Path) -> None:
    env = read_env_file(render("linux", tmp_path, broker=None, name=None, tags=[], queues=[])["worker.env"])
    assert env == {"DTF_SPOOL_DIR": "/opt/dtf/spool"}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=40))
def test_any_printable_name_round_trips_through_every_file_format(tmp_path: Path, name: str) -> None:
    try:
        deploy_options("linux", broker=None, name=name, tags=())
    except DtfError:
        return  # control characters and the like are refused, which is fine
    linux = render("linux", tmp_path / "linux", name=name)
    assert read_env_file(linux["worker.env"])["DTF_WORKER_NAME"] == name
    windows = render("windows", tmp_path / "windows", name=name)
    assert ps_assignment(windows["start-worker.ps1"].read_text(), "DTF_WORKER_NAME") == name
    compose = yaml.safe_load(render("docker", tmp_path / "docker", name=name)["docker-compose.worker.yml"].read_text())
    assert compose["services"]["worker"]["environment"]["DTF_WORKER_NAME"].replace("$$", "$") == name
    k8s = yaml.safe_load(render("kubernetes", tmp_path / "k8s", name=name)["worker-deployment.yaml"].read_text())
    assert container_env(k8s)["DTF_WORKER_NAME"].replace("$$", "$") == f"{name}-$(POD_NAME)"


def test_the_env_file_reads_the_same_in_bash(tmp_path: Path) -> None:
    name = "it's a \"box\" with $HOME and `id` and \\ and ;|&"
    env_file = render("linux", tmp_path, name=name)["worker.env"]
    done = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; printf %s "$DTF_WORKER_NAME"', "bash", str(env_file)],
        capture_output=True, text=True, check=True,
    )
    assert done.stdout == name == read_env_file(env_file)["DTF_WORKER_NAME"]


# --- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "broker",
    [
        BROKER_WITH_PASSWORD,
        f"redis://:{SECRET}@cache.example:6379/0",
        f"rediss://:{SECRET}@cache.example:6380/1?ssl_cert_reqs=required",
        f"sentinel://:{SECRET}@s1:26379;sentinel://:{SECRET}@s2:26379",
        f"redis://cache.example:6379/0?password={SECRET}",
    ],
)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_no_secret_is_written_in_clear(platform: str, broker: str, tmp_path: Path) -> None:
    files = render(platform, tmp_path, broker=broker, gpu="cuda")
    for path in files.values():
        assert SECRET not in path.read_text(encoding="utf-8"), path.name
    guidance = {"linux": "worker.env", "macos": "worker.env", "windows": "start-worker.ps1",
                "docker": "docker-compose.worker.yml", "kubernetes": "worker-deployment.yaml"}[platform]
    assert re.search("DTF_REDIS_PASSWORD_FILE|secretKeyRef", files[guidance].read_text(encoding="utf-8"))


def test_a_password_in_the_broker_url_becomes_a_password_file_setting(tmp_path: Path) -> None:
    env = read_env_file(render("linux", tmp_path, broker=BROKER_WITH_PASSWORD)["worker.env"])
    assert env["DTF_BROKER_URL"] == "redis://cache.example:6379/0"
    assert env["DTF_REDIS_USERNAME"] == "alice"
    assert env["DTF_REDIS_PASSWORD_FILE"] == "/opt/dtf/secrets/redis-password"
    assert "DTF_REDIS_PASSWORD" not in env


def test_a_given_password_file_is_used_as_is(tmp_path: Path) -> None:
    env = read_env_file(render("linux", tmp_path, password_file="/etc/dtf/redis.pw")["worker.env"])
    assert env["DTF_REDIS_PASSWORD_FILE"] == "/etc/dtf/redis.pw"


def test_a_broker_without_password_leaves_the_password_file_commented_out(tmp_path: Path) -> None:
    text = render("linux", tmp_path)["worker.env"].read_text()
    assert "# DTF_REDIS_PASSWORD_FILE=/opt/dtf/secrets/redis-password" in text
    assert "DTF_REDIS_PASSWORD_FILE" not in read_env_file(tmp_path / "worker.env")


def test_docker_gets_the_password_as_a_compose_secret(tmp_path: Path) -> None:
    compose = yaml.safe_load(render("docker", tmp_path, broker=BROKER_WITH_PASSWORD)["docker-compose.worker.yml"].read_text())
    worker = compose["services"]["worker"]
    assert worker["environment"]["DTF_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
    assert worker["secrets"] == ["redis_password", "signing_key"]
    assert compose["secrets"]["redis_password"] == {"file": "./redis-password.txt"}


# --- the signing key -------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["linux", "macos", "windows"])
def test_a_host_against_a_network_broker_is_told_where_the_signing_key_file_is(platform: str, tmp_path: Path) -> None:
    files = render(platform, tmp_path, signing_key_file="/etc/dtf/fleet.key" if platform != "windows" else "C:/dtf/fleet.key")
    install = files["install.ps1" if platform == "windows" else "install.sh"].read_text()
    if platform == "windows":
        assert "$env:DTF_SIGNING_KEY_FILE = 'C:\\dtf\\fleet.key'" in files["start-worker.ps1"].read_text()
        assert "$SigningKeyFile = 'C:\\dtf\\fleet.key'" in install
    else:
        assert read_env_file(files["worker.env"])["DTF_SIGNING_KEY_FILE"] == "/etc/dtf/fleet.key"
        assert "SIGNING_KEY_FILE=/etc/dtf/fleet.key" in install and 'if [ ! -s "$SIGNING_KEY_FILE" ]' in install


def test_a_host_against_a_loopback_broker_needs_no_key_file(tmp_path: Path) -> None:
    files = render("linux", tmp_path, broker="redis://127.0.0.1:6379/0")
    assert "DTF_SIGNING_KEY_FILE" not in read_env_file(files["worker.env"])
    assert "SIGNING_KEY_FILE" not in files["install.sh"].read_text()


def test_docker_gets_the_signing_key_as_a_compose_secret(tmp_path: Path) -> None:
    files = render("docker", tmp_path, signing_key_file="./keys/fleet.key")
    compose = yaml.safe_load(files["docker-compose.worker.yml"].read_text())
    worker = compose["services"]["worker"]
    assert worker["environment"]["DTF_SIGNING_KEY_FILE"] == "/run/secrets/signing_key"
    assert worker["secrets"] == ["signing_key"]
    assert compose["secrets"] == {"signing_key": {"file": "./keys/fleet.key"}}


def test_kubernetes_mounts_the_signing_key_secret_as_a_file(tmp_path: Path) -> None:
    k8s = yaml.safe_load(render("kubernetes", tmp_path)["worker-deployment.yaml"].read_text())
    pod = k8s["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "DTF_SIGNING_KEY_FILE", "value": "/etc/dtf/signing/key"} in container["env"]
    assert {"name": "signing-key", "mountPath": "/etc/dtf/signing", "readOnly": True} in container["volumeMounts"]
    assert {"name": "signing-key", "secret": {"secretName": "dtf-signing", "defaultMode": 0o440}} in pod["volumes"]
    assert not [e for e in container["env"] if e["name"] == "DTF_SIGNING_KEY"]  # never a plain environment value


def test_kubernetes_gets_the_password_from_a_secret(tmp_path: Path) -> None:
    k8s = yaml.safe_load(render("kubernetes", tmp_path, broker=BROKER_WITH_PASSWORD)["worker-deployment.yaml"].read_text())
    (container,) = k8s["spec"]["template"]["spec"]["containers"]
    (password,) = [item for item in container["env"] if item["name"] == "DTF_REDIS_PASSWORD"]
    assert password == {"name": "DTF_REDIS_PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "dtf-redis", "key": "password", "optional": True}}}


@pytest.mark.parametrize(
    ("url", "clean", "user", "had_password"),
    [
        ("redis://cache:6379/0", "redis://cache:6379/0", None, False),
        ("redis://:pw@cache:6379/0", "redis://cache:6379/0", None, True),
        ("redis://bob:pw@cache:6379/0", "redis://cache:6379/0", "bob", True),
        ("redis://bob@cache:6379/0", "redis://cache:6379/0", "bob", False),
        ("rediss://:p%40w@[::1]:6380/2", "rediss://[::1]:6380/2", None, True),
        ("redis://cache/0?password=pw&db=1", "redis://cache/0?db=1", None, True),
        ("sentinel://:pw@a:26379;sentinel://:pw@b:26379", "sentinel://a:26379;sentinel://b:26379", None, True),
    ],
)
def test_split_broker_url_removes_credentials(url: str, clean: str, user: str | None, had_password: bool) -> None:
    split = split_broker_url(url)
    assert (split.url, split.username, split.had_password) == (clean, user, had_password)


def test_an_unsupported_broker_scheme_is_refused() -> None:
    with pytest.raises(DtfError, match="scheme 'amqp'"):
        split_broker_url("amqp://guest:guest@rabbit//")


# --- injection -------------------------------------------------------------------------


def install_layout(files: dict[str, Path], prefix: Path, fake_dtf: str) -> None:
    """What install.sh leaves in the prefix, with a fake `dtf` in place of the venv's."""
    for name in ("worker.env", "start-worker.sh", "stop-worker.sh"):
        shutil.copy2(files[name], prefix / name)
    dtf = prefix / "venv" / "bin" / "dtf"
    dtf.parent.mkdir(parents=True)
    dtf.write_text("#!/usr/bin/env bash\n" + fake_dtf)
    dtf.chmod(0o755)


def run_script(path: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    return subprocess.run(["bash", str(path), *args], capture_output=True, text=True, timeout=30, env=env, cwd=cwd)


def hostile_name(tmp_path: Path) -> tuple[str, Path, Path]:
    """A name that deletes ./victim or creates ./pwned if any shell ever evaluates it."""
    victim = tmp_path / "victim"
    victim.mkdir()
    return 'x"; rm -rf victim # $(touch pwned) `touch pwned` \'; touch pwned; \'', victim, tmp_path / "pwned"


def test_a_hostile_worker_name_stays_quoted_in_every_shell_file(tmp_path: Path) -> None:
    files = render("linux", tmp_path, name=HOSTILE_NAME)
    for name in ("worker.env", "install.sh", "start-worker.sh", "stop-worker.sh"):
        bash_syntax_ok(files[name])
    shellcheck(*(files[name] for name in ("worker.env", "install.sh", "start-worker.sh", "stop-worker.sh")))
    assert "DTF_WORKER_NAME='x\"; rm -rf / #'" in files["worker.env"].read_text()


def test_a_hostile_worker_name_is_printed_literally_by_a_dry_run(tmp_path: Path, prefix: Path) -> None:
    name, victim, pwned = hostile_name(tmp_path)
    files = render("linux", tmp_path / "out", name=name, prefix=str(prefix))
    install_layout(files, prefix, "exit 99\n")
    done = run_script(prefix / "start-worker.sh", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"DTF_WORKER_NAME={name}" in done.stdout.splitlines()
    assert f"would run: {prefix}/venv/bin/dtf worker" in done.stdout
    assert victim.is_dir() and not pwned.exists()


def test_a_hostile_worker_name_reaches_the_worker_unchanged(tmp_path: Path, prefix: Path) -> None:
    name, victim, pwned = hostile_name(tmp_path)
    files = render("linux", tmp_path / "out", name=name, prefix=str(prefix))
    install_layout(files, prefix, 'printf "%s|%s" "$*" "$DTF_WORKER_NAME"\n')
    done = run_script(prefix / "start-worker.sh", "--foreground", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"worker|{name}"
    assert victim.is_dir() and not pwned.exists()


def test_the_dry_run_never_prints_a_secret_from_the_environment(tmp_path: Path, prefix: Path) -> None:
    files = render("linux", tmp_path / "out", prefix=str(prefix))
    install_layout(files, prefix, "exit 99\n")
    env = {**os.environ, "DTF_REDIS_PASSWORD": SECRET, "DTF_FLOWER_BASIC_AUTH": f"admin:{SECRET}"}
    done = subprocess.run(["bash", str(prefix / "start-worker.sh"), "--dry-run"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and SECRET not in done.stdout + done.stderr


# --- start and stop --------------------------------------------------------------------

SLEEPER = 'trap "echo stopping; exit 0" TERM\necho "started $*"\nwhile true; do sleep 0.1; done\n'
STUBBORN = 'trap "echo ignoring TERM" TERM\nwhile true; do sleep 0.1; done\n'


@pytest.fixture
def started(tmp_path: Path, prefix: Path) -> Iterator[Path]:
    """A prefix whose worker is the SLEEPER; whatever still runs is killed at the end."""
    install_layout(render("linux", tmp_path / "out", prefix=str(prefix)), prefix, SLEEPER)
    yield prefix
    pid_file = prefix / "run" / "dtf-worker.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_dead(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        except ChildProcessError:
            done = 0
        if done or not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_writes_a_pid_file_and_a_log_and_runs_in_the_background(started: Path) -> None:
    done = run_script(started / "start-worker.sh")
    assert done.returncode == 0, done.stderr
    pid = int((started / "run" / "dtf-worker.pid").read_text())
    assert alive(pid)
    assert "started worker" in (started / "logs" / "worker.log").read_text()


def test_start_refuses_to_start_a_second_worker(started: Path) -> None:
    assert run_script(started / "start-worker.sh").returncode == 0
    again = run_script(started / "start-worker.sh")
    assert again.returncode == 1
    assert "already running" in again.stderr


def test_start_ignores_a_stale_pid_file(started: Path) -> None:
    (started / "run").mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (started / "run" / "dtf-worker.pid").write_text(f"{dead.pid}\n")
    assert run_script(started / "start-worker.sh").returncode == 0
    assert int((started / "run" / "dtf-worker.pid").read_text()) != dead.pid


def test_stop_sends_sigterm_and_removes_the_pid_file(started: Path) -> None:
    assert run_script(started / "start-worker.sh").returncode == 0
    pid = int((started / "run" / "dtf-worker.pid").read_text())
    done = run_script(started / "stop-worker.sh")
    assert done.returncode == 0, done.stderr
    assert wait_until_dead(pid)
    assert not (started / "run" / "dtf-worker.pid").exists()
    assert "stopping" in (started / "logs" / "worker.log").read_text()


def test_stop_kills_a_worker_that_outlives_the_timeout(tmp_path: Path, prefix: Path) -> None:
    install_layout(render("linux", tmp_path / "out", prefix=str(prefix)), prefix, STUBBORN)
    assert run_script(prefix / "start-worker.sh").returncode == 0
    pid = int((prefix / "run" / "dtf-worker.pid").read_text())
    done = run_script(prefix / "stop-worker.sh", "--timeout", "1")
    assert "killing it" in done.stderr
    assert wait_until_dead(pid)


def test_stop_without_a_running_worker_is_not_an_error(started: Path) -> None:
    done = run_script(started / "stop-worker.sh")
    assert done.returncode == 0 and "no worker is running" in done.stdout


def test_start_without_an_env_file_says_to_run_the_installer(started: Path) -> None:
    (started / "worker.env").unlink()
    done = run_script(started / "start-worker.sh")
    assert done.returncode == 1 and "run install.sh first" in done.stderr


# --- systemd and launchd ---------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current[key] = value
    return sections


def test_systemd_unit_starts_the_installed_script_and_stops_gracefully(tmp_path: Path) -> None:
    files = render("linux", tmp_path, stop_timeout_s=1200)
    service = unit_settings(files["dtf-worker.service"])["Service"]
    assert service["ExecStart"] == '"/opt/dtf/start-worker.sh" --foreground'
    assert service["EnvironmentFile"] == "/opt/dtf/worker.env"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert service["TimeoutStopSec"] == "1200"
    install = files["install.sh"].read_text()
    assert 'install -m 0755 "$HERE/start-worker.sh" "$HERE/stop-worker.sh" "$PREFIX/"' in install
    assert 'install -m 0640 "$HERE/worker.env" "$PREFIX/worker.env"' in install
    assert "/etc/systemd/system/dtf-worker.service" in install


def test_systemd_unit_escapes_percent_signs_in_the_name(tmp_path: Path) -> None:
    unit = unit_settings(render("linux", tmp_path, name="gpu 100%")["dtf-worker.service"])
    assert unit["Unit"]["Description"] == "dtf worker gpu 100%%"


def test_systemd_accepts_the_unit(tmp_path: Path, prefix: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    files = render("linux", tmp_path / "out", name=HOSTILE_NAME, prefix=str(prefix))
    install_layout(files, prefix, "exit 0\n")
    done = subprocess.run([analyze, "verify", "--man=no", str(files["dtf-worker.service"])],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_launchd_plist_parses_and_runs_the_installed_script(tmp_path: Path) -> None:
    files = render("macos", tmp_path, name="<mini> & 'mac'")
    plist = plistlib.loads(files["com.dtf.worker.plist"].read_bytes())
    assert plist["Label"] == "com.dtf.worker"
    assert plist["ProgramArguments"] == ["/opt/dtf/start-worker.sh", "--foreground"]
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["RunAtLoad"] is True
    assert plist["ExitTimeOut"] == STOP_TIMEOUT_S
    assert plist["StandardOutPath"] == "/opt/dtf/logs/worker.log"
    assert plist["StandardErrorPath"] == "/opt/dtf/logs/worker.err.log"
    assert "mkdir -p \"$PREFIX/logs\"" in files["install.sh"].read_text()


def test_xml_quoting_keeps_markup_out_of_plist_strings() -> None:
    value = "<key>x</key> & 'y' \"z\""
    document = f"<plist version='1.0'><string>{quote_xml(value)}</string></plist>"
    assert plistlib.loads(document.encode()) == value


# --- PowerShell ------------------------------------------------------------------------


def ps_value(literal: str) -> str:
    inner = PS_LITERAL.fullmatch(literal)
    assert inner is not None, literal
    return re.sub(f"([{PS_QUOTES}])[{PS_QUOTES}]", r"\1", inner.group(1))


def ps_assignment(text: str, variable: str) -> str:
    match = re.search(rf"^\$env:{variable} = (.*)$", text, re.MULTILINE)
    assert match is not None, variable
    return ps_value(match.group(1))


def test_powershell_values_are_single_quoted_literals(tmp_path: Path) -> None:
    name = "it's $(Remove-Item C:\\ -Recurse) \u2019curly\u2018 `n \"q\""
    text = render("windows", tmp_path, name=name)["start-worker.ps1"].read_text(encoding="utf-8")
    assert ps_assignment(text, "DTF_WORKER_NAME") == name
    for line in text.splitlines():
        if line.startswith("$env:DTF_"):
            assert PS_LITERAL.fullmatch(line.split(" = ", 1)[1]), line
    assert name not in text.replace(f"= '{name}'", "")


def test_powershell_paths_use_backslashes(tmp_path: Path) -> None:
    files = render("windows", tmp_path, prefix="D:/work/dtf")
    for name in ("install.ps1", "start-worker.ps1", "stop-worker.ps1"):
        text = files[name].read_text(encoding="utf-8")
        literals = [ps_value(f"'{m}'") for m in PS_LITERAL.findall(text)]
        paths = [value for value in literals if re.match(r"^[A-Za-z]:", value)]
        assert paths, name
        assert all("/" not in path and path.startswith("D:\\work\\dtf") for path in paths), paths
    start = files["start-worker.ps1"].read_text(encoding="utf-8")
    assert ps_assignment(start, "DTF_SPOOL_DIR") == "D:\\work\\dtf\\spool"
    assert "Start-Process" in start and "-RedirectStandardOutput" in start and "$PidFile" in start


def ps_code_only(text: str) -> str:
    """PowerShell source with comments removed and every string literal emptied."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("<#", i):
            i = text.index("#>", i) + 2
        elif char == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif char in PS_QUOTES:
            match = PS_LITERAL.match(text, i)
            assert match is not None, f"unterminated single-quoted string at {text[i:i + 40]!r}"
            out.append("''")
            i = match.end()
        elif char == '"':
            match = re.compile(r'"(?:[^"`]|`.|"")*"', re.DOTALL).match(text, i)
            assert match is not None, f"unterminated double-quoted string at {text[i:i + 40]!r}"
            out.append('""')
            i = match.end()
        else:
            out.append(char)
            i += 1
    return "".join(out)


def test_powershell_scripts_balance_their_quotes_and_braces(tmp_path: Path) -> None:
    for name, path in render("windows", tmp_path, name=HOSTILE_NAME).items():
        if name.endswith(".ps1"):
            code = ps_code_only(path.read_text(encoding="utf-8"))
            for open_, close in ("{}", "()", "[]"):
                assert code.count(open_) == code.count(close), (name, open_)


def test_powershell_parses_the_scripts(tmp_path: Path) -> None:
    pwsh = shutil.which("pwsh")
    if pwsh is None:
        pytest.skip("pwsh not installed")
    for name, path in render("windows", tmp_path, name=HOSTILE_NAME).items():
        if name.endswith(".ps1"):
            check = ("$e=$null; [void][System.Management.Automation.Language.Parser]::ParseFile("
                     f"'{path}', [ref]$null, [ref]$e); if ($e) {{ $e; exit 1 }}")
            done = subprocess.run([pwsh, "-NoProfile", "-Command", check], capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr


def test_the_batch_starter_has_crlf_endings_and_no_rendered_values(tmp_path: Path) -> None:
    raw = render("windows", tmp_path, name=HOSTILE_NAME)["start-worker.bat"].read_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert b"rm -rf" not in raw


# --- docker and kubernetes -------------------------------------------------------------


def container_env(manifest: dict[str, Any]) -> dict[str, str]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_docker_files_build_the_worker_for_the_gpu(tmp_path: Path) -> None:
    files = render("docker", tmp_path, gpu="cuda", name="gpu-$USER")
    dockerfile = files["Dockerfile"].read_text()
    assert dockerfile.startswith("#") and "FROM nvidia/cuda:" in dockerfile
    assert "pip install torch" in dockerfile and "USER dtf" in dockerfile
    compose = yaml.safe_load(files["docker-compose.worker.yml"].read_text())
    worker = compose["services"]["worker"]
    assert worker["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert (tmp_path / worker["build"]["dockerfile"]).is_file()
    assert worker["environment"]["DTF_WORKER_NAME"] == "gpu-$$USER"
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert worker["stop_grace_period"] == f"{STOP_TIMEOUT_S}s"
    assert worker["volumes"] == ["spool:/opt/dtf/spool"] and "spool" in compose["volumes"]


def test_docker_files_for_rocm_pass_the_devices(tmp_path: Path) -> None:
    files = render("docker", tmp_path, gpu="rocm")
    assert "download.pytorch.org/whl/rocm" in files["Dockerfile"].read_text()
    worker = yaml.safe_load(files["docker-compose.worker.yml"].read_text())["services"]["worker"]
    assert worker["devices"] == ["/dev/kfd", "/dev/dri"]


def test_docker_files_for_cpu_use_the_slim_python_image(tmp_path: Path) -> None:
    files = render("docker", tmp_path)
    assert "FROM python:3.11-slim" in files["Dockerfile"].read_text()
    assert "deploy" not in yaml.safe_load(files["docker-compose.worker.yml"].read_text())["services"]["worker"]


def test_kubernetes_renders_a_deployment_without_a_gpu(tmp_path: Path) -> None:
    k8s = yaml.safe_load(render("kubernetes", tmp_path)["worker-deployment.yaml"].read_text())
    assert k8s["kind"] == "Deployment" and k8s["spec"]["replicas"] == 1
    pod = k8s["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    (container,) = pod["containers"]
    assert container["livenessProbe"]["exec"]["command"] == ["dtf", "worker-health"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["terminationGracePeriodSeconds"] == STOP_TIMEOUT_S
    assert container_env(k8s)["DTF_WORKER_NAME"] == "box-01-$(POD_NAME)"


@pytest.mark.parametrize(("gpu", "resource"), [("cuda", "nvidia.com/gpu"), ("rocm", "amd.com/gpu")])
def test_kubernetes_renders_a_daemonset_with_the_gpu_resource(gpu: str, resource: str, tmp_path: Path) -> None:
    k8s = yaml.safe_load(render("kubernetes", tmp_path, gpu=gpu)["worker-deployment.yaml"].read_text())
    assert k8s["kind"] == "DaemonSet" and "replicas" not in k8s["spec"]
    pod = k8s["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"][resource] == 1
    assert len(pod["nodeSelector"]) == 2
    assert pod["tolerations"][0]["key"] == resource
    assert container_env(k8s)["DTF_WORKER_NAME"] == "box-01-$(NODE_NAME)"
    assert k8s["metadata"]["name"] == "dtf-worker-box-01"


def test_kubernetes_object_names_are_valid_for_any_worker_name(tmp_path: Path) -> None:
    k8s = yaml.safe_load(render("kubernetes", tmp_path, name="Ünïcode Box_01!" * 6)["worker-deployment.yaml"].read_text())
    name = k8s["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63


# --- the quoting guard -----------------------------------------------------------------


def copy_templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(templates_root(), root)
    return root


def test_an_unquoted_value_in_a_template_is_a_render_error(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    with (root / "posix" / "start-worker.sh.j2").open("a") as handle:
        handle.write("echo {{ o.name }}\n")
    options = deploy_options("linux", broker=None, name="box", tags=())
    with pytest.raises(DtfError, match="start-worker.sh: unquoted value 'box'"):
        render_options(options, tmp_path / "out", root=root)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_value_quoted_for_another_language_is_a_render_error(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    with (root / "posix" / "start-worker.sh.j2").open("a") as handle:
        handle.write("echo {{ o.name | ps }}\n")
    options = deploy_options("linux", broker=None, name="box", tags=())
    with pytest.raises(DtfError, match="quoted for 'ps'"):
        render_options(options, tmp_path / "out", root=root)


def test_templates_run_in_a_sandbox(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    with (root / "posix" / "start-worker.sh.j2").open("a") as handle:
        handle.write("{{ o.__class__.__init__.__globals__ | sh }}\n")
    options = deploy_options("linux", broker=None, name="box", tags=())
    with pytest.raises(DtfError):
        render_options(options, tmp_path / "out", root=root)


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tags": ["a,b"]}, "tag item 'a,b'"),
        ({"tags": ["has space"]}, "tag item"),
        ({"tags": "cuda"}, "must be a list"),
        ({"queues": ["dtf.cpu;x"]}, "queue item"),
        ({"name": "two\nlines"}, "control or unprintable"),
        ({"name": ""}, "worker name is empty"),
        ({"gpu": "tpu"}, "unknown gpu 'tpu'"),
        ({"concurrency": 0}, "concurrency 0"),
        ({"profile": "fast"}, "unknown profile 'fast'"),
        ({"prefix": "relative/dir"}, "absolute POSIX path"),
        ({"prefix": "/opt/my dtf"}, "absolute POSIX path"),
        ({"sentinels": ["no-port"]}, "sentinel item"),
        ({"stop_timeout_s": 1}, "stop timeout"),
        ({"broker": "amqp://rabbit"}, "scheme 'amqp'"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(DtfError, match=re.escape(message)):
        render("linux", tmp_path, **options)
    assert not (tmp_path / "install.sh").exists()


def test_windows_prefixes_are_converted_to_windows_spelling() -> None:
    assert deploy_options("windows", broker=None, name=None, tags=(), prefix="/d/dtf").prefix == "D:\\dtf"
    assert deploy_options("windows", broker=None, name=None, tags=()).prefix == DEFAULT_PREFIX["windows"]
    with pytest.raises(DtfError, match="drive"):
        deploy_options("windows", broker=None, name=None, tags=(), prefix="relative")


# --- host profiles ---------------------------------------------------------------------


def example_profiles() -> list[Path]:
    return sorted(profiles_root().glob("*.yaml"))


def test_there_are_example_profiles_for_a_cuda_box_a_mac_and_a_windows_box() -> None:
    platforms = {load_host_profile(path).platform for path in example_profiles()}
    assert {"linux", "macos", "windows"} <= platforms


@pytest.mark.parametrize("path", example_profiles(), ids=lambda path: path.stem)
def test_every_example_profile_renders_on_its_platform(path: Path, tmp_path: Path) -> None:
    host = load_host_profile(path)
    files = render_profile(host, tmp_path, broker="redis://cache:6379/0")
    assert [p.name for p in files] == [name for name, _ in PLATFORM_FILES[host.platform]]
    assert host.queues and host.concurrency


def test_a_profile_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nplatform: linux\ncores: 8\n")
    with pytest.raises(DtfError, match="unknown keys cores"):
        load_host_profile(path)
