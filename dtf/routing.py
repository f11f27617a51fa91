"""The worker side of routing: which queues a worker consumes right now.

A worker starts with its hardware queues (``dtf.<kind>``, ``dtf.tag.<tag>``). On top of
those it consumes the requirement queue (``dtf.<kind>.r-<hash>``, dtf.requirements) of
every requirement set of a live run that its machine and ``--tags`` satisfy, for a kind
it serves. It leaves a hardware kind's queues, plain and requirement alike, while that
kind's health check fails (dtf.healthcheck), and every queue while the resource guard
says it is overloaded.

Where the sets come from: the coordinator, asked with the ``routes`` query at each
heartbeat. The coordinator already holds every active run's tests in memory, so the
answer needs no second copy to keep in step; the query rides the broker connection the
worker already has, so it works alike on Redis, Sentinel and the embedded in-memory
transport (a Redis registry key would need a Redis client and would not exist in the
embedded mode); and after a broker restart or a failover the next leader rebuilds the
sets from DuckDB, where a key in a broker that lost its data would be gone. The price is
latency: a worker takes a new set's queue up to one heartbeat after the run starts, and
the tests wait in their queue meanwhile.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterable, Mapping, Sequence

from .model import HARDWARE_KINDS, HardwareProfile, queue_for
from .requirements import RequirementError, check_requires, route_queue, unmet

__all__ = ["RouteTable", "kind_of_queue", "worker_tags"]

log = logging.getLogger("dtf.worker")


def kind_of_queue(queue: str) -> str | None:
    """The hardware kind a task queue carries (dtf.cuda, dtf.cuda.r-...), None for dtf.tag.* queues."""
    parts = queue.split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == "dtf" and parts[1] in HARDWARE_KINDS else None


def worker_tags(tags: Iterable[str]) -> list[str]:
    """The tags a worker offers from its --tags list (queue spellings such as dtf.tag.x count as x)."""
    out = []
    for tag in tags:
        tag = tag.strip()
        if tag.startswith("dtf.tag."):
            tag = tag[len("dtf.tag."):]
        elif tag.startswith("dtf."):
            continue
        if tag:
            out.append(tag)
    return list(dict.fromkeys(out))


class RouteTable:
    """Base queues, the requirement queues this worker satisfies, and the kinds held back by
    a failed health check; ``desired`` is what the consumer should be consuming."""

    def __init__(self, queues: Sequence[str], profile: HardwareProfile | None, tags: Sequence[str] = ()) -> None:
        self.base = tuple(queues)
        self.profile = profile
        self.tags = tuple(worker_tags(tags))
        self._routes: dict[str, dict[str, Any]] = {}  # queue -> its set, for the ones this worker satisfies
        self._declined: dict[str, list[str]] = {}  # queue -> what this worker lacks for it
        self._unhealthy: dict[str, str] = {}  # kind -> why its check failed
        self._lock = threading.Lock()

    @property
    def kinds(self) -> list[str]:
        return [k for k in HARDWARE_KINDS if queue_for(k) in self.base]

    def refresh(self, sets: Iterable[Mapping[str, Any]]) -> bool:
        """Take the coordinator's requirement sets; True when the queues to consume changed."""
        routes: dict[str, dict[str, Any]] = {}
        declined: dict[str, list[str]] = {}
        for entry in sets:
            queue, hardware = str(entry.get("queue") or ""), str(entry.get("hardware") or "")
            try:
                requires = check_requires(entry.get("requires"))
            except RequirementError as exc:
                log.warning("ignoring requirement set %s: %s", queue, exc)
                continue
            if hardware not in HARDWARE_KINDS or queue_for(hardware) not in self.base or not requires:
                continue
            if queue != route_queue(hardware, requires):
                log.warning("ignoring requirement set %s: its name does not match its requirements", queue)
                continue
            missing = unmet(self.profile, self.tags, hardware, requires)
            if missing:
                declined[queue] = missing
            else:
                routes[queue] = dict(entry)
        with self._lock:
            changed = set(routes) != set(self._routes)
            self._routes, self._declined = routes, declined
        if changed:
            log.info("requirement queues: %s", ", ".join(f"{q} ({e.get('label', '')})" for q, e in routes.items()) or "none")
        return changed

    def set_health(self, kind: str, reason: str | None) -> bool:
        """Record a kind's health check verdict (None: passed); True when it changed."""
        with self._lock:
            before = self._unhealthy.get(kind)
            if reason is None:
                self._unhealthy.pop(kind, None)
            else:
                self._unhealthy[kind] = reason
            return before != reason

    def unhealthy(self) -> dict[str, str]:
        with self._lock:
            return dict(self._unhealthy)

    def desired(self) -> list[str]:
        """The queues to consume now (the resource guard's verdict is applied on top)."""
        with self._lock:
            queues = [*self.base, *self._routes]
            sick = set(self._unhealthy)
        return [q for q in queues if kind_of_queue(q) not in sick]

    def report(self) -> dict[str, Any]:
        """For the heartbeat: tags, requirement queues taken and declined (with what is lacking), failed checks."""
        with self._lock:
            return {
                "tags": list(self.tags),
                "routes": [{"queue": q, "label": e.get("label", "")} for q, e in self._routes.items()],
                "declined": {q: m for q, m in self._declined.items()},
                "unhealthy": dict(self._unhealthy),
            }
