"""kombu's in-memory transport for the embedded mode, with waits cut into short slices.

A Celery worker on a polled transport checks for shutdown between calls to
``drain_events(timeout=2.0)``; on the in-memory transport that call returns only on a
message or after the full 2 s, so stopping `dtf run`'s worker took up to 2 s after the
last test. Every caller of drain_events loops on socket.timeout, so returning it after at
most SLICE_S changes nothing but how soon a stop is seen.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import memory

__all__ = ["Transport", "SLICE_S"]

SLICE_S = 0.1


class Transport(memory.Transport):
    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:
        if timeout is not None and timeout > SLICE_S:
            timeout = SLICE_S
        return super().drain_events(connection, timeout=timeout)
