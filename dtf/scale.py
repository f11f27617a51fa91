"""How many workers each queue needs: backlog, utilisation and a recommendation.

Pure: the caller gathers, per queue, the queued tests' predicted durations (dtf/predict.py;
None where nothing is known), the tests running now, and the live workers' slots. The rule,
documented here and in the README so an operator can predict it:

- ``drain_s`` = backlog seconds / live slots (unknown durations count as
  ``unknown_test_s``); ``needed`` = the slots that drain the backlog within ``target_s``;
- **add** ``ceil((needed - slots) / slots_per_worker)`` workers when the backlog would take
  longer than ``target_s`` x (1 + ``band``), or when tests wait and no worker serves the queue;
- **remove** workers when utilisation (running / slots) is under ``low_utilisation`` and the
  backlog would drain in under ``target_s`` x ``band``, keeping ``min_workers`` and enough
  slots for what runs and waits; never on a queue with nothing known about its workers;
- **hold** otherwise, and always within ``cooldown_s`` of the queue's last change (the
  hysteresis band and the cool-down keep an autoscaler from flapping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
import json
from typing import Any, Mapping, Sequence

__all__ = ["QueueLoad", "ScalePolicy", "Advice", "advise", "loads_from_rows", "LIVE_AFTER_S"]

LIVE_AFTER_S = 45.0  # a worker whose last heartbeat is older than this is not counted (the coordinator's offline rule)


@dataclass(frozen=True)
class QueueLoad:
    queue: str
    queued_s: Sequence[float | None] = ()  # predicted duration of each waiting test
    running: int = 0  # tests running now
    worker_slots: Sequence[int] = ()  # one entry per live worker: its concurrency
    last_change_age_s: float | None = None  # seconds since workers were last added or removed


@dataclass(frozen=True)
class ScalePolicy:
    target_s: float = 600.0  # drain the backlog within this
    band: float = 0.25  # hysteresis: act only outside target x (1 +- band)
    low_utilisation: float = 0.5
    cooldown_s: float = 300.0
    min_workers: int = 0
    unknown_test_s: float = 60.0


@dataclass(frozen=True)
class Advice:
    queue: str
    action: str  # add | remove | hold
    count: int
    reason: str
    backlog_tests: int
    backlog_s: float
    workers: int
    slots: int
    running: int
    utilisation: float | None
    drain_s: float | None
    unknown: int = field(default=0)  # waiting tests whose duration is not predicted

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("queue", "action", "count", "reason", "backlog_tests", "backlog_s",
                                               "workers", "slots", "running", "utilisation", "drain_s", "unknown")}


def advise(loads: Sequence[QueueLoad], policy: ScalePolicy = ScalePolicy()) -> list[Advice]:
    return [_advise(load, policy) for load in loads]


def _advise(load: QueueLoad, p: ScalePolicy) -> Advice:
    unknown = sum(1 for s in load.queued_s if s is None)
    backlog_s = round(sum(p.unknown_test_s if s is None else max(0.0, s) for s in load.queued_s), 3)
    tests = len(load.queued_s)
    workers = len(load.worker_slots)
    slots = sum(max(0, s) for s in load.worker_slots)
    per_worker = slots / workers if workers and slots else 1.0
    utilisation = round(min(1.0, load.running / slots), 3) if slots else None
    drain_s = round(backlog_s / slots, 3) if slots else None

    def advice(action: str, count: int, reason: str) -> Advice:
        return Advice(load.queue, action, count, reason, tests, backlog_s, workers, slots, load.running,
                      utilisation, drain_s, unknown)

    needed = math.ceil(backlog_s / p.target_s) if backlog_s else 0
    if tests and not slots:
        want = max(1, math.ceil(needed / per_worker), p.min_workers)
        return advice("add", want, f"{tests} test(s) wait and no live worker serves {load.queue}")
    cooling = load.last_change_age_s is not None and load.last_change_age_s < p.cooldown_s
    if drain_s is not None and drain_s > p.target_s * (1 + p.band):
        count = math.ceil((needed - slots) / per_worker)
        if cooling:
            return advice("hold", 0, f"would add {count}, but the last change was {load.last_change_age_s:.0f} s ago "
                                     f"(cool-down {p.cooldown_s:.0f} s)")
        return advice("add", count, f"backlog drains in {drain_s:.0f} s on {slots} slot(s); target {p.target_s:.0f} s")
    if (workers > p.min_workers and utilisation is not None and utilisation < p.low_utilisation
            and (drain_s or 0.0) < p.target_s * p.band):
        keep_slots = max(needed, load.running + (1 if tests else 0))
        keep = max(p.min_workers, math.ceil(keep_slots / per_worker))
        count = workers - keep
        if count > 0:
            if cooling:
                return advice("hold", 0, f"would remove {count}, but the last change was {load.last_change_age_s:.0f} s ago "
                                         f"(cool-down {p.cooldown_s:.0f} s)")
            return advice("remove", count, f"utilisation {utilisation:.0%} and the backlog drains in {drain_s or 0:.0f} s")
    return advice("hold", 0, "backlog drains within the target" if tests else "nothing waits")


def loads_from_rows(backlog: Sequence[Mapping[str, Any]], workers: Sequence[Mapping[str, Any]], *, now: float,
                    live_after_s: float = LIVE_AFTER_S) -> list[QueueLoad]:
    """One QueueLoad per hardware queue from store rows: ``backlog`` (hardware, status,
    predicted_s) of the tests of running runs that wait or run, and ``workers`` (queues,
    state, health with its concurrency, last_seen). Queues named ``dtf.<hardware>``."""
    waiting: dict[str, list[float | None]] = {}
    running: dict[str, int] = {}
    for row in backlog:
        queue = f"dtf.{row['hardware']}"
        if row.get("status") == "running":
            running[queue] = running.get(queue, 0) + 1
        else:
            predicted = row.get("predicted_s")
            waiting.setdefault(queue, []).append(float(predicted) if isinstance(predicted, (int, float)) else None)
    slots: dict[str, list[int]] = {}
    for row in workers:
        if row.get("state") == "offline" or now - float(row.get("last_seen") or 0.0) > live_after_s:
            continue
        health = row.get("health")
        if isinstance(health, str):
            try:
                health = json.loads(health)
            except ValueError:
                health = {}
        concurrency = health.get("concurrency") if isinstance(health, dict) else None
        for queue in row.get("queues") or ():
            if str(queue).count(".") == 1:  # dtf.<hardware>, not the tag queues
                slots.setdefault(str(queue), []).append(int(concurrency) if isinstance(concurrency, int) and concurrency > 0 else 1)
    queues = sorted(set(waiting) | set(running) | set(slots))
    return [QueueLoad(q, tuple(waiting.get(q, ())), running.get(q, 0), tuple(slots.get(q, ()))) for q in queues]
