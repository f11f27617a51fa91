"""The files under docker/: the compose file parses and wires every service with known DTF_*
variables and existing paths, the Dockerfiles tokenise and copy only what exists, and the
Redis and Sentinel configs (started for real through entrypoint.sh) say what we promise."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from .conftest import REPO, free_port, need_binary, wait_for_port
from dtf.deploy import ENV_VAR_NAMES, ENV_VARS

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if not p.name.endswith(".dockerignore"))
INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}
SECRET_NAMES = {var.name for var in ENV_VARS if var.secret}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def dtf_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("image", "").startswith("dtf:")}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{dockerfile.name} ends inside a continued line"
    pairs = []
    for text in logical:
        word, _, rest = text.strip().partition(" ")
        pairs.append((word.upper(), rest.strip()))
    return pairs


# --- compose ---------------------------------------------------------------------------


def test_compose_runs_redis_with_a_replica_three_sentinels_two_coordinators_a_worker_and_flower(
    compose: dict[str, Any],
) -> None:
    assert set(compose["services"]) == {
        "redis-master", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3",
        "coordinator-1", "coordinator-2", "worker-cpu", "flower",
    }
    commands = {name: svc["command"] for name, svc in dtf_services(compose).items()}
    assert commands == {"coordinator-1": ["coordinator"], "coordinator-2": ["coordinator"],
                        "worker-cpu": ["worker"], "flower": ["flower", "--address", "0.0.0.0"]}


def test_compose_uses_only_known_dtf_variables_and_no_secret_values(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), name
        dtf_keys = {key for key in env if key.startswith("DTF_")}
        assert dtf_keys <= ENV_VAR_NAMES, (name, dtf_keys - ENV_VAR_NAMES)
        assert not dtf_keys & SECRET_NAMES, name
    used = set(re.findall(r"\bDTF_[A-Z0-9_]+", "".join(p.read_text() for p in DOCKER.rglob("*") if p.is_file())))
    assert used <= ENV_VAR_NAMES, used - ENV_VAR_NAMES


def test_every_dtf_service_finds_redis_through_the_sentinels(compose: dict[str, Any]) -> None:
    for name, service in dtf_services(compose).items():
        env = service["environment"]
        assert env["DTF_SENTINELS"] == "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379", name
        assert env["DTF_SENTINEL_MASTER"] == "mymaster"
        assert env["DTF_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert "redis_password" in service["secrets"]
        assert set(service["depends_on"]) == {"sentinel-1", "sentinel-2", "sentinel-3"}


def test_every_dtf_service_reads_the_signing_key_from_a_secret(compose: dict[str, Any]) -> None:
    """The broker is on the compose network, not loopback: without a key no dtf process starts."""
    for name, service in dtf_services(compose).items():
        assert service["environment"]["DTF_SIGNING_KEY_FILE"] == "/run/secrets/signing_key", name
        assert "signing_key" in service["secrets"], name
    assert compose["secrets"]["signing_key"] == {"file": "./secrets/signing-key.txt"}


def test_both_coordinators_keep_the_database_on_one_shared_volume(compose: dict[str, Any]) -> None:
    first, second = compose["services"]["coordinator-1"], compose["services"]["coordinator-2"]
    assert first["volumes"] == second["volumes"] == ["dtf-db:/var/lib/dtf/db"]
    assert first["environment"]["DTF_DB"] == second["environment"]["DTF_DB"] == "/var/lib/dtf/db/dtf.duckdb"
    assert "dtf-db" in compose["volumes"]


def test_flower_requires_basic_auth_from_a_secret_and_listens_on_localhost(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert flower["environment"]["DTF_FLOWER_BASIC_AUTH_FILE"] == "/run/secrets/flower_basic_auth"
    assert "flower_basic_auth" in flower["secrets"]
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_the_worker_gets_time_to_finish_its_test_on_stop(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker-cpu"]
    assert worker["stop_signal"] == "SIGTERM" and worker["stop_grace_period"] == "15m"
    assert worker["healthcheck"]["test"] == ["CMD", "dtf", "worker-health"]


def test_compose_paths_exist_in_the_repository(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == REPO
            assert (context / build["dockerfile"]).is_file()


def test_compose_secrets_live_in_a_git_ignored_folder(compose: dict[str, Any]) -> None:
    for secret in compose["secrets"].values():
        path = DOCKER / secret["file"]
        assert path.parent == DOCKER / "secrets"
    assert (DOCKER / "secrets" / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]


# --- Dockerfiles -----------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_tokenise_into_known_instructions(dockerfile: Path) -> None:
    pairs = instructions(dockerfile)
    assert pairs[0][0] == "FROM"
    assert {word for word, _ in pairs} <= INSTRUCTIONS
    entrypoint = json.loads(dict(pairs)["ENTRYPOINT"])
    assert entrypoint == ["tini", "--", "dtf"]
    assert json.loads(dict(pairs)["CMD"]) == ["worker"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_run_as_a_non_root_user(dockerfile: Path) -> None:
    users = [args for word, args in instructions(dockerfile) if word == "USER"]
    assert users and users[-1] not in {"root", "0"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_copy_only_what_exists_and_the_ignore_file_keeps(dockerfile: Path) -> None:
    for word, args in instructions(dockerfile):
        if word in {"COPY", "ADD"}:
            *sources, _ = [arg for arg in args.split() if not arg.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), source
    ignore = (DOCKER / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {"pyproject.toml", "dtf"} <= kept
    assert (REPO / "pyproject.toml").is_file() and (REPO / "dtf").is_dir()


def test_the_cpu_image_is_python_slim_and_the_cuda_image_has_torch() -> None:
    cpu = dict(instructions(DOCKER / "Dockerfile.cpu"))
    cuda = instructions(DOCKER / "Dockerfile.cuda")
    assert cpu["FROM"] == "python:3.11-slim"
    assert dict(cuda)["FROM"].startswith("nvidia/cuda:") and "runtime" in dict(cuda)["FROM"]
    assert any('".[torch]"' in args for word, args in cuda if word == "RUN")


# --- Redis and Sentinel configs --------------------------------------------------------


def config_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_sentinel_config_fails_over_fast_and_resyncs_one_replica_at_a_time() -> None:
    lines = config_lines(DOCKER / "sentinel" / "sentinel.conf")
    assert ["sentinel", "monitor", "mymaster", "redis-master", "6379", "2"] in lines
    assert ["sentinel", "down-after-milliseconds", "mymaster", "2000"] in lines
    assert ["sentinel", "parallel-syncs", "mymaster", "1"] in lines
    assert any(line[:3] == ["sentinel", "failover-timeout", "mymaster"] for line in lines)


def test_redis_config_refuses_writes_without_a_replica_and_never_evicts() -> None:
    lines = config_lines(DOCKER / "redis" / "redis.conf")
    assert ["min-replicas-to-write", "1"] in lines
    assert ["maxmemory-policy", "noeviction"] in lines


def test_the_entrypoint_passes_sh_n_and_shellcheck() -> None:
    script = DOCKER / "redis" / "entrypoint.sh"
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    done = subprocess.run([need_binary("shellcheck"), "--norc", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


class Node:
    """A redis-server or redis-sentinel started through docker/redis/entrypoint.sh."""

    def __init__(self, tmp: Path, role: str, *extra: str, template: Path | None = None) -> None:
        need_binary("redis-server")
        self.port = free_port()
        data = tmp / f"{role}-{self.port}"
        env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "REDIS_DATA_DIR": str(data),
               "REDIS_SECRET_FILE": str(tmp / "password"), "ANNOUNCE_HOST": "127.0.0.1"}
        if template is not None:
            env["SENTINEL_TEMPLATE"] = str(template)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no", "--logfile", str(data / "log")]
        self.proc = subprocess.Popen(["sh", str(DOCKER / "redis" / "entrypoint.sh"), role, *args, *extra],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in reversed(started):
        node.stop()


def eventually(action: Callable[[], object], timeout_s: float) -> object:
    """The first result of `action` that does not raise a Redis error, retried until the timeout."""
    import redis

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.redis
def test_redis_and_sentinel_start_from_the_configs_with_the_password(tmp_path: Path, nodes: list[Node]) -> None:
    import redis

    (tmp_path / "password").write_text('pa"ss\\word')
    master = Node(tmp_path, "master", "--appendonly", "no", "--repl-diskless-sync-delay", "0")
    nodes.append(master)
    client = redis.Redis(port=master.port, password='pa"ss\\word')
    assert client.config_get("min-replicas-to-write") == {"min-replicas-to-write": "1"}
    with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
        client.set("k", "v")  # no replica in sync yet: writes are refused
    nodes.append(Node(tmp_path, "replica", "--appendonly", "no", "--replicaof", "127.0.0.1", str(master.port)))
    assert eventually(lambda: client.set("k", "v"), timeout_s=15)  # once the replica is in sync

    template = tmp_path / "sentinel.conf"
    text = (DOCKER / "sentinel" / "sentinel.conf").read_text()
    template.write_text(text.replace("redis-master 6379", f"127.0.0.1 {master.port}"))
    sentinel = Node(tmp_path, "sentinel", template=template)
    nodes.append(sentinel)
    sentinel_client = redis.Redis(port=sentinel.port, decode_responses=True)
    info = sentinel_client.sentinel_master("mymaster")
    assert info["down-after-milliseconds"] == 2000 and info["parallel-syncs"] == 1
    assert info["is_master"] and not info["is_sdown"]
    # The replica is learnt from the master's INFO, which only answers with the password.
    deadline = time.monotonic() + 15
    while sentinel_client.sentinel_master("mymaster")["num-slaves"] < 1:
        assert time.monotonic() < deadline, "the sentinel never authenticated to the master"
        time.sleep(0.1)


def test_the_readme_names_every_file_it_describes() -> None:
    readme = (DOCKER / "README.md").read_text()
    for name in ("Dockerfile.cpu", "Dockerfile.cuda", "docker-compose.yml", "redis/redis.conf",
                 "sentinel/sentinel.conf", "redis/entrypoint.sh"):
        assert name in readme and (DOCKER / name).exists(), name


def test_the_lake_variant_adds_postgres_and_points_both_coordinators_at_one_lake(compose: dict[str, Any]) -> None:
    lake = yaml.safe_load((DOCKER / "docker-compose.lake.yml").read_text())
    assert set(lake["services"]) == {"postgres", "coordinator-1", "coordinator-2"}
    assert {"coordinator-1", "coordinator-2"} <= set(compose["services"])  # it only overrides what exists
    for name in ("coordinator-1", "coordinator-2"):
        svc = lake["services"][name]
        env = svc["environment"]
        assert env["DTF_DB"].startswith("ducklake:postgres:") and "password" not in env["DTF_DB"]
        assert env["DTF_DB_PASSWORD_FILE"] == "/run/secrets/postgres_password"
        assert svc["build"]["args"]["EXTRAS"] == "[lake]"
        assert f"lake-data:{env['DTF_DATA_PATH'].rstrip('/')}" in svc["volumes"]
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert lake["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
