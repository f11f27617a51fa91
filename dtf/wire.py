"""What may arrive on dtf's queues, checked before anything acts on it.

Anyone who can write to Redis can push anything onto a queue: bytes that are not JSON, JSON
that is not a kombu message, a message whose fields have the wrong types, a result with an
invented status, a heartbeat with a 10 MB hostname. Every consumer checks what it takes
against one schema per message kind (types, sizes, enums); whatever fails is acked, put on
the bounded dead-letter list ``dtf.dead`` with the reason, counted (``dtf:dead:count``,
shown by ``dtf status``) and logged once, in one line. Never a crash, a reconnect loop or a
message left at the head of its queue.

Two layers:

* ``install_transport_guard`` wraps kombu's Redis channel where it pops a raw item off a
  list (``BRPOP``/``RPOP``): an item that is not a well-formed kombu envelope (and, on a
  hardware queue, a Celery task message for ``dtf.run_test``) never reaches kombu or
  Celery, which would otherwise raise out of their event loop (a worker ends with
  "Unrecoverable error: JSONDecodeError").
* ``result_from_wire``, ``check_control``, ``heartbeat_from_wire`` and ``started_from_wire``
  check decoded bodies in the coordinator.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
from typing import Any, Mapping

from .errors import DtfError
from .model import FINAL_STATUSES, TestResult

__all__ = [
    "MessageRefused",
    "DEAD_LETTER_QUEUE",
    "DEAD_LETTER_COUNT_KEY",
    "DEAD_LETTER_MAX",
    "RESULT_STATUSES",
    "result_from_wire",
    "check_control",
    "heartbeat_from_wire",
    "started_from_wire",
    "maintenance_request_from_wire",
    "maintenance_reply_from_wire",
    "check_envelope",
    "dead_letter",
    "dead_letter_count",
    "install_transport_guard",
]

log = logging.getLogger("dtf.wire")

DEAD_LETTER_QUEUE = "dtf.dead"
DEAD_LETTER_COUNT_KEY = "dtf:dead:count"
DEAD_LETTER_MAX = 1000  # newest kept; each entry holds at most DEAD_LETTER_HEAD bytes of the message
DEAD_LETTER_HEAD = 1024

MAX_ID_CHARS = 512  # run, test, worker ids, hostnames, queue names
MAX_TEXT_CHARS = 64 * 1024  # error, stderr tail
MAX_MAP_BYTES = 256 * 1024  # metrics, a heartbeat's hardware and health, as JSON
MAX_QUEUES = 64
# What a worker may report for an attempt: flaky, cached and quarantined are the coordinator's alone.
RESULT_STATUSES = frozenset(s.value for s in FINAL_STATUSES) - {"flaky", "cached", "quarantined"}
WORKER_STATES = frozenset({"online", "constrained", "offline"})
REPLY_TO = re.compile(r"dtf\.reply\.[A-Za-z0-9_-]{1,64}")  # a reply queue, never a work queue
CONTROL_OPS = frozenset({"submit", "heartbeat", "started", "cancel"})  # plus dtf.bus.QUERY_OPS


class MessageRefused(DtfError):
    """A message failed its schema; it is dead-lettered, never acted on."""


# -- field checks -----------------------------------------------------------------------------
def _text(data: Mapping[str, Any], key: str, limit: int = MAX_ID_CHARS, *, optional: bool = False,
          empty: bool = True) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise MessageRefused(f"{key}: expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise MessageRefused(f"{key}: {len(value)} characters, over the {limit} cap")
    if not empty and not value:
        raise MessageRefused(f"{key}: empty")
    return value


def _int(data: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MessageRefused(f"{key}: expected an integer in [{low}, {high}], got {_show(value)}")
    return value


def _number(data: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MessageRefused(f"{key}: expected a finite number, got {_show(value)}")
    return float(value)


def _mapping(data: Mapping[str, Any], key: str, limit: int = MAX_MAP_BYTES) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageRefused(f"{key}: expected an object, got {type(value).__name__}")
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise MessageRefused(f"{key}: not plain JSON ({exc})") from None
    if size > limit:
        raise MessageRefused(f"{key}: {size} bytes of JSON, over the {limit} cap")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _object(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise MessageRefused(f"{what}: expected an object, got {type(body).__name__}")
    return body


# -- message kinds ------------------------------------------------------------------------------
def result_from_wire(body: Any) -> TestResult:
    """The TestResult of a ``dtf.results`` message, or MessageRefused."""
    data = _object(_object(body, "result message").get("result"), "result")
    status = _text(data, "status", 32)
    if status not in RESULT_STATUSES:
        raise MessageRefused(f"status: {_show(status)} is not a result status ({', '.join(sorted(RESULT_STATUSES))})")
    return TestResult(
        run_id=_text(data, "run_id", empty=False), test_id=_text(data, "test_id", empty=False),
        attempt=_int(data, "attempt", 1, 10_000), status=status,
        duration_s=_number(data, "duration_s"), peak_memory_mb=_number(data, "peak_memory_mb"),
        metrics=_mapping(data, "metrics"),
        error=_text(data, "error", MAX_TEXT_CHARS, optional=True),
        stderr_tail=_text(data, "stderr_tail", MAX_TEXT_CHARS, optional=True),
        worker_id=_text(data, "worker_id", optional=True) or "", hostname=_text(data, "hostname", optional=True) or "",
        hardware=_text(data, "hardware", 32, optional=True) or "",
        started_at=_number(data, "started_at"), finished_at=_number(data, "finished_at"),
    )


def check_control(body: Any, queries: frozenset[str]) -> str:
    """The op of a ``dtf.coordinator`` message whose envelope is sound, or MessageRefused:
    an object with a known op, a reply queue that is a dtf reply queue, bounded ids."""
    data = _object(body, "control message")
    op = data.get("op")
    if not isinstance(op, str) or (op not in CONTROL_OPS and op not in queries):
        raise MessageRefused(f"op: unknown coordinator operation {_show(op)}")
    reply_to = data.get("reply_to")
    if reply_to is not None and not (isinstance(reply_to, str) and REPLY_TO.fullmatch(reply_to)):
        # A reply goes where this says: it must never name a work queue or any other key.
        raise MessageRefused(f"reply_to: {_show(reply_to)} is not a dtf reply queue")
    for key in ("correlation_id", "run_id", "test_id", "worker_id", "suite_name", "baseline", "submit_id"):
        if key in data and data[key] is not None:
            _text(data, key)
    return op


def heartbeat_from_wire(body: Mapping[str, Any]) -> dict[str, Any]:
    """The worker row of a heartbeat, every field type- and size-checked, or MessageRefused."""
    data = _object(body.get("worker"), "worker")
    queues = data.get("queues") or []
    if not isinstance(queues, list) or len(queues) > MAX_QUEUES or not all(
            isinstance(q, str) and 0 < len(q) <= MAX_ID_CHARS for q in queues):
        raise MessageRefused(f"queues: expected at most {MAX_QUEUES} queue names")
    state = data.get("state") or "online"
    if state not in WORKER_STATES:
        raise MessageRefused(f"state: {_show(state)} is not a worker state ({', '.join(sorted(WORKER_STATES))})")
    return {
        "worker_id": _text(data, "worker_id", 255, empty=False),
        "hostname": _text(data, "hostname", 255, optional=True) or "",
        "platform": _text(data, "platform", 64, optional=True),
        "hardware": _mapping(data, "hardware"), "queues": list(queues), "state": state,
        "health": _mapping(data, "health"), "last_seen": _number(data, "last_seen"),
    }


def started_from_wire(body: Mapping[str, Any]) -> tuple[str, str, int]:
    return _text(body, "run_id", empty=False), _text(body, "test_id", empty=False), _int(body, "attempt", 1, 10_000)


# -- maintenance tasks (dtf.bus.maintenance) ---------------------------------------------------
MAX_KIND_CHARS = 64
MAX_PARAMS_BYTES = 64 * 1024


def maintenance_request_from_wire(body: Any, kinds: frozenset[str]) -> dict[str, Any]:
    """A maintenance request a worker may act on, or MessageRefused: a known kind, plain
    JSON params under the cap, a dtf reply queue, a deadline."""
    data = _object(body, "maintenance request")
    if data.get("op") != "maintenance":
        raise MessageRefused(f"op: {_show(data.get('op'))} is not maintenance")
    kind = _text(data, "kind", MAX_KIND_CHARS, empty=False)
    if kind not in kinds:
        raise MessageRefused(f"kind: unknown maintenance task {_show(kind)} ({', '.join(sorted(kinds))})")
    reply_to = data.get("reply_to")
    if not (isinstance(reply_to, str) and REPLY_TO.fullmatch(reply_to)):
        raise MessageRefused(f"reply_to: {_show(reply_to)} is not a dtf reply queue")
    return {"kind": kind, "params": _mapping(data, "params", MAX_PARAMS_BYTES), "reply_to": reply_to,
            "correlation_id": _text(data, "correlation_id", empty=False), "expires_at": _number(data, "expires_at")}


def maintenance_reply_from_wire(body: Any) -> dict[str, Any]:
    """One worker's answer to a maintenance request, every field checked, or MessageRefused."""
    data = _object(body, "maintenance reply")
    ok = data.get("ok")
    if not isinstance(ok, bool):
        raise MessageRefused(f"ok: expected true or false, got {_show(ok)}")
    return {"worker_id": _text(data, "worker_id", 255, empty=False), "hostname": _text(data, "hostname", 255, optional=True) or "",
            "kind": _text(data, "kind", MAX_KIND_CHARS), "ok": ok, "summary": _text(data, "summary", MAX_TEXT_CHARS),
            "details": _mapping(data, "details"), "duration_s": _number(data, "duration_s")}


