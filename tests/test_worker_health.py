"""`dtf worker-health`: the one command the compose health check, the generated Dockerfile
HEALTHCHECK and the generated Kubernetes livenessProbe run, tried against a real worker on
a real redis-server: healthy while it runs, unhealthy when it is frozen or gone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dtf.deploy import render_deploy
from dtf.state import worker_records, write_worker_record

from .conftest import REPO, Processes, RedisServer, dtf_cmd, dtf_env
from .dtf_cluster import wait_for


def _dockerfile_healthcheck(text: str) -> list[str]:
    match = re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.MULTILINE)
    assert match, "no HEALTHCHECK ... CMD [...] line"
    return list(json.loads(match.group(1)))


def probe_commands(tmp_path: Path) -> dict[str, list[str]]:
    """The health command of each place that declares one."""
    docker = {p.name: p for p in render_deploy("docker", tmp_path / "docker", broker="redis://r:6379/0", name=None, tags=())}
    k8s = {p.name: p for p in render_deploy("kubernetes", tmp_path / "k8s", broker="redis://r:6379/0", name=None, tags=())}
    pod = yaml.safe_load(k8s["worker-deployment.yaml"].read_text())["spec"]["template"]["spec"]
    compose = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())
    compose_test = compose["services"]["worker-cpu"]["healthcheck"]["test"]
    assert compose_test[0] == "CMD"
    return {
        "generated Dockerfile": _dockerfile_healthcheck(docker["Dockerfile"].read_text()),
        "generated Kubernetes livenessProbe": list(pod["containers"][0]["livenessProbe"]["exec"]["command"]),
        "docker/docker-compose.yml": list(compose_test[1:]),
    }


def as_local(argv: list[str]) -> list[str]:
    """The probe's argv with `dtf` pointing at this checkout's CLI."""
    assert argv[0] == "dtf", argv
    script = Path(sys.executable).parent / "dtf"
    return ([str(script)] if script.exists() else dtf_cmd()) + argv[1:]


def test_every_probe_runs_the_same_existing_command(tmp_path: Path) -> None:
    commands = probe_commands(tmp_path)
    assert len({tuple(c) for c in commands.values()}) == 1, commands
    (argv,) = {tuple(c) for c in commands.values()}
    help_text = subprocess.run(dtf_cmd(*argv[1:], "--help"), capture_output=True, text=True, env=dtf_env(), timeout=60)
    assert help_text.returncode == 0, help_text.stderr


def run_probe(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_local(argv), capture_output=True, text=True, env=env, timeout=120)


def test_probe_is_unhealthy_with_no_worker_and_with_bad_settings(tmp_path: Path) -> None:
    (argv,) = {tuple(c) for c in probe_commands(tmp_path).values()}
    nothing = run_probe(list(argv), dtf_env(DTF_BROKER_URL="redis://127.0.0.1:1/0", DTF_STATE_DIR=str(tmp_path / "s")))
    assert nothing.returncode == 1 and "no dtf worker runs here" in nothing.stderr
    unset = run_probe(list(argv), dtf_env(DTF_STATE_DIR=str(tmp_path / "s")))
    assert unset.returncode == 1 and unset.stderr.strip() == "unhealthy: no broker configured: set DTF_BROKER_URL or --broker"
    # a record left by a worker that was killed: its pid is gone
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_worker_record(tmp_path / "s", "dtf-cpu@gone", ["dtf.cpu"], pid=gone.pid)
    stale = run_probe(list(argv), dtf_env(DTF_BROKER_URL="redis://127.0.0.1:1/0", DTF_STATE_DIR=str(tmp_path / "s")))
    assert stale.returncode == 1 and "dtf-cpu@gone" in stale.stderr and "not running" in stale.stderr


def start_probed_worker(tmp_path: Path, redis_server: RedisServer, processes: Processes,
                        name: str) -> tuple[tuple[str, ...], Path, dict[str, str], subprocess.Popen[bytes]]:
    """The one probe command the deploy files share, a state dir, and a cpu worker named `name`."""
    (argv,) = {tuple(c) for c in probe_commands(tmp_path).values()}
    state = tmp_path / "state"
    env = dtf_env(DTF_BROKER_URL=redis_server.url, DTF_STATE_DIR=str(state), DTF_HEALTH_TIMEOUT="2")
    worker = processes.start("worker", ["worker", "--name", name, "--queues", "dtf.cpu", "--concurrency", "1",
                                        "--loglevel", "WARNING"], env, tmp_path)
    return argv, state, env, worker


def test_probe_against_a_live_a_frozen_and_a_killed_worker(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    argv, state, env, worker = start_probed_worker(tmp_path, redis_server, processes, "probe-w")
    healthy = wait_for(lambda: (p := run_probe(list(argv), env)).returncode == 0 and p, "the probe to pass", every_s=0.5)
    assert "probe-w" in healthy.stdout
    assert [r.worker_id for r in worker_records(state)] == ["probe-w"]

    os.killpg(worker.pid, signal.SIGSTOP)  # up, but consuming nothing
    try:
        frozen = run_probe(list(argv), env)
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    assert frozen.returncode == 1, frozen.stdout
    assert "probe-w did not answer" in frozen.stderr and len(frozen.stderr.strip().splitlines()) == 1
    wait_for(lambda: run_probe(list(argv), env).returncode == 0, "the probe to pass again", every_s=0.5)

    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(30)
    killed = run_probe(list(argv), env)
    assert killed.returncode == 1 and "probe-w (pid" in killed.stderr and "not running" in killed.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_a_cleanly_stopped_worker_leaves_no_record(
    tmp_path: Path, redis_server: RedisServer, processes: Processes, sig: int
) -> None:
    argv, state, env, worker = start_probed_worker(tmp_path, redis_server, processes, "clean-w")
    wait_for(lambda: run_probe(list(argv), env).returncode == 0, "the probe to pass", every_s=0.5)
    os.killpg(worker.pid, sig)
    worker.wait(60)
    stopped = run_probe(list(argv), env)
    assert stopped.returncode == 1 and "no dtf worker runs here" in stopped.stderr
    assert worker_records(state) == []
