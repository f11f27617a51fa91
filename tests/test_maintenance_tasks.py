"""Maintenance tasks (`dtf tasks run`) and `split: case` test tasks on a real cluster: a
redis-server, `dtf coordinator` and three `dtf worker` processes (w1 and w2 on dtf.cpu, w3
on dtf.cuda), every worker offline with its own tiny Hugging Face cache."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from kombu import Producer

from dtf.app import make_app
from dtf.bus import wire_format
from dtf.bus.maintenance import MAINT_EXCHANGE, route_for_worker
from dtf.settings import Settings
from dtf.wire import DEAD_LETTER_COUNT_KEY

from .conftest import Processes, RedisServer, dtf_cmd
from .dtf_cluster import Cluster, wait_for
from .models.conftest import save_tiny

TINY_ID = "org/tiny-bert"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def on_cluster(fn: Any) -> Any:
    """A test on the module's cluster: needs a redis-server binary, takes seconds."""
    return pytest.mark.redis(pytest.mark.slow(fn))


BARRIER_TESTS = '''
import pathlib, time

DIR = pathlib.Path({dir!r})

def _meet(name):
    (DIR / name).write_text("started")
    deadline = time.monotonic() + 120
    while len(list(DIR.glob("case_*"))) < 2:
        assert time.monotonic() < deadline, "the other case never started on another worker"
        time.sleep(0.05)

def test_left():
    _meet("case_left")

def test_right():
    _meet("case_right")
'''


def tiny_hf_cache(cache: Path) -> None:
    """A tiny BERT saved (save_pretrained) where the hub cache keeps org/tiny-bert."""
    repo = cache / f"models--{TINY_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    save_tiny("bert", repo / "snapshots" / SNAPSHOT)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("maint")
    tiny_hf_cache(root / "hf-cache")
    redis = RedisServer(root / "redis").start()
    (root / "logs").mkdir()
    procs = Processes(root / "logs")
    c = Cluster(root, redis, procs)
    # The compiled-code caches the workers clear are their own: clearing the machine's shared
    # /tmp/torchinductor_<user> would race with other tests running beside this one.
    c.env.update(HF_HUB_CACHE=str(root / "hf-cache"), HF_HUB_OFFLINE="1",
                 TORCHINDUCTOR_CACHE_DIR=str(root / "inductor"), TRITON_CACHE_DIR=str(root / "triton"))
    try:
        c.start_coordinator()
        for name in ("w1", "w2"):  # one test at a time each: a split-case run needs both
            c.start_worker(name, "--concurrency", "1")
        # --no-health-check: this machine has no GPU, so the cuda health check would (rightly)
        # keep w3 off dtf.cuda; here it only needs to be addressable on that queue.
        procs.start("w3", ["worker", "--name", "w3", "--queues", "dtf.cuda", "--loglevel", "INFO",
                           "--heartbeat-interval", "1", "--no-health-check"], c.env, root)
        wait_for(lambda: c.worker("w3"), "a heartbeat from w3")
        yield c
    finally:
        procs.stop_all()
        redis.stop()


def tasks(c: Cluster, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(dtf_cmd("tasks", "run", *args, "--format", "json"), env=c.env, cwd=c.tmp,
                          capture_output=True, text=True, timeout=180)
    data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, data, proc.stderr


def rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["worker_id"]: r for r in data["workers"]}


def runs_of(c: Cluster, worker: str, kind: str) -> int:
    return len(re.findall(rf"maintenance task {kind}:", c.processes.log(worker)))


@on_cluster
def test_a_task_reaches_each_worker_of_its_queue_once_and_reports_per_worker(cluster: Cluster) -> None:
    before = {w: runs_of(cluster, w, "clear-cache") for w in ("w1", "w2", "w3")}
    code, data, err = tasks(cluster, "clear-cache", "--hardware", "cpu", "--what", "work-dirs,compiled")
    assert code == 0, (err, data)
    got = rows(data)
    assert set(got) == {"w1", "w2"}  # w3 serves dtf.cuda only
    assert all(r["status"] == "ok" and r["summary"].startswith("cleared work-dirs, compiled") for r in got.values())
    assert set(got["w1"]["details"]) == {"work-dirs", "compiled"}
    # Then one request to w1 alone: any second copy of the first would have been run before it.
    code, data, err = tasks(cluster, "clear-cache", "--worker", "w1", "--what", "work-dirs")
    assert code == 0 and set(rows(data)) == {"w1"}, err
    after = {w: runs_of(cluster, w, "clear-cache") for w in ("w1", "w2", "w3")}
    assert {w: after[w] - before[w] for w in after} == {"w1": 2, "w2": 1, "w3": 0}


