"""The embedded default: coordinator and a Celery worker in this process on the in-memory
transport, writing to a local DuckDB file. The same coordinator, task and runner code as
a distributed deployment; only the transport differs.
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

from .app import DtfApp
from .celery_worker import AssembledWorker, assemble_worker
from .coordinator import Coordinator
from .errors import DtfError
from .model import HardwareProfile
from .store import open_store
from .worker import WorkerRuntime

__all__ = ["EmbeddedCluster"]

log = logging.getLogger("dtf.embedded")


class EmbeddedCluster:
    """Start with ``with EmbeddedCluster(app, ...) as cluster:``; stops both threads on exit."""

    def __init__(
        self,
        app: DtfApp,
        *,
        queues: Sequence[str],
        workers: int = 2,
        profile: HardwareProfile | None = None,
        db_path: str | None = None,
    ) -> None:
        settings = app.settings
        if not settings.embedded:
            raise DtfError("EmbeddedCluster needs the in-memory broker (memory://)")
        self.app = app
        self.queues = list(queues)
        self.concurrency = max(1, workers)
        self.store = open_store(db_path or settings.db_path, data_path=settings.data_path or None,
                                password=settings.db_password)
        kinds = {q.split(".", 1)[1] for q in self.queues if q.count(".") == 1}
        self.coordinator = Coordinator(app, self.store, servable=kinds)
        self.runtime = WorkerRuntime(app, worker_id="dtf-embedded@local", queues=self.queues, profile=profile)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._worker: AssembledWorker | None = None
        self.error: BaseException | None = None

    def __enter__(self) -> "EmbeddedCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        t = threading.Thread(target=self._serve, args=(ready,), name="dtf-coordinator", daemon=True)
        t.start()
        self._threads.append(t)
        if not ready.wait(30) :
            raise DtfError(f"embedded coordinator did not start: {self.error}")
        self._worker = assemble_worker(self.app, self.runtime, concurrency=self.concurrency, embedded=True)
        self._worker.start()

    def _serve(self, ready: threading.Event) -> None:
        try:
            self.coordinator.serve(self._stop, ready)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the caller
            self.error = exc
            log.exception("embedded coordinator stopped")
            ready.set()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self.store.close()
