"""dtf.resend: a finished result's publish retried with backoff on fresh connections, and
the spool replayed while the worker runs (a real redis-server stopped and started again on
its port: the broker away, then back)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import redis

from dtf.app import make_app
from dtf.bus import RESULTS_QUEUE
from dtf.model import TestResult
from dtf.resend import Spool, SpoolReplayer, publish_with_backoff
from dtf.settings import Settings
from dtf.worker import WorkerRuntime

from .conftest import RedisServer


def test_a_failed_publish_is_retried_on_fresh_connections_with_doubling_waits() -> None:
    calls: list[bool] = []
    waits: list[float] = []

    def publish(fresh: bool) -> None:
        calls.append(fresh)
        if len(calls) < 4:
            raise ConnectionError("master down")

    assert publish_with_backoff(publish, sleep=waits.append, deadline_s=60) == 3
    assert calls == [False, True, True, True]  # the pooled producer once, then new connections
    assert waits == [0.2, 0.4, 0.8]


def test_a_publish_that_never_works_raises_at_the_deadline() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    def publish(fresh: bool) -> None:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError):
        publish_with_backoff(publish, sleep=sleep, clock=lambda: now[0], deadline_s=5)
    assert sum(waits) <= 5 and waits[-1] == 2.0  # capped at 2 s a wait


def test_a_claimed_spool_file_is_not_claimed_twice(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.new_path()
    spool.write(path, {"result": {}})
    with spool.claim(path) as first:
        with spool.claim(path) as second:
            assert (first, second) == (True, False)
    with spool.claim(path) as again:
        assert again


@pytest.mark.redis
def test_a_result_spooled_while_the_broker_is_away_is_published_by_the_running_worker_when_it_is_back(
    tmp_path: Path, redis_server: RedisServer,
) -> None:
    app = make_app(Settings(broker_url=redis_server.url, spool_dir=str(tmp_path / "spool"), state_dir=str(tmp_path / "state")))
    runtime = WorkerRuntime(app, worker_id="w-resend", queues=["dtf.cpu"])
    runtime.publish_deadline_s = 0.5  # give up quickly: the replayer takes over
    redis_server.stop()
    runtime.publish_result(TestResult("run-1", "t/cpu", 1, "passed"))
    assert runtime.flush_results(30)  # the sender gave up at its deadline: left to the replayer
    [kept] = list(runtime.spool.glob("*.json"))
    assert json.loads(kept.read_text())["result"]["test_id"] == "t/cpu"
    published = threading.Event()
    replayer = SpoolReplayer(lambda: (runtime.replay_spool() and published.set()) or 0, every_s=0.1).start()
    try:
        redis_server.start()  # the same port: the broker is back, empty
        assert published.wait(30)
    finally:
        replayer.stop()
    assert list(runtime.spool.glob("*.json")) == []
    assert redis.Redis(port=redis_server.port).llen(RESULTS_QUEUE) == 1


def test_recent_results_give_back_what_was_published_from_the_window_before_a_loss_once() -> None:
    from dtf.resend import RecentResults

    now = [100.0]
    recent = RecentResults(window_s=10.0, keep_s=60.0, clock=lambda: now[0])
    for at, name in ((100.0, "long-before"), (125.0, "just-before"), (133.0, "at-the-loss")):
        now[0] = at
        recent.add({"name": name})
    assert recent.since_loss() == []  # no loss yet
    recent.mark_lost()  # at 133
    now[0] = 140.0
    recent.mark_lost()  # the first loss counts until it is handled
    assert [b["name"] for b in recent.since_loss()] == ["just-before", "at-the-loss"]
    assert recent.since_loss() == []  # handled: nothing twice
    now[0] = 200.0
    recent.add({"name": "later"})  # and old entries age out
    recent.mark_lost()
    assert [b["name"] for b in recent.since_loss()] == ["later"]


def test_the_sender_publishes_inline_when_it_can_else_on_its_thread_batching_what_waits(tmp_path: Path) -> None:
    from dtf.resend import ResultSender

    spool = Spool(tmp_path / "spool")
    calls: list[tuple[str, list[str]]] = []
    taken, go_on = threading.Event(), threading.Event()

    def publish_many(bodies: list, fresh: bool) -> None:  # type: ignore[type-arg]
        names = [b["n"] for b in bodies]
        on_thread = threading.current_thread().name == "dtf-result-sender"
        calls.append(("sender" if on_thread else "caller", names))
        if names == ["a"] and not on_thread:
            raise ConnectionError("broker gone")  # the inline try fails: the sender takes it over
        if names == ["a"]:
            taken.set()
            go_on.wait(10)  # "b" and "c" arrive while "a" is being published

    sent: list[str] = []
    sender = ResultSender(spool, publish_many, sent=lambda body: sent.append(body["n"]))

    def hand_over(n: str) -> Path:
        path = spool.new_path()
        spool.write(path, {"n": n})
        assert spool.try_claim(path)
        sender.send(path, {"n": n}, n)
        return path

    paths = [hand_over("x"), hand_over("a")]
    assert taken.wait(10)
    paths += [hand_over("b"), hand_over("c")]  # the sender is busy: they wait for it, in order
    go_on.set()
    assert sender.flush(10)
    assert calls == [("caller", ["x"]), ("caller", ["a"]), ("sender", ["a"]), ("sender", ["b", "c"])]
    assert sent == ["x", "a", "b", "c"]
    assert not any(p.exists() for p in paths)

    def broken(bodies: list, fresh: bool) -> None:  # type: ignore[type-arg]
        raise ConnectionError("broker gone")

    failing = ResultSender(spool, broken, deadline_s=0.3)
    path = spool.new_path()
    spool.write(path, {"n": "d"})
    spool.try_claim(path)
    failing.send(path, {"n": "d"}, "d")
    assert failing.flush(10)
    assert path.exists() and spool.try_claim(path)  # kept, and released to the replayer
