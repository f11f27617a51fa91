"""Results that leave a worker across a broker failover: publish with backoff, replay the
spool while the worker runs.

A finished result is written to the worker's spool first (``WorkerRuntime.publish_result``),
handed to the ``ResultSender`` thread and deleted once published. ``publish_with_backoff`` tries the app's pooled producer once,
then fresh connections (a fresh connection asks the Sentinels for the master again; a
pooled one still points at the dead master) with growing waits, for ``deadline_s``. A
result still unpublished then stays in the spool, and ``SpoolReplayer`` publishes it as
soon as the broker takes writes again: a Redis master failover costs the seconds of the
failover, not a worker restart and a re-run of the test.

The spool is shared by the sender and the replayer: ``Spool.claim`` hands each file to one
publisher at a time, so a result is never published twice by one worker for that reason.
``RecentResults`` does publish again, on purpose, what went out in the seconds before a
lost connection: a Sentinel failover can drop the old master's last writes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

log = logging.getLogger("dtf.worker")

__all__ = ["Spool", "SpoolReplayer", "RecentResults", "ResultSender", "publish_with_backoff", "PUBLISH_DEADLINE_S", "REPLAY_EVERY_S",
           "RESEND_WINDOW_S"]

PUBLISH_DEADLINE_S = 20.0  # how long the sender keeps trying before the replayer takes over
REPLAY_EVERY_S = 2.0  # how often the replayer looks at the spool while the worker runs
FIRST_WAIT_S = 0.2
MAX_WAIT_S = 2.0
# Redis replicates asynchronously: a result the old master took in its last moments may never
# reach the replica the Sentinels promote. After a reconnect a worker publishes again what it
# published this long before it lost the connection (the coordinator stores a result once).
RESEND_WINDOW_S = 10.0


def publish_with_backoff(publish: Callable[[bool], None], *, deadline_s: float = PUBLISH_DEADLINE_S,
                         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> int:
    """Call ``publish(fresh)`` until it returns: first with ``fresh=False`` (the pooled
    producer), then with ``fresh=True`` (a new connection) after waits of 0.2 s doubling up
    to 2 s, until ``deadline_s`` has passed; then the last error is raised. Returns the
    number of failed tries before the one that worked."""
    start = clock()
    wait = FIRST_WAIT_S
    failures = 0
    while True:
        try:
            publish(failures > 0)
            return failures
        except Exception as exc:  # noqa: BLE001 - any broker failure: try again until the deadline
            failures += 1
            if clock() - start + wait > deadline_s:
                raise
            if failures == 1:
                log.info("publishing a result failed (%s); retrying with backoff", _first_line(exc))
            sleep(wait)
            wait = min(MAX_WAIT_S, wait * 2)


class RecentResults:
    """The result bodies a worker published lately, for ``since_loss`` after a reconnect.

    Bounded by age (30 s) and count (4,000 results: a result body is at most a few hundred
    KB, its text fields capped by dtf.wire; typically a few KB): it only has to cover the
    seconds before a broker connection drops, which the consumer notices at once."""

    def __init__(self, *, window_s: float = RESEND_WINDOW_S, keep_s: float = 30.0, max_items: int = 4_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.keep_s = keep_s
        self._clock = clock
        self._items: deque[tuple[float, Mapping[str, Any]]] = deque(maxlen=max_items)
        self._lock = threading.Lock()
        self.lost_at: float | None = None

    def add(self, body: Mapping[str, Any]) -> None:
        now = self._clock()
        with self._lock:
            self._items.append((now, body))
            while self._items and self._items[0][0] < now - self.keep_s:
                self._items.popleft()

    def mark_lost(self) -> None:
        """The broker connection dropped now (the first drop counts until ``since_loss``)."""
        with self._lock:
            if self.lost_at is None:
                self.lost_at = self._clock()

    def since_loss(self) -> list[Mapping[str, Any]]:
        """What was published from ``window_s`` before the last loss on (each once), and forget the loss."""
        with self._lock:
            if self.lost_at is None:
                return []
            since, self.lost_at = self.lost_at - self.window_s, None
            taken = [body for at, body in self._items if at >= since]
            self._items = deque(((at, body) for at, body in self._items if at < since), maxlen=self._items.maxlen)
            return taken


class Spool:
    """One worker's spool folder: whole files only, each claimed by one publisher at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._claimed: set[Path] = set()
        self._lock = threading.Lock()

    def new_path(self) -> Path:
        return self.folder / f"{uuid.uuid4().hex}.json"

    def write(self, path: Path, body: Mapping[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a crash leaves either nothing or a whole file

    @contextmanager
    def claim(self, path: Path) -> Iterator[bool]:
        """True when this caller holds ``path`` until the block ends; False when another does."""
        with self._lock:
            if path in self._claimed:
                held = False
            else:
                self._claimed.add(path)
                held = True
        try:
            yield held
        finally:
            if held:
                with self._lock:
                    self._claimed.discard(path)

    def try_claim(self, path: Path) -> bool:
        """``claim`` without the block: True when this caller now holds ``path`` (``release`` it)."""
        with self._lock:
            if path in self._claimed:
                return False
            self._claimed.add(path)
            return True

    def release(self, path: Path) -> None:
        with self._lock:
            self._claimed.discard(path)

    def waiting(self) -> list[Path]:
        return sorted(self.folder.glob("*.json"))

    def __len__(self) -> int:
        return len(self.waiting())


class ResultSender:
    """Publishes finished results: in the test's own thread when the broker takes it at once,
    else on a thread of its own that retries with backoff, so a test's slot never waits out
    a broker failover and takes its next test.

    Measured in a worker's process (bench notes in docs/performance.md): handing every result
    to the thread saved 0.15 ms of wall per test and cost 0.15 ms of CPU (a thread handoff),
    a loss for CPU-bound suites; publishing inline first costs what a synchronous publish
    costs, and only a result the broker refuses pays the handoff.

    Each result is already in the spool and claimed when it is handed over (``send``), so a
    worker killed before the publish replays it at its next start. Results waiting together
    go out in one pipelined batch (``publish_many(bodies, fresh)``); a batch that still fails
    at ``deadline_s`` is released to the spool replayer."""

    def __init__(self, spool: Spool, publish_many: Callable[[list[Mapping[str, Any]], bool], None], *,
                 sent: Callable[[Mapping[str, Any]], None] = lambda body: None,
                 deadline_s: float = PUBLISH_DEADLINE_S, max_batch: int = 200) -> None:
        self._spool = spool
        self._publish_many = publish_many
        self._sent = sent
        self.deadline_s = deadline_s
        self._max_batch = max_batch
        self._pending: deque[tuple[Path, Mapping[str, Any], str]] = deque()
        self._cond = threading.Condition()
        self._busy = 0  # results taken off the queue and not yet published or released
        self._thread: threading.Thread | None = None

    def send(self, path: Path, body: Mapping[str, Any], what: str) -> None:
        """Publish a spooled result that this caller claimed (``Spool.try_claim``): at once, in
        the caller's thread, when nothing waits before it (one try on the pooled producer);
        else, or when that try fails, on the sender's thread, which retries with backoff."""
        with self._cond:
            idle = not self._pending and not self._busy
        if idle:
            try:
                self._publish_many([body], False)
            except Exception:  # noqa: BLE001 - the broker is away: the sender retries, the slot goes on
                pass
            else:
                self._done(path, body)
                return
        with self._cond:
            self._pending.append((path, body, what))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name="dtf-result-sender")
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every result handed over is published or back in the spool's hands."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    if not self._cond.wait(30.0) and not self._pending:
                        self._thread = None  # idle: the next send starts a new thread
                        return
                batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
                self._busy = len(batch)
            try:
                self._publish(batch)
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()

    def _publish(self, batch: list[tuple[Path, Mapping[str, Any], str]]) -> None:
        bodies = [body for _, body, _ in batch]
        try:
            publish_with_backoff(lambda fresh: self._publish_many(bodies, fresh), deadline_s=self.deadline_s)
        except Exception as exc:  # noqa: BLE001 - kept in the spool: the replayer publishes them
            for path, _, what in batch:
                self._spool.release(path)
            log.warning("results of %s kept in the spool (broker unavailable: %s); published when it is back",
                        ", ".join(what for _, _, what in batch[:3]) + (" ..." if len(batch) > 3 else ""),
                        _first_line(exc))
            return
        for path, body, _ in batch:
            self._done(path, body)

    def _done(self, path: Path, body: Mapping[str, Any]) -> None:
        path.unlink(missing_ok=True)
        self._spool.release(path)
        self._sent(body)


class SpoolReplayer:
    """A daemon thread that publishes what the spool holds every ``every_s`` while the worker
    runs (``replay`` is the runtime's ``replay_spool``)."""

    def __init__(self, replay: Callable[[], int], *, every_s: float = REPLAY_EVERY_S) -> None:
        self._replay = replay
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "SpoolReplayer":
        self._thread = threading.Thread(target=self._loop, daemon=True, name="dtf-spool-replay")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                sent = self._replay()
            except Exception as exc:  # noqa: BLE001 - the replayer must outlive any broker error
                log.info("spool replay failed (%s); trying again in %g s", _first_line(exc), self._every_s)
                continue
            if sent:
                log.info("published %d spooled result%s", sent, "" if sent == 1 else "s")


def _first_line(exc: BaseException) -> str:
    from .lognoise import one_line  # without the redis-py client reprs a Sentinel error carries

    return one_line(str(exc)) or type(exc).__name__