# -- raw items on a Redis list ------------------------------------------------------------------
_OPTIONAL_TEXT = (str, type(None))


def check_envelope(item: bytes | str, queue: str, max_bytes: int | None = None) -> dict[str, Any]:
    """A raw list item as kombu's Redis transport stores a message, checked so that kombu and
    Celery can take it without raising; MessageRefused otherwise (an item over ``max_bytes``
    before it is parsed)."""
    if max_bytes is not None and len(item) > max_bytes:
        raise MessageRefused(f"{len(item)} bytes, over the {max_bytes}-byte cap of {queue[:64]}")
    try:
        raw = json.loads(item)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MessageRefused("not JSON") from None
    msg = _object(raw, "message")
    props = _object(msg.get("properties"), "properties")
    info = _object(props.get("delivery_info"), "properties.delivery_info")
    if not isinstance(info.get("exchange"), str) or not isinstance(info.get("routing_key"), str):
        raise MessageRefused("properties.delivery_info: exchange and routing_key must be strings")
    if not isinstance(props.get("delivery_tag"), str) or not 0 < len(props["delivery_tag"]) <= MAX_ID_CHARS:
        raise MessageRefused("properties.delivery_tag: expected a short string")
    priority = props.get("priority", 0)
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 255):
        raise MessageRefused("properties.priority: expected an integer in [0, 255]")
    for key in ("content-type", "content-encoding"):
        if not isinstance(msg.get(key), _OPTIONAL_TEXT):
            raise MessageRefused(f"{key}: expected a string")
    body = msg.get("body")
    if not isinstance(body, _OPTIONAL_TEXT):
        raise MessageRefused("body: expected a string")
    encoding = props.get("body_encoding")
    if encoding not in (None, "base64"):
        raise MessageRefused(f"properties.body_encoding: {_show(encoding)} is not base64")
    if encoding == "base64" and body:
        try:
            base64.b64decode(body.encode(), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise MessageRefused("body: not base64") from None
    headers = msg.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise MessageRefused("headers: expected an object")
    if _is_task_queue(queue):
        _check_task_headers(headers or {})
        _check_task_body(msg)
    return msg


def _is_task_queue(queue: str) -> bool:
    from .bus.protocol import CONTROL_QUEUE, RESULTS_QUEUE

    return queue.startswith("dtf.") and queue not in (CONTROL_QUEUE, RESULTS_QUEUE, DEAD_LETTER_QUEUE) and \
        not queue.startswith(("dtf.reply.", "dtf.maint."))


def _check_task_headers(headers: Mapping[str, Any]) -> None:
    """A task message (Celery protocol 2) for dtf.run_test, with the header types Celery's
    consumer reads before the body; the body is decoded (and its signature checked) later."""
    from .bus.protocol import RUN_TEST

    if headers.get("task") != RUN_TEST:
        raise MessageRefused(f"headers.task: {_show(headers.get('task'))} is not {RUN_TEST}")
    _text(headers, "id", empty=False)
    for key in ("root_id", "parent_id", "group", "shadow", "eta", "expires", "argsrepr", "kwargsrepr", "origin",
                "lang", "replaced_task_nesting"):
        value = headers.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise MessageRefused(f"headers.{key}: unexpected type {type(value).__name__}")
    for key in ("eta", "expires"):
        if headers.get(key) is not None:
            raise MessageRefused(f"headers.{key}: dtf tasks carry no {key}")
    if "retries" in headers and (not isinstance(headers["retries"], int) or isinstance(headers["retries"], bool)):
        raise MessageRefused("headers.retries: expected an integer")
    limit = headers.get("timelimit")
    if limit is not None and not (isinstance(limit, list) and len(limit) == 2 and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0) for v in limit)):
        raise MessageRefused("headers.timelimit: expected [soft, hard] seconds or nulls")
    for key in ("stamped_headers", "stamps", "group_index"):
        if headers.get(key):  # None, [] or {} as Celery writes them
            raise MessageRefused(f"headers.{key}: not used by dtf")