@on_cluster
def test_one_named_worker_only_and_detect_heartbeats_at_once(cluster: Cluster) -> None:
    seen = cluster.worker("w3")
    assert seen is not None
    code, data, err = tasks(cluster, "detect", "--worker", "w3")
    assert code == 0, (err, data)
    got = rows(data)["w3"]
    assert got["status"] == "ok" and "heartbeat sent" in got["summary"]
    assert got["details"]["queues"] == ["dtf.cuda"] and "cpu" in got["details"]["hardware"]["hardware_kinds"]
    assert runs_of(cluster, "w1", "detect") == runs_of(cluster, "w2", "detect") == 0
    # --hardware cuda addresses w3 and nobody else
    code, data, err = tasks(cluster, "detect", "--hardware", "cuda")
    assert code == 0 and set(rows(data)) == {"w3"}, err


@on_cluster
def test_prepare_models_succeeds_from_the_cache_and_names_a_missing_model(cluster: Cluster) -> None:
    code, data, err = tasks(cluster, "prepare-models", "--models", TINY_ID, "--hardware", "cpu")
    assert code == 0, (err, data)
    for row in rows(data).values():
        assert row["status"] == "ok"
        model = row["details"]["models"][TINY_ID]
        assert model["state"] == "cached" and model["revision"] == SNAPSHOT
        assert (Path(model["path"]) / "config.json").is_file()

    code, data, err = tasks(cluster, "prepare-models", "--models", f"{TINY_ID},org/not-here", "--hardware", "cpu")
    assert code == 1, err
    for row in rows(data).values():
        assert row["status"] == "failed"
        assert "missing: org/not-here" in row["summary"] and "HF_HUB_OFFLINE" in row["summary"]
        assert row["details"]["models"][TINY_ID]["state"] == "cached"
        assert "org/not-here is not in the HF cache" in row["details"]["models"]["org/not-here"]["error"]


@on_cluster
def test_a_worker_that_does_not_answer_is_listed_and_exits_2(cluster: Cluster) -> None:
    code, data, err = tasks(cluster, "detect", "--worker", "ghost", "--timeout", "2")
    assert code == 2, err
    assert rows(data) == {"ghost": {"worker_id": "ghost", "status": "no answer", "summary": "no answer within 2 s",
                                    "details": {}, "duration_s": None, "hostname": ""}}


@on_cluster
def test_a_malformed_request_is_dead_lettered_and_the_worker_keeps_answering(cluster: Cluster) -> None:
    import redis

    client = redis.Redis.from_url(cluster.redis.url)
    dead = int(client.get(DEAD_LETTER_COUNT_KEY) or 0)
    app = make_app(Settings(broker_url=cluster.redis.url))
    with app.connection_for_write() as conn:
        Producer(conn.channel(), serializer=wire_format(app)[0]).publish(
            {"op": "maintenance", "kind": "format-disk", "params": {}, "reply_to": "dtf.reply.x", "correlation_id": "c"},
            exchange=MAINT_EXCHANGE, routing_key=route_for_worker("w2"))
    wait_for(lambda: int(client.get(DEAD_LETTER_COUNT_KEY) or 0) > dead, "the refused request on dtf.dead")
    assert "unknown maintenance task 'format-disk'" in client.lindex("dtf.dead", 0).decode()
    code, _, err = tasks(cluster, "clear-cache", "--worker", "w2", "--what", "work-dirs")
    assert code == 0, err


