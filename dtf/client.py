"""Talking to the coordinator over the broker: what the CLI, the dashboard and workers use.

Requests go to the ``dtf.coordinator`` queue through dtf.bus (``publish_control``, and
``request`` for the ones that wait for an answer). This module imports neither DuckDB nor
Arrow, so clients and workers start without them; a client made with ``for_settings``
(the CLI's) does not import Celery either: a tenth of a second of every command's start.
"""

from __future__ import annotations

import logging
import time
import uuid
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from kombu import Connection, Producer

from .bus import QUERY_OPS, dumps, first_line, publish_control, request, submit_body, task_payload, wire_format
from .bus.protocol import chunk_cap
from .errors import BrokerError, DtfError, PayloadTooLarge
from .model import RenderedTest
from .settings import Settings

if TYPE_CHECKING:
    from .app import DtfApp

__all__ = ["CoordinatorClient", "BrokerLink"]

log = logging.getLogger("dtf.client")


class BrokerLink:
    """What a client uses of a dtf Celery app (dtf.app.make_app), made without Celery: the
    settings, a fresh broker connection with the app's options, and its wire format."""

    def __init__(self, settings: Settings) -> None:
        from .bus import broker_options
        from .signing import serializer_for
        from .wire import install_transport_guard

        self.settings = settings
        self._broker = broker_options(settings)
        install_transport_guard(settings.max_payload_bytes)  # as make_app does: a malformed reply never reaches kombu
        serializer = serializer_for(settings)
        self.conf = SimpleNamespace(task_serializer=serializer, accept_content=[serializer])

    def connection_for_write(self, *, transport_options: Mapping[str, Any] | None = None) -> Connection:
        """What Celery's ``app.connection_for_write()`` returns for the same settings."""
        broker = self._broker
        return Connection(
            broker.url, userid=broker.user if broker.password else None, password=broker.password,
            ssl=broker.use_ssl, transport_options=dict(broker.transport_options, **(transport_options or {})), connect_timeout=5,
        )


