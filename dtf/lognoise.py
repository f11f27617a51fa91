"""Broker trouble in one line per event: what Celery and kombu log when the broker drops.

When a Redis master dies, Celery's consumer and kombu log each reconnect attempt with the
whole message of the error (for a Sentinel group, the repr of every Sentinel client,
thousands of characters) over several lines, and sometimes a traceback. In dtf's own
processes ``install`` puts ``BrokerNoise`` on the root handlers: such a record keeps its
level, logger and first line, without the client reprs and without the traceback (which
``--verbose`` / DEBUG still shows).
"""

from __future__ import annotations

import logging
import re

__all__ = ["BrokerNoise", "install", "one_line"]

_NOISY = ("celery.", "kombu")
_CLIENT_REPR = re.compile(r"\s*:\s*<redis\.client\.Redis\(.*", re.DOTALL)
_CONNECTION_WORDS = ("connect", "broker", "master", "sentinel", "redis")
MAX_CHARS = 300


def one_line(text: str) -> str:
    """The first line of ``text``, without redis-py client reprs, at most MAX_CHARS long."""
    text = _CLIENT_REPR.sub("", text.strip())
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= MAX_CHARS else first[:MAX_CHARS - 1] + "…"


class BrokerNoise(logging.Filter):
    """Shortens Celery's and kombu's connection records to one line; passes everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_NOISY) or record.levelno < logging.WARNING:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format is not ours to fix
            return True
        if not any(word in message.lower() for word in _CONNECTION_WORDS):
            return True
        record.msg, record.args = one_line(message), None
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def install() -> None:
    """Put one BrokerNoise on every root handler (again after Celery set up its logging)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, BrokerNoise) for f in handler.filters):
            handler.addFilter(BrokerNoise())
