"""High availability: the coordinators' leader lock with fencing tokens, and Redis clients
(plain URL or Sentinel) built from settings.

The lock is a lease: one Redis key holding ``<node-id>:<epoch>`` with a TTL, taken with
``SET NX PX`` and an ``INCR`` of an epoch counter in one Lua script; the epoch is the
fencing token. The holder renews every ttl/3 with a compare-and-pexpire and keeps its own
deadline on the monotonic clock, taken *before* each renewal is sent, minus a drift margin:
the moment that deadline passes without a confirmed renewal it is no longer leader, whether
or not Redis has said anything. Redis forgets the key only after the full ttl, counted
from when it received the renewal, so the holder always lets go first.

    lock = LeaderLock(lambda: redis_from_settings(settings), ttl_ms=10_000)
    threading.Thread(target=lock.run, args=(stop,), daemon=True).start()
    if lock.is_leader(): store.ingest_batch(..., token=lock.token())
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from typing import Any, Callable

import redis
from redis.sentinel import Sentinel

from .errors import DtfError
from .bus.connect import redis_auth, redis_tls, sentinel_auth
from .bus.protocol import first_line
from .settings import Settings

__all__ = ["LEADER_KEY", "LeaderLock", "redis_from_settings", "parse_hostport", "NotLeader"]

log = logging.getLogger("dtf.ha")

LEADER_KEY = "dtf:leader"

# KEYS[1] lease, KEYS[2] epoch; ARGV[1] node id, ARGV[2] ttl ms. Returns the new epoch or 0.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return epoch
"""
# KEYS[1] lease; ARGV[1] the holder's value, ARGV[2] ttl ms. 1 when renewed, 0 when not ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS[1] lease; ARGV[1] the holder's value. 1 when deleted, 0 when not ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] lease, KEYS[2] epoch; ARGV[1] the holder's value, ARGV[2] a floor. The epoch after.
_RAISE_EPOCH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if epoch < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
  return tonumber(ARGV[2])