@on_cluster
def test_split_case_spreads_cases_over_two_workers(cluster: Cluster) -> None:
    project = cluster.tmp / "project"
    (project / "tests").mkdir(parents=True)
    barrier = cluster.tmp / "barrier"
    barrier.mkdir()
    (project / "tests" / "test_pair.py").write_text(BARRIER_TESTS.format(dir=str(barrier)))
    suite = project / "suite.yaml"
    suite.write_text("name: pair\nhardware: [cpu]\ndefaults: {timeout_s: 150, retries: 0}\n"
                     "tests:\n  - {path: tests/test_pair.py, split: case}\n")
    proc = subprocess.run(dtf_cmd("submit", str(suite), "--wait", "--timeout", "170", "--format", "json"),
                          env=cluster.env, cwd=project, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = proc.stdout.strip().splitlines()[0].strip()
    results = cluster.tests(run_id)
    assert set(results) == {"tests/test_pair.py::test_left/cpu/bs1/fp32", "tests/test_pair.py::test_right/cpu/bs1/fp32"}
    assert all(t["status"] == "passed" for t in results.values()), results
    assert {t["worker_id"] for t in results.values()} == {"w1", "w2"}


@on_cluster
def test_an_unsigned_request_is_refused_unrun(cluster: Cluster) -> None:
    """Signing is on (the session's key): a request in plain JSON is dropped by the worker,
    never run. The signed request sent after it is answered, so the first was handled."""
    before = runs_of(cluster, "w1", "clear-cache")
    app = make_app(Settings(broker_url=cluster.redis.url))
    body = {"op": "maintenance", "kind": "clear-cache", "params": {"what": ["work-dirs"]},
            "reply_to": "dtf.reply.unsigned", "correlation_id": "c", "expires_at": time.time() + 60}
    with app.connection_for_write() as conn:
        Producer(conn.channel(), serializer="json").publish(body, exchange=MAINT_EXCHANGE, routing_key=route_for_worker("w1"))
    code, _, err = tasks(cluster, "clear-cache", "--worker", "w1", "--what", "work-dirs")
    assert code == 0, err
    assert runs_of(cluster, "w1", "clear-cache") == before + 1
    assert "dropping a message we refuse to decode" in cluster.processes.log("w1")


# -- without a cluster: the registry, addressing and the exit code ----------------------------------

def test_the_cli_refuses_unknown_kinds_parameters_and_addresses_in_one_line() -> None:
    from dtf.errors import DtfError
    from dtf.maintenance import address, check_params

    with pytest.raises(DtfError, match="unknown task 'reboot'"):
        check_params("reboot", {})
    with pytest.raises(DtfError, match=r"detect: unknown parameter models \(it takes no parameters\)"):
        check_params("detect", {"models": ["gpt2"]})
    with pytest.raises(DtfError, match="exactly one of --hardware KIND and --worker NAME"):
        address("cpu", "w1")
    with pytest.raises(DtfError, match="neither a hardware kind"):
        address("tpu", None)
    assert address("cuda", None) == ("queue:dtf.cuda", "dtf.cuda")
    assert address(None, "w1") == ("worker:w1", "worker w1")


def test_exit_code_is_0_only_when_every_addressed_worker_succeeded() -> None:
    from dtf.maintenance import exit_code

    def rows_of(*statuses: str) -> list[dict[str, Any]]:
        return [{"status": s} for s in statuses]

    assert exit_code(rows_of("ok", "ok")) == 0
    assert exit_code(rows_of("ok", "failed", "no answer")) == 1
    assert exit_code(rows_of("ok", "no answer")) == 2
    assert exit_code([]) == 2


def test_a_new_kind_is_one_function_and_shows_in_tasks_list() -> None:
    from dtf.maintenance import TASK_KINDS, TaskOutcome, task_kind

    @task_kind("echo-test", params={"text": "what to echo"})
    def echo(runtime: Any, params: Any) -> TaskOutcome:
        """Echo the text back."""
        return TaskOutcome(True, str(params.get("text")))

    try:
        proc = subprocess.run(dtf_cmd("tasks", "list", "--format", "json"), capture_output=True, text=True, timeout=120)
        listed = {k["kind"]: k for k in json.loads(proc.stdout)}
        assert set(listed) >= {"prepare-models", "clear-cache", "detect"}
        assert listed["prepare-models"]["params"]["models"].startswith("hub ids")
        assert TASK_KINDS["echo-test"].help == "Echo the text back."
        assert TASK_KINDS["echo-test"].run(None, {"text": "hi"}) == TaskOutcome(True, "hi")  # type: ignore[arg-type]
    finally:
        TASK_KINDS.pop("echo-test", None)


def test_maintenance_requests_are_checked_before_anything_acts_on_them() -> None:
    from dtf.wire import MessageRefused, maintenance_reply_from_wire, maintenance_request_from_wire

    kinds = frozenset({"detect"})
    good = {"op": "maintenance", "kind": "detect", "params": {}, "reply_to": "dtf.reply.ab12", "correlation_id": "c",
            "expires_at": 1.0}
    assert maintenance_request_from_wire(good, kinds)["kind"] == "detect"
    for bad, reason in (({**good, "kind": "rm"}, "unknown maintenance task"), ({**good, "reply_to": "dtf.cpu"}, "not a dtf reply queue"),
                        ({**good, "params": [1]}, "params: expected an object"), ({**good, "op": "submit"}, "is not maintenance"),
                        ({**good, "params": {"x": "y" * 70_000}}, "over the 65536 cap"), ("[]", "expected an object")):
        with pytest.raises(MessageRefused, match=re.escape(reason)):
            maintenance_request_from_wire(bad, kinds)
    with pytest.raises(MessageRefused, match="ok: expected true or false"):
        maintenance_reply_from_wire({"worker_id": "w", "kind": "detect", "ok": "yes", "summary": ""})
