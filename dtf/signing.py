"""Optional signing of the messages dtf puts on the broker: HMAC-SHA256 with a shared key.

With a key configured (``DTF_SIGNING_KEY`` or ``DTF_SIGNING_KEY_FILE``), a message body is
serialized as ``dtf-signed``: the JSON text of the body, a key id, a timestamp and an
HMAC over all three. A process with signing on accepts that content type only, so an
unsigned message, a forged or altered one, one signed with an unknown key, or one older
than the freshness window is refused before its body is parsed.

Why an HMAC rather than Celery's ``auth`` serializer: the auth serializer needs the
``cryptography`` package and a private key and certificate on every node, and it signs only
what passes through Celery's task serializer; dtf's result and control messages are plain
kombu messages. One shared secret, read like the Redis password, signs every kind with the
standard library, and its timestamp bounds how long a captured message can be replayed.

Limits: it signs, it does not encrypt (use TLS to the broker); every holder of the key can
sign any message (a leaked worker key forges results and tasks); headers such as the task
id are outside the MAC (the body carries run, test and attempt); a message can be replayed
within the window: a replayed result is a no-op (results are keyed by run, test and
attempt) and a replayed task runs the test once more.

A key file may hold several keys, one a line: the first signs, all verify, so a key can be
rotated without stopping the cluster.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from .errors import DtfError

__all__ = [
    "SERIALIZER",
    "CONTENT_TYPE",
    "MIN_KEY_CHARS",
    "MessageSigner",
    "SignatureError",
    "register_serializer",
]

SERIALIZER = "dtf-signed"
CONTENT_TYPE = "application/x-dtf-signed+json"
MIN_KEY_CHARS = 16
_VERSION = 1
_CLOCK_SKEW_S = 300.0  # a message may come from a host whose clock runs this far ahead


class SignatureError(DtfError):
    """A signed message was missing, malformed, forged, signed with an unknown key or too old."""


def key_id(key: str) -> str:
    """A short public name for a key: the first 8 hex digits of its sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class MessageSigner:
    """Signs with the first key, verifies with any of them."""

    def __init__(self, keys: Sequence[str], *, max_age_s: float, clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise DtfError("message signing needs at least one key")
        for key in keys:
            if len(key) < MIN_KEY_CHARS:
                raise DtfError(f"a signing key must have at least {MIN_KEY_CHARS} characters")
        self._keys = {key_id(k): k.encode() for k in keys}
        self._signing_id = key_id(keys[0])
        self.max_age_s = max_age_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"MessageSigner(key ids {sorted(self._keys)}, max_age_s={self.max_age_s:g})"

    def _mac(self, kid: str, stamp: str, body: str) -> str:
        # surrogatepass: a forged body may hold lone surrogates; it must fail the MAC, not crash.
        text = f"{_VERSION}\n{kid}\n{stamp}\n{body}".encode("utf-8", "surrogatepass")
        return hmac.new(self._keys[kid], text, hashlib.sha256).hexdigest()

    def dumps(self, obj: Any) -> str:
        """The signed envelope of ``obj`` as JSON text."""
        body = _json_dumps(obj)
        stamp = f"{self._clock():.3f}"
        envelope = {"v": _VERSION, "kid": self._signing_id, "ts": stamp, "body": body,
                    "mac": self._mac(self._signing_id, stamp, body)}
        return json.dumps(envelope, separators=(",", ":"))

    def loads(self, data: str | bytes) -> Any:
        """The body of a signed envelope; SignatureError unless it is genuine and fresh."""
        try:
            envelope = json.loads(data)
            kid, stamp, body, mac = (envelope[k] for k in ("kid", "ts", "body", "mac"))
            if envelope.get("v") != _VERSION or not all(isinstance(v, str) for v in (kid, stamp, body, mac)):
                raise ValueError("bad envelope")
            sent = float(stamp)
        except (ValueError, TypeError, KeyError):
            raise SignatureError("not a signed dtf message") from None
        if kid not in self._keys:
            raise SignatureError(f"message signed with an unknown key (id {kid[:8]!r})")
        if not hmac.compare_digest(self._mac(kid, stamp, body).encode(), mac.encode()):
            raise SignatureError("message signature does not match: forged or altered")
        age = self._clock() - sent
        if age > self.max_age_s or age < -_CLOCK_SKEW_S:
            raise SignatureError(f"signed message is {age:.0f} s old, outside the {self.max_age_s:g} s window")
        return _json_loads(body)


def _json_dumps(obj: Any) -> str:
    from kombu.utils.json import dumps  # Celery's task bodies hold what its encoder handles

    return str(dumps(obj))


def _json_loads(text: str) -> Any:
    from kombu.utils.json import loads

    return loads(text)


def register_serializer(signer: MessageSigner) -> str:
    """Register ``signer`` as kombu's ``dtf-signed`` serializer and return that name.

    kombu's registry is per process: the last signer registered serves every app in it."""
    from kombu.serialization import register

    register(SERIALIZER, signer.dumps, signer.loads, content_type=CONTENT_TYPE, content_encoding="utf-8")
    return SERIALIZER
