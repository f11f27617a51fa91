"""High availability: every `dtf coordinator` is a ``Candidate``. It stands by until it holds
the leader lease (dtf.ha.LeaderLock), and only then opens the DuckDB file read-write and
runs a ``Coordinator``; on losing the lease, or on a write refused by the fence, it stops
consuming, closes the file and stands by again."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..app import DtfApp
from ..bus import first_line
from ..errors import FencingError, StoreError
from ..ha import LeaderLock, NotLeader
from ..store import Store
from .loop import Coordinator
from .state import Carry

__all__ = ["Candidate"]

log = logging.getLogger("dtf.coordinator")


class Candidate:
    """One `dtf coordinator` of a high-availability group: stands by until the leader lock is
    granted, then leads (opens the DuckDB file, consumes, dispatches) until the lease is lost
    or a write is fenced, then stands by again.

    The lock runs in its own thread; the serve loop checks ``lock.is_leader()`` on every
    poll, and every write asks for the token through ``fenced_token``, which refuses it once
    the lease deadline has passed, before Redis or the database has said anything."""

    def __init__(
        self,
        app: DtfApp,
        lock: LeaderLock,
        db_path: str,
        *,
        open_store: Callable[[str], Store] = Store,
        retry_s: float = 0.2,
        on_lead: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.on_lead = on_lead  # told each new term's token (the CLI says it in one line, logging aside)
        self.lock = lock
        self.db_path = db_path
        self.open_store = open_store
        self.retry_s = retry_s
        self.terms: list[int] = []  # fencing tokens of the terms this process led, in order
        self._store: Store | None = None
        # Close the results database the moment the lease is lost, not after the broker
        # connection has been torn down: with Redis unreachable that teardown retries for
        # seconds, and the next leader cannot open the file until this process lets go.
        previous = lock.on_demoted

        def on_demoted() -> None:
            self._release_store()
            if previous is not None:
                previous()

        lock.on_demoted = on_demoted

    def _release_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()
            log.warning("%s: lease lost; results database closed", self.lock.node_id)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: stand by, lead while leader. Releases the lease on the way out."""
        lock_stop = threading.Event()
        lock_thread = threading.Thread(target=self.lock.run, args=(lock_stop,), name="dtf-leader-lock", daemon=True)
        lock_thread.start()
        try:
            while not stop.is_set():
                if self.lock.is_leader():
                    self._lead(stop)
                else:
                    stop.wait(0.05)
        finally:
            lock_stop.set()
            lock_thread.join(timeout=10)

    def fenced_token(self) -> int:
        """The token for a write, or FencingError once this node's lease has lapsed."""
        token = self.lock.token()
        if token is None:
            raise FencingError("the leader lease lapsed; write refused")
        return token

    def _lead(self, stop: threading.Event) -> None:
        store = self._open_store(stop)
        if store is None:
            return
        self._store = store
        try:
            token = self.lock.raise_token(store.max_token() + 1)
            self.terms.append(token)
            log.info("%s: leading with fencing token %d, db %s", self.lock.node_id, token, self.db_path)
            if self.on_lead is not None:
                self.on_lead(token)
            # A new term (the lease was lost and won again, as after a Redis restart without
            # its data) closed this store: leave, and lead the new term with a fresh one.
            carry = Carry()  # from one serve loop of this term to the next
            while not stop.is_set() and self.lock.is_leader() and self.lock.token() == token and not store.closed:
                self._serve_term(store, stop, carry)
        except FencingError as exc:
            log.error("%s: %s; stepping down", self.lock.node_id, exc)
            self.lock.step_down("a write was fenced")
        except NotLeader:
            pass  # the lease lapsed between opening the file and claiming the token
        finally:
            self._store = None
            store.close()
            log.info("%s: standing by (results database closed)", self.lock.node_id)

    def _serve_term(self, store: Store, stop: threading.Event, carry: Carry) -> None:
        """One serve loop; a broker failure (say, a Redis failover) restarts it from the database
        and ``carry`` (what the failure may have dropped: dtf/coordinator/dispatch.py)."""
        coordinator = Coordinator(self.app, store, token=self.fenced_token, carry=carry)
        try:
            coordinator.serve(stop, leading=self.lock.is_leader)
        except (StoreError, NotLeader):  # FencingError included: the caller steps down
            raise
        except Exception as exc:  # noqa: BLE001 - kombu and redis raise many kinds
            if store.closed:
                return  # demoted mid-loop: the store was closed under it; the caller leaves this term
            carry.lost_at = time.monotonic()
            log.warning("%s: broker connection lost (%s); reconnecting", self.lock.node_id, first_line(exc))
            stop.wait(1.0)

    def _open_store(self, stop: threading.Event) -> Store | None:
        """Open the file read-write; it stays locked while a previous leader still has it open."""
        warned = False
        while not stop.is_set() and self.lock.is_leader():
            try:
                return self.open_store(self.db_path)
            except StoreError as exc:
                if not warned:
                    log.warning("%s: elected, waiting for the results database: %s", self.lock.node_id, exc)
                    warned = True
                stop.wait(self.retry_s)
        return None
