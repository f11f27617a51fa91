"""Admission with reservations: a worker starts a test only when the memory it declares
(``TestSpec.memory_gb``: the suite's value, or the estimate from its family and batch
size) fits what is left after the tests it already runs.

Two pools: the device memory of the worker's GPUs for cuda and rocm tests (the largest
GPU's memory, as ``memory_capacity_for`` says), and host memory for every other kind. A
test that can never fit (more than the pool holds) is not this module's business: the
worker hands it back to its queue for a bigger worker (dtf.worker). A test that fits the
pool but not what is free now waits, holding its task slot, until a running test ends and
releases its reservation; releases happen on every end (pass, fail, timeout, kill,
exception) because ``hold`` is a context manager. A test with no declared memory, or a
pool of unknown size, reserves nothing.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

__all__ = ["Reservations", "pool_of"]

_DEVICE_KINDS = ("cuda", "rocm")


def pool_of(kind: str) -> str:
    return f"device:{kind}" if kind in _DEVICE_KINDS else "host"


class Reservations:
    """GiB reserved per pool; ``capacity(kind)`` gives the pool's size (None: unknown)."""

    def __init__(self, capacity: Callable[[str], float | None]) -> None:
        self._capacity = capacity
        self._held: dict[str, float] = {}
        self._waiting: dict[str, int] = {}
        self._cond = threading.Condition()

    def fits_at_all(self, kind: str, gb: float) -> bool:
        cap = self._capacity(kind)
        return cap is None or not gb or gb <= cap

    @contextmanager
    def hold(self, kind: str, gb: float) -> Iterator[None]:
        """Reserve ``gb`` in the kind's pool for the duration, waiting until it fits."""
        cap = self._capacity(kind)
        if cap is None or not gb or gb <= 0:
            yield
            return
        pool = pool_of(kind)
        with self._cond:
            self._waiting[pool] = self._waiting.get(pool, 0) + 1
            try:
                # Nothing held: it runs even when it alone exceeds the pool (the hand-back
                # decided that it may run here).
                self._cond.wait_for(lambda: self._held.get(pool, 0.0) == 0.0 or self._held.get(pool, 0.0) + gb <= cap + 1e-9)
            finally:
                self._waiting[pool] -= 1
            self._held[pool] = self._held.get(pool, 0.0) + gb
        try:
            yield
        finally:
            with self._cond:
                left = self._held.get(pool, 0.0) - gb
                self._held[pool] = left if left > 1e-9 else 0.0
                self._cond.notify_all()

    def report(self) -> dict[str, Any]:
        """For the heartbeat: GiB held and tests waiting, per pool."""
        with self._cond:
            pools = sorted(set(self._held) | set(self._waiting))
            return {p: {"held_gb": round(self._held.get(p, 0.0), 3), "waiting": self._waiting.get(p, 0)} for p in pools}