def _check_task_body(msg: Mapping[str, Any]) -> None:
    """A protocol 2 body, ``[args, kwargs, embed]``, when it is JSON or dtf-signed JSON.

    Other content types pass on to Celery, which refuses them (pickle, yaml...) in its own
    handled path; so does a signed body whose signature fails. Only JSON decoders are ever
    called here, never one that could run code."""
    from kombu.exceptions import ContentDisallowed, DecodeError
    from kombu.serialization import loads

    from .signing import CONTENT_TYPE

    body, content_type = msg.get("body"), msg.get("content-type")
    if not body:
        raise MessageRefused("body: empty task message")
    if not content_type:
        raise MessageRefused("content-type: missing on a task message")
    if content_type not in ("application/json", CONTENT_TYPE):
        return  # Celery accepts only dtf's content type: ContentDisallowed, handled there
    raw = base64.b64decode(body.encode()) if msg["properties"].get("body_encoding") == "base64" else body
    try:
        payload = loads(raw, content_type, msg.get("content-encoding"), accept=[content_type])
    except (DecodeError, ContentDisallowed):
        return  # refused by Celery's decode-error path, which acks and logs it
    except Exception as exc:  # noqa: BLE001 - the decoder of a registered JSON serializer
        raise MessageRefused(f"body: does not decode ({type(exc).__name__})") from None
    if not (isinstance(payload, (list, tuple)) and len(payload) == 3 and isinstance(payload[0], (list, tuple))
            and isinstance(payload[1], dict) and isinstance(payload[2], (dict, type(None)))):
        raise MessageRefused("body: not a task body [args, kwargs, embed]")


