"""The one place a Celery worker is assembled around a ``WorkerRuntime``.

``dtf worker`` (a process of its own, blocking until a signal) and the embedded cluster of
``dtf run`` (a thread next to the coordinator) both call ``assemble_worker``: the
execution profile's prefetch multiplier, the runtime as the run_test handler, the
resource guard's consumer bootstep, the spool replay (at start and while running) and the concurrency are set the
same way for both.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Optional

from . import lognoise
from .app import DtfApp, quiet_cancel_warning

from .errors import DtfError
from .resend import SpoolReplayer
from .state import remove_worker_record, write_worker_record
from .worker import WorkerRuntime

__all__ = ["POOLS", "LOG_LEVELS", "AssembledWorker", "assemble_worker", "check_worker_options"]

POOLS = ("threads", "prefork", "solo")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def check_worker_options(*, pool: str = "threads", loglevel: str = "INFO", concurrency: Optional[int] = None) -> None:
    """What Celery would otherwise refuse with a traceback, refused as one DtfError line."""
    if pool not in POOLS:
        raise DtfError(f"--pool: unknown pool {pool!r} (expected one of {', '.join(POOLS)})")
    if loglevel.upper() not in LOG_LEVELS:
        raise DtfError(f"--loglevel: unknown level {loglevel!r} (expected one of {', '.join(LOG_LEVELS)})")
    if concurrency is not None and concurrency < 1:
        raise DtfError(f"--concurrency: expected at least 1, got {concurrency}")


class AssembledWorker:
    """A runtime wired into its Celery app, and the options of the Celery worker that will
    consume for it (built when it starts: building Celery's full worker sets process-wide
    state). ``serve`` runs it in this process until a signal stops it; ``start``/``stop``
    run it in a thread (the embedded cluster)."""

    def __init__(self, app: DtfApp, runtime: WorkerRuntime, options: dict[str, Any], *, embedded: bool, replayed: int) -> None:
        self.app = app
        self.runtime = runtime
        self.options = options
        self.embedded = embedded
        self.replayed = replayed
        self.controller: Any = None
        self._thread: Optional[threading.Thread] = None
        self._control_stop = threading.Event()
        self._control: Optional[threading.Thread] = None
        self._replayer: Optional[SpoolReplayer] = None

    def _start_control(self, interval_s: Optional[float] = None) -> None:
        """Routes, cancels and health re-checks from a thread of their own (dtf.worker_control)."""
        from .client import CoordinatorClient
        from .worker_control import WorkerControl

        client = CoordinatorClient(self.app, timeout_s=5.0)
        control = WorkerControl(self.runtime, lambda: client, interval_s=interval_s)
        self._control = threading.Thread(target=control.run_forever, args=(self._control_stop,), daemon=True,
                                         name="dtf-worker-control")
        self._control.start()

    @property
    def concurrency(self) -> int:
        return self.runtime.concurrency

    def build(self) -> Any:
        """The Celery worker: standalone, Celery's full worker (signal handlers, its own event
        heartbeats); embedded, a bare WorkController on this process's default app."""
        if self.controller is None:
            if self.embedded:
                # The thread pool's tracer looks run_test up in the default app (new threads have no
                # current app), and run_test is registered with this app only (shared=False).
                self.app.set_default()
                self.controller = self.app.WorkController(**self.options)
            else:
                self.controller = self.app.Worker(**self.options)
            quiet_cancel_warning()  # after Celery's logging setup, which lets every such warning through
            lognoise.install()
        return self.controller

    def serve(self, state_dir: str | Path) -> None:
        """Heartbeat to the coordinator, answer maintenance tasks (dtf.maintenance), leave a worker
        record for `dtf worker-health`, and consume until Celery stops; a last heartbeat says "offline"."""
        from .maintenance import MaintenanceListener  # `dtf tasks run` requests (docs/maintenance.md)

        maintenance = MaintenanceListener(self.runtime)
        maintenance.start()
        maintenance.ready.wait(5.0)  # a worker that heartbeats is reachable by `dtf tasks run`
        stop = threading.Event()
        beats = threading.Thread(target=self.runtime.heartbeat_forever, args=(stop,), daemon=True, name="dtf-heartbeat")
        beats.start()
        self._start_control()
        replayer = self.runtime.spool_replayer().start()  # results a failover left spooled, while running
        try:
            try:
                record = write_worker_record(state_dir, self.runtime.worker_id, list(self.runtime.queues))
            except OSError as exc:
                raise DtfError(f"DTF_STATE_DIR {state_dir}: cannot write: {exc.strerror or exc}") from None
            try:
                self.build().start()
            finally:
                remove_worker_record(record)
        finally:
            self.runtime.flush_results(10.0)  # what is left stays spooled for the next start
            maintenance.stop()
            replayer.stop()
            stop.set()
            self._control_stop.set()
            beats.join(timeout=5)  # lets the last heartbeat say "offline"

    def start(self) -> None:
        """Consume in a daemon thread."""
        self._thread = threading.Thread(target=self.build().start, name="dtf-worker", daemon=True)
        self._thread.start()
        self._start_control(interval_s=0.5)  # in-process: asking the coordinator costs nothing
        self._replayer = self.runtime.spool_replayer().start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._control_stop.set()
        if self._replayer is not None:
            self._replayer.stop()
        if self.controller is not None:
            self.controller.stop(in_sighandler=False)
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self.runtime.flush_results(timeout_s)


def assemble_worker(
    app: DtfApp,
    runtime: WorkerRuntime,
    *,
    concurrency: Optional[int] = None,
    pool: str = "threads",
    loglevel: str = "INFO",
    embedded: bool = False,
) -> AssembledWorker:
    """Wire ``runtime`` into ``app`` (the profile's prefetch, the run_test handler, the guard's
    bootstep when limits are set, the spool replayed, the concurrency) and choose the Celery
    worker's options. Standalone (``embedded=False``): Celery's full worker as `dtf worker`
    runs it. Embedded: a bare WorkController, without Celery's heartbeats, logging warnings
    only."""
    check_worker_options(pool=pool, loglevel=loglevel, concurrency=concurrency)
    app.conf.worker_prefetch_multiplier = runtime.execution.prefetch_multiplier
    runtime.install()
    # Always: the step applies the guard's verdict, requirement queues and the health gate.
    app.steps["consumer"].add(runtime.consumer_step())
    if runtime.health_checks:
        from .worker_control import initial_checks

        initial_checks(runtime)  # before consuming: a kind whose check fails is not consumed
    replayed = runtime.replay_spool()
    runtime.concurrency = concurrency or runtime.concurrency
    queues = runtime.routing.desired() or list(runtime.queues)  # Celery consumes every queue when given none
    runtime.consumed = set(queues)
    options: dict[str, Any]
    if embedded:
        options = dict(pool_cls=pool, concurrency=runtime.concurrency, queues=queues, hostname=runtime.worker_id,
                       without_mingle=True, without_gossip=True, without_heartbeat=True, loglevel="WARNING",
                       ready_callback=None)
    else:
        options = dict(hostname=runtime.worker_id, queues=queues, concurrency=runtime.concurrency, pool=pool,
                       loglevel=loglevel, without_mingle=True, without_gossip=True, quiet=True)
    logging.getLogger("dtf.worker").debug("assembled %s: queues %s, concurrency %d, prefetch x%d", runtime.worker_id,
                                          ", ".join(queues), runtime.concurrency, runtime.execution.prefetch_multiplier)
    return AssembledWorker(app, runtime, options, embedded=embedded, replayed=replayed)
