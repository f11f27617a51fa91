"""A wall-clock limit on pure-Python work in the calling thread, such as rendering a template.

When the time is up, `TimeLimitExceeded` is raised inside that thread at its next bytecode
boundary (CPython's ``PyThreadState_SetAsyncExc``), so it works in any thread, unlike
SIGALRM. A loop in Python code stops within milliseconds of the deadline; one long call
into C (a huge string operation, say) stops only when it returns, which is why the template
sandbox also bounds what a single operation may build. One daemon thread serves every
limit in the process and sleeps while none is set.

    with time_limit(10.0):
        render()  # raises TimeLimitExceeded after 10 s
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["TimeLimitExceeded", "time_limit"]


class TimeLimitExceeded(BaseException):
    """The limited work ran past its deadline. A BaseException, so that no ``except
    Exception`` inside the limited code can swallow it."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    # None clears an exception that was set but not yet raised.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None if exc is None else ctypes.py_object(exc))


class _Watchdog:
    """Deadlines of limited blocks, and the thread that fires them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: dict[int, tuple[int, float]] = {}  # token -> (thread id, deadline)
        self._tokens = 0
        self._thread: threading.Thread | None = None
        self._sleep_until: float | None = None  # when the thread wakes next; None: when notified

    def add(self, seconds: float) -> int:
        with self._cond:
            deadline = time.monotonic() + seconds
            # Wake the thread only when it would sleep past the new deadline: a wake-up per
            # limited block was an eighth of a template render.
            wake = self._sleep_until is None or deadline < self._sleep_until
            self._tokens += 1
            self._deadlines[self._tokens] = (threading.get_ident(), deadline)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dtf-deadline", daemon=True)
                self._thread.start()
            elif wake:
                self._cond.notify()
            return self._tokens

    def remove(self, token: int) -> bool:
        """Whether the block ended in time. When its deadline has fired, an exception not yet
        raised is cleared here, so it can never surface after the block."""
        with self._cond:
            if self._deadlines.pop(token, None) is not None:
                return True
            _raise_in(threading.get_ident(), None)
            return False

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (thread_id, deadline) in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[token]  # under the lock: remove() sees it fired
                        _raise_in(thread_id, TimeLimitExceeded)
                soonest = min((d for _, d in self._deadlines.values()), default=None)
                self._sleep_until = soonest
                self._cond.wait(None if soonest is None else max(soonest - now, 0.001))


_WATCHDOG = _Watchdog()  # process-wide on purpose: one sleeping thread, started on first use


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TimeLimitExceeded in this thread if the block runs longer than ``seconds``
    (None or 0: no limit)."""
    if not seconds or seconds <= 0:
        yield
        return
    token = _WATCHDOG.add(seconds)
    try:
        yield
    finally:
        if not _WATCHDOG.remove(token):
            raise TimeLimitExceeded(f"over the {seconds:g} s limit")