class CoordinatorClient:
    """What the CLI and workers use to talk to the coordinator over the broker."""

    @classmethod
    def for_settings(cls, settings: Settings, *, timeout_s: float = 15.0) -> "CoordinatorClient":
        """A client that talks to a broker without importing Celery (the in-process broker of
        the embedded mode lives in its Celery app: make the client from that app instead)."""
        if settings.embedded:
            from .app import make_app

            return cls(make_app(settings), timeout_s=timeout_s)
        return cls(BrokerLink(settings), timeout_s=timeout_s)

    def __init__(self, app: "DtfApp | BrokerLink", *, timeout_s: float = 15.0) -> None:
        self.app = app
        self.timeout_s = timeout_s
        settings = app.settings
        self.broker_name = settings.safe_broker
        self.max_payload = settings.max_payload_bytes
        self.failover = bool(settings.sentinels)

    def _connection(self) -> Connection:
        conn = self.app.connection_for_write()
        try:
            conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2, timeout=5)
        except Exception as exc:  # noqa: BLE001 - kombu raises many kinds
            conn.release()
            raise BrokerError(f"cannot reach broker {self.broker_name}: {first_line(exc)}") from None
        return conn

    def send(self, body: Mapping[str, Any]) -> None:
        """Fire and forget a control message."""
        with self._connection() as conn:
            publish_control(Producer(conn.channel(), serializer=wire_format(self.app)[0]), body)

    def call(self, op: str, *, timeout_s: float | None = None, **params: Any) -> Any:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if params.get("wait_s"):
            timeout += float(params["wait_s"])  # the coordinator may hold the answer this long
        if not (self.failover and op in QUERY_OPS):
            return self._call_many([dict(params, op=op)], timeout_s=timeout)
        # With Sentinels a master failover takes seconds; a query rides it out within its timeout.
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._call_many([dict(params, op=op)], timeout_s=max(0.5, deadline - time.monotonic()))
            except DtfError as exc:
                if not isinstance(exc, BrokerError) or time.monotonic() >= deadline - 0.5:
                    raise
                log.info("broker unavailable during %s (%s); retrying", op, first_line(exc))
                time.sleep(0.5)
            except Exception as exc:  # noqa: BLE001 - kombu and redis raise many kinds
                if time.monotonic() >= deadline - 0.5:
                    raise BrokerError(f"lost the broker {self.broker_name}: {first_line(exc)}") from None
                log.info("broker connection lost during %s (%s); retrying", op, first_line(exc))
                time.sleep(0.5)

    def _call_many(self, bodies: Iterable[dict[str, Any]], *, timeout_s: float | None = None) -> Any:
        """Publish messages whose first carries reply_to, and wait for the one reply."""
        serializer, accept = wire_format(self.app)
        with self._connection() as conn:
            reply = request(conn, bodies, serializer=serializer, accept=accept,
                            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
                            max_bytes=self.max_payload * 8, broker_name=self.broker_name)
        if not reply.get("ok"):
            raise DtfError(str(reply.get("error") or "coordinator error"))
        return reply.get("data")

    def submit(self, run: Mapping[str, Any], tests: Sequence[RenderedTest], *, chunk_size: int = 200) -> str:
        """Send a run in chunks (each under the payload cap); returns the run id once stored.

        Chunk by chunk: each chunk's tests are taken from ``tests`` (a dtf.submission.RenderedSuite
        renders them then), checked, sent and dropped, so a large suite is never in memory whole.
        A chunk holds at most ``chunk_size`` tests and dtf.bus.protocol.chunk_cap bytes of them;
        as chunks are cut by bytes while rendering, each but the last says "one more at least"
        (dtf.bus.protocol.submit_body)."""
        submit_id, total = uuid.uuid4().hex, len(tests)
        cap = chunk_cap(self.max_payload)

        def pieces() -> Iterator[list[dict[str, Any]]]:
            piece: list[dict[str, Any]] = []
            size = 0
            for start in range(0, total, chunk_size):
                for test, test_size in self._checked(run, tests[start:start + chunk_size]):
                    if piece and (len(piece) >= chunk_size or size + test_size > cap):
                        yield piece
                        piece, size = [], 0
                    piece.append(test)
                    size += test_size
            yield piece

        def bodies() -> Iterator[dict[str, Any]]:
            held: list[dict[str, Any]] | None = None
            index = 0
            for piece in pieces():
                if held is not None:
                    yield submit_body(submit_id, run, index, index + 2, held)
                    index += 1
                held = piece
            yield submit_body(submit_id, run, index, index + 1, held or [])

        data = self._call_many(bodies(), timeout_s=max(self.timeout_s, 30.0 + total / 500))
        return str(data["run_id"])

    def check_payloads(self, run: Mapping[str, Any], tests: Iterable[RenderedTest]) -> int:
        """PayloadTooLarge for the first test over the cap (no broker call); the number of
        tests checked. One at a time: nothing of them is kept."""
        checked = 0
        for test in tests:
            self._checked(run, [test])
            checked += 1
        return checked

    def _checked(self, run: Mapping[str, Any], tests: Iterable[RenderedTest]) -> list[tuple[dict[str, Any], int]]:
        """The tests as dicts with their payload sizes; PayloadTooLarge for the first one over the cap."""
        checked = []
        for test in tests:
            t = test.to_dict()
            # Measure what the coordinator will publish (the task payload around the test,
            # at the highest attempt number), so a test under the cap here is publishable there.
            size = len(dumps(task_payload(str(run["run_id"]), int(t["spec"].get("retries", 0)) + 1, t)))
            if size > self.max_payload:
                raise PayloadTooLarge(
                    f"test {t['spec']['test_id']}: rendered payload is {size} bytes, over the {self.max_payload}-byte cap"
                )
            checked.append((t, size))
        return checked