end
return epoch
"""


class NotLeader(DtfError):
    """This node does not hold the leader lease (any more)."""


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaderLock:
    """A Redis lease with fencing tokens. Drive it with ``run(stop)`` in a thread, or step by
    step with ``tick()`` (what the loop calls) and the single operations below."""

    def __init__(
        self,
        redis_client_factory: Callable[[], Any],
        *,
        key: str = LEADER_KEY,
        node_id: str | None = None,
        ttl_ms: int = 10_000,
        renew_every_ms: int | None = None,
        drift_ms: int | None = None,
        poll_ms: int | None = None,
        on_elected: Callable[[int], None] | None = None,
        on_demoted: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.epoch_key = f"{key}:epoch"
        self.node_id = node_id or _default_node_id()
        self.ttl_ms = int(ttl_ms)
        # Redis counts the ttl from when it got the renewal; clocks drift by ppm and Redis
        # stores the expiry as wall time, which a promoted replica reads with its own clock.
        self.drift_ms = int(drift_ms if drift_ms is not None else max(2, self.ttl_ms // 10))
        self.renew_every_ms = int(renew_every_ms if renew_every_ms is not None else self.ttl_ms // 3)
        self.poll_ms = int(poll_ms if poll_ms is not None else self.renew_every_ms)
        if not 0 < self.renew_every_ms < self.ttl_ms - self.drift_ms:
            raise DtfError(f"leader lock: renew interval {self.renew_every_ms} ms must be under ttl minus drift "
                           f"({self.ttl_ms} - {self.drift_ms} ms)")
        self.on_elected = on_elected
        self.on_demoted = on_demoted
        self._factory = redis_client_factory
        self._client: Any = None
        self._clock = clock
        self._mutex = threading.RLock()
        self._value: str | None = None  # "<node-id>:<epoch>" while we believe we hold the lease
        self._token = 0
        self._deadline = 0.0
        self._next_renew = 0.0

    # -- state ---------------------------------------------------------------------------
    def is_leader(self) -> bool:
        """True while the lease is held and its deadline has not passed (checked on every call)."""
        return self._value is not None and self._clock() < self._deadline

    def token(self) -> int | None:
        """The fencing token of the current term, or None when not leader."""
        return self._token if self.is_leader() else None

    def deadline_in_s(self) -> float:
        return max(0.0, self._deadline - self._clock()) if self._value is not None else 0.0

    # -- single operations ---------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """One attempt to take the lease; True if this node now leads."""
        with self._mutex:
            if self._value is not None:
                return self.is_leader()
            sent = self._clock()
            epoch = int(self._eval(_ACQUIRE, [self.key, self.epoch_key], [self.node_id, self.ttl_ms]) or 0)
            if epoch <= 0:
                return False
            self._value = f"{self.node_id}:{epoch}"
            self._token = epoch
            self._deadline = sent + (self.ttl_ms - self.drift_ms) / 1000.0
            self._next_renew = sent + self.renew_every_ms / 1000.0
        log.info("%s: elected with epoch %d", self.node_id, epoch)
        if self.on_elected is not None:
            self.on_elected(epoch)
        return True

    def renew(self) -> bool:
        """Extend the lease; False (and stepped down) when it is not ours any more."""
        with self._mutex:
            if self._value is None:
                return False
            sent = self._clock()
            if sent >= self._deadline:
                self._demote("the lease deadline passed before a renewal was confirmed")
                return False
            renewed = int(self._eval(_RENEW, [self.key], [self._value, self.ttl_ms]) or 0)
            if renewed != 1:
                self._demote("the lease is no longer ours")
                return False
            self._deadline = sent + (self.ttl_ms - self.drift_ms) / 1000.0
            self._next_renew = sent + self.renew_every_ms / 1000.0
            return True

    def release(self) -> bool:
        """Compare-and-delete on a clean shutdown, so a standby need not wait out the ttl."""
        with self._mutex:
            value = self._value
            if value is None:
                return False
            self._demote("released")
        try:
            return int(self._eval(_RELEASE, [self.key], [value]) or 0) == 1
        except redis.RedisError as exc:
            log.warning("%s: cannot release the lease (it expires by itself): %s", self.node_id, exc)
            return False

    def step_down(self, reason: str = "asked to") -> None:
        """Stop leading now, without touching Redis (the lease expires by itself)."""
        with self._mutex:
            if self._value is not None:
                self._demote(reason)

    def raise_token(self, floor: int) -> int:
        """Make this term's token at least ``floor`` and lift the Redis epoch to match.

        An INCR can be lost in a Redis failover, so a new leader takes the larger of its epoch
        and (highest token the database has seen + 1)."""
        with self._mutex:
            if not self.is_leader() or self._value is None:
                raise NotLeader(f"{self.node_id} is not leader")
            if floor > self._token:
                log.warning("%s: epoch %d is behind the database; using token %d", self.node_id, self._token, floor)
                self._token = floor
            value, token = self._value, self._token
        try:
            self._eval(_RAISE_EPOCH, [self.key, self.epoch_key], [value, token])
        except redis.RedisError as exc:  # the database's max token still protects the next term
            log.warning("%s: cannot lift the Redis epoch to %d: %s", self.node_id, token, exc)
        return token

    # -- the loop --------------------------------------------------------------------------------
    def tick(self) -> None:
        """Acquire when standing by; renew when due; step down when the deadline passed."""
        try:
            if self._value is None:
                self.try_acquire()
            elif self._clock() >= self._deadline:
                self.step_down("the lease deadline passed before a renewal was confirmed")
            elif self._clock() >= self._next_renew:
                self.renew()
        except redis.RedisError as exc:
            # No answer is not a "no": keep the deadline and try again soon.
            log.warning("%s: Redis unavailable for the leader lock: %s", self.node_id, first_line(exc))
            self._next_renew = self._clock() + max(0.05, self.renew_every_ms / 4000.0)

    def next_wait_s(self) -> float:
        now = self._clock()
        if self._value is None:
            return self.poll_ms / 1000.0 * random.uniform(0.8, 1.2)  # jitter: standbys do not stampede
        return max(0.005, min(self._next_renew, self._deadline) - now)

    def run(self, stop: threading.Event, *, release_on_stop: bool = True) -> None:
        """Stand by, lead, renew and step down until ``stop`` is set; then release the lease."""
        while not stop.is_set():
            self.tick()
            stop.wait(self.next_wait_s())
        if release_on_stop:
            self.release()

    # -- internals -------------------------------------------------------------------------------------
    def _demote(self, reason: str) -> None:
        was = self._value
        self._value = None
        self._deadline = 0.0
        if was is None:
            return
        # Releasing the lease at a clean stop is a normal event; losing it is not.
        (log.info if reason == "released" else log.warning)("%s: stepped down (%s)", self.node_id, reason)
        if self.on_demoted is not None:
            self.on_demoted()

    def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client.eval(script, len(keys), *keys, *args)


# -- Redis clients --------------------------------------------------------------------------------
def parse_hostport(text: str, default_port: int = 26379) -> tuple[str, int]:
    """'host:port', '[::1]:26379' or 'host' -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:
        return text, default_port
    return host, int(port)


def redis_from_settings(settings: Settings, *, socket_timeout_s: float | None = None) -> redis.Redis:
    """A redis-py client for the configured Redis: the Sentinel-managed master, or the broker URL.

    Every call times out (a dead master must not hang the lock's renewals), and with several
    Sentinels at least one other must agree on who the master is."""
    timeout = socket_timeout_s if socket_timeout_s is not None else settings.redis_socket_timeout_s
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    auth = redis_auth(settings)
    tls = redis_tls(settings)
    if settings.sentinels:
        sentinel = Sentinel(
            [parse_hostport(s) for s in settings.sentinels],
            min_other_sentinels=1 if len(settings.sentinels) > 1 else 0,
            sentinel_kwargs={**common, **sentinel_auth(settings), **tls},
            **common,
        )
        return sentinel.master_for(settings.sentinel_master, **common, **auth, **tls)
    if settings.embedded:
        raise DtfError("no Redis configured: set DTF_BROKER_URL or DTF_SENTINELS")
    url = settings.broker_url
    if url.startswith("rediss://"):
        tls.pop("ssl", None)  # the scheme says so already
    return redis.Redis.from_url(url, **common, **auth, **tls)
