"""The leader lock against a real redis-server: acquisition with fencing tokens, renewal,
the holder's own deadline, expiry and takeover, compare-and-delete, and the DuckDB fence
refusing the deposed leader."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from dtf.errors import DtfError, FencingError
from dtf.ha import LEADER_KEY, LeaderLock, NotLeader, parse_hostport, redis_from_settings
from dtf.settings import Settings
from dtf.store import Store

from ..conftest import RedisServer
from .conftest import SentinelCluster, wait_until

pytestmark = pytest.mark.redis


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class PausableClient:
    """A redis client whose lock calls can be made to hang, as in a paused process."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.paused = threading.Event()
        self.resume = threading.Event()

    def eval(self, *args: Any) -> Any:
        if self.paused.is_set():
            self.resume.wait()
        return self.client.eval(*args)


def client_of(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


def lock_on(server: RedisServer, node: str, **kwargs: Any) -> LeaderLock:
    return LeaderLock(lambda: redis.Redis.from_url(server.url), node_id=node, **kwargs)


def test_the_first_candidate_leads_with_token_1_and_the_second_stands_by(redis_server: RedisServer) -> None:
    a, b = lock_on(redis_server, "a"), lock_on(redis_server, "b")
    assert a.try_acquire() and a.is_leader() and a.token() == 1
    assert not b.try_acquire() and not b.is_leader() and b.token() is None
    assert client_of(redis_server).get(LEADER_KEY) == "a:1"


def test_a_renewal_moves_the_deadline_to_ttl_minus_drift_from_when_it_was_sent(redis_server: RedisServer) -> None:
    clock = FakeClock()
    lock = lock_on(redis_server, "a", ttl_ms=10_000, drift_ms=1_000, clock=clock)
    assert lock.try_acquire()
    assert lock.deadline_in_s() == pytest.approx(9.0)
    clock.now += 5.0
    assert lock.renew()
    assert lock.deadline_in_s() == pytest.approx(9.0)
    assert 9_000 < client_of(redis_server).pttl(LEADER_KEY) <= 10_000


def test_a_holder_steps_down_at_its_deadline_while_redis_still_holds_the_lease(redis_server: RedisServer) -> None:
    clock = FakeClock()
    demoted: list[bool] = []
    lock = lock_on(redis_server, "a", ttl_ms=10_000, drift_ms=1_000, clock=clock, on_demoted=lambda: demoted.append(True))
    assert lock.try_acquire()
    clock.now += 9.0  # no renewal confirmed for ttl - drift
    assert not lock.is_leader() and lock.token() is None
    assert client_of(redis_server).pttl(LEADER_KEY) > 0  # Redis has not said anything yet
    lock.tick()
    assert demoted == [True]
    assert not lock.renew()  # a late renewal does not bring the term back


def test_a_renewal_refused_by_redis_demotes_at_once(redis_server: RedisServer) -> None:
    demoted: list[bool] = []
    lock = lock_on(redis_server, "a", on_demoted=lambda: demoted.append(True))
    assert lock.try_acquire()
    client_of(redis_server).set(LEADER_KEY, "b:7")  # someone else's lease now
    assert not lock.renew()
    assert not lock.is_leader() and demoted == [True]


def test_after_expiry_a_standby_takes_over_with_a_higher_token(redis_server: RedisServer) -> None:
    a = lock_on(redis_server, "a", ttl_ms=300, drift_ms=50)
    b = lock_on(redis_server, "b", ttl_ms=300, drift_ms=50)
    assert a.try_acquire()
    first = a.token()
    wait_until(b.try_acquire, 5.0, 0.02, "the standby to take the expired lease")
    assert not a.is_leader()
    assert b.token() is not None and first is not None and b.token() > first  # type: ignore[operator]


def test_release_deletes_only_its_own_lease(redis_server: RedisServer) -> None:
    r = client_of(redis_server)
    a, b = lock_on(redis_server, "a"), lock_on(redis_server, "b")
    assert a.try_acquire()
    assert not b.release()
    assert r.get(LEADER_KEY) == "a:1"
    assert a.release() and r.get(LEADER_KEY) is None and not a.is_leader()
    assert b.try_acquire() and b.token() == 2
    a._value = "a:1"  # a stale holder that never noticed it lost the lease
    a._deadline = float("inf")
    assert not a.release()
    assert r.get(LEADER_KEY) == "b:2"


def test_the_background_loop_renews_and_releases_on_a_clean_stop(redis_server: RedisServer) -> None:
    lock = lock_on(redis_server, "a", ttl_ms=600, drift_ms=100)
    stop = threading.Event()
    thread = threading.Thread(target=lock.run, args=(stop,))
    thread.start()
    try:
        wait_until(lock.is_leader, 5.0, what="election")
        r = client_of(redis_server)
        stop.wait(1.8)  # three ttl spans later it still leads: the renewals kept the lease alive
        assert lock.is_leader() and lock.token() == 1 and r.get(LEADER_KEY) == "a:1"
    finally:
        stop.set()
        thread.join(10)
    assert client_of(redis_server).get(LEADER_KEY) is None and not lock.is_leader()


def test_a_paused_holder_steps_down_by_its_own_deadline_and_its_writes_are_fenced(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    paused = PausableClient(redis.Redis.from_url(redis_server.url))
    a = LeaderLock(lambda: paused, node_id="a", ttl_ms=1000, drift_ms=300)
    b = lock_on(redis_server, "b", ttl_ms=1000, drift_ms=300)
    stop = threading.Event()
    thread = threading.Thread(target=a.run, args=(stop,), kwargs={"release_on_stop": False})
    thread.start()
    store = Store(tmp_path / "fence.duckdb")
    try:
        wait_until(a.is_leader, 5.0, what="election")
        old_token = a.token()
        assert old_token is not None
        store.ingest_batch([], token=old_token)
        paused.paused.set()  # every renewal from now on hangs, as if the process were stopped
        wait_until(lambda: not a.is_leader(), 5.0, 0.005, "the holder to step down")
        assert client_of(redis_server).pttl(LEADER_KEY) > 0  # it let go before Redis did
        wait_until(b.try_acquire, 5.0, 0.02, "the standby to lead")
        new_token = b.raise_token(store.max_token() + 1)
        assert new_token > old_token
        store.ingest_batch([], token=new_token)
        with pytest.raises(FencingError):
            store.ingest_batch([], token=old_token)  # the deposed leader's late write
    finally:
        paused.resume.set()
        stop.set()
        thread.join(10)
        store.close()
    assert not a.is_leader()


def test_a_new_leader_token_is_above_the_database_even_when_redis_lost_the_epoch(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with Store(tmp_path / "epoch.duckdb") as store:
        store.ingest_batch([], token=7)  # written in an earlier life of Redis
        a = lock_on(redis_server, "a")
        assert a.try_acquire() and a.token() == 1
        assert a.raise_token(store.max_token() + 1) == 8 and a.token() == 8
        store.ingest_batch([], token=8)
    assert client_of(redis_server).get(f"{LEADER_KEY}:epoch") == "8"
    assert a.release()
    b = lock_on(redis_server, "b")
    assert b.try_acquire() and b.token() == 9


def test_raising_the_token_needs_the_lease(redis_server: RedisServer) -> None:
    with pytest.raises(NotLeader):
        lock_on(redis_server, "a").raise_token(3)


def test_a_renew_interval_at_or_above_ttl_minus_drift_is_rejected() -> None:
    with pytest.raises(DtfError, match="renew interval"):
        LeaderLock(lambda: None, ttl_ms=1000, drift_ms=100, renew_every_ms=900)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("s1:26379", ("s1", 26379)), ("10.0.0.1:5000", ("10.0.0.1", 5000)), ("[::1]:26380", ("::1", 26380)),
     ("sentinel", ("sentinel", 26379))],
)
def test_sentinel_addresses_parse_into_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


def test_redis_from_settings_uses_the_broker_url_with_a_socket_timeout(redis_server: RedisServer) -> None:
    client = redis_from_settings(Settings(broker_url=redis_server.url, redis_socket_timeout_s=1.5))
    assert client.ping()
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 1.5


def test_redis_from_settings_finds_the_master_through_the_sentinels(sentinel_cluster: SentinelCluster) -> None:
    client = redis_from_settings(sentinel_cluster.settings())
    assert client.set("dtf:test:key", "v") and client.get("dtf:test:key") == b"v"
    lock = LeaderLock(lambda: redis_from_settings(sentinel_cluster.settings()), node_id="a")
    assert lock.try_acquire() and lock.token() == 1
    assert sentinel_cluster.master().client().get(LEADER_KEY) == "a:1"


def test_releasing_the_lease_is_an_info_event_and_losing_it_a_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dtf.ha")
    clock = FakeClock()
    lock = lock_on(redis_server, "a", ttl_ms=10_000, drift_ms=1_000, clock=clock)
    assert lock.try_acquire()
    assert lock.release()
    assert lock.try_acquire()
    clock.now += 9.0
    lock.tick()
    assert [(r.levelno, r.getMessage()) for r in caplog.records if "stepped down" in r.getMessage()] == [
        (logging.INFO, "a: stepped down (released)"),
        (logging.WARNING, "a: stepped down (the lease deadline passed before a renewal was confirmed)"),
    ]