# -- the dead-letter list -----------------------------------------------------------------------
def dead_letter(client: Any, queue: str, reason: str, raw: Any) -> None:
    """Log once, count, and keep the head of a refused message on ``dtf.dead`` (bounded).

    ``client`` is a redis-py client, or None (the in-memory broker): then only logged."""
    reason = reason.splitlines()[0][:300] if reason else "refused"
    log.error("refused a message on %s: %s", queue, reason)
    if client is None:
        return
    if isinstance(raw, (bytes, bytearray)):
        head = bytes(raw[:DEAD_LETTER_HEAD]).decode("utf-8", "replace")
    elif isinstance(raw, str):
        head = raw[:DEAD_LETTER_HEAD]
    else:
        try:
            head = json.dumps(raw, default=repr)[:DEAD_LETTER_HEAD]
        except (TypeError, ValueError, RecursionError):
            head = repr(type(raw))
    entry = json.dumps({"queue": queue, "reason": reason, "at": time.time(), "head": head})
    try:
        with client.pipeline() as pipe:
            pipe.lpush(DEAD_LETTER_QUEUE, entry).ltrim(DEAD_LETTER_QUEUE, 0, DEAD_LETTER_MAX - 1)
            pipe.incr(DEAD_LETTER_COUNT_KEY).execute()
    except Exception as exc:  # noqa: BLE001 - bookkeeping only: the message is dropped either way
        log.warning("cannot record the refused message on %s: %s", DEAD_LETTER_QUEUE, exc)


def dead_letter_count(client: Any) -> int:
    if client is None:
        return 0
    try:
        return int(client.get(DEAD_LETTER_COUNT_KEY) or 0)
    except Exception:  # noqa: BLE001 - a count for display only
        return 0


# -- the transport guard ------------------------------------------------------------------------
_installed = False
_max_payload = 1 << 20  # dtf.settings.Settings.max_payload_bytes, as the last install gave it


def install_transport_guard(max_payload: int = 1 << 20) -> None:
    """Make kombu's Redis channels check every raw item they pop (idempotent, per process).

    kombu parses each popped item with ``json.loads`` and builds a message from it inside its
    event loop; a non-JSON or malformed item raises out of ``drain_events`` (and out of
    Celery's consumer, which then stops the worker). The item has already left the list, so
    it is dead-lettered here and the loop goes on. An item over its queue's raw cap
    (dtf.bus.protocol.raw_item_cap, from ``max_payload``) is refused before any parsing."""
    global _installed, _max_payload
    _max_payload = max_payload
    if _installed:
        return
    from queue import Empty

    from .bus.protocol import raw_item_cap

    from kombu.transport import redis as kredis
    from kombu.utils.encoding import bytes_to_str

    def _brpop_read(self: Any, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            try:
                message = check_envelope(item, dest, raw_item_cap(dest, _max_payload))
            except MessageRefused as exc:
                dead_letter(self.client, dest, str(exc), item)
                return True
            self.connection._deliver(message, dest)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self: Any, queue: str) -> Any:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                while True:
                    item = client.rpop(self._q_for_pri(queue, pri))
                    if not item:
                        break
                    self._maybe_update_queues_expire(client, queue)
                    try:
                        return check_envelope(item, queue, raw_item_cap(queue, _max_payload))
                    except MessageRefused as exc:
                        dead_letter(client, queue, str(exc), item)
            self._maybe_update_queues_expire(client, queue)
            raise Empty()

    kredis.Channel._brpop_read = _brpop_read
    kredis.Channel._get = _get
    _installed = True
