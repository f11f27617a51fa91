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
import ipaddress
import json
import os
import secrets
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import DtfError

__all__ = [
    "default_key_file",
    "default_signing_keys",
    "generate_key",
    "is_loopback_broker",
    "INSECURE_ENV",
    "SERIALIZER",
    "CONTENT_TYPE",
    "MIN_KEY_CHARS",
    "MessageSigner",
    "SignatureError",
    "register_serializer",
    "serializer_for",
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


def serializer_for(settings: Any) -> str:
    """The serializer every message of a process with these settings uses: ``dtf-signed``
    (registered here) when a key is configured or made by default, else plain ``json``."""
    keys = tuple(settings.signing_keys)
    if not keys and not settings.embedded:
        keys = default_signing_keys(settings)  # signing is on by default
    if not keys:
        return "json"
    return register_serializer(MessageSigner(keys, max_age_s=settings.signing_max_age_s))


def register_serializer(signer: MessageSigner) -> str:
    """Register ``signer`` as kombu's ``dtf-signed`` serializer and return that name.

    kombu's registry is per process: the last signer registered serves every app in it."""
    from kombu.serialization import register

    register(SERIALIZER, signer.dumps, signer.loads, content_type=CONTENT_TYPE, content_encoding="utf-8")
    return SERIALIZER


# -- signing on by default ------------------------------------------------------------------------
INSECURE_ENV = "DTF_INSECURE_NO_SIGNING"  # the one, loudly named, opt-out
KEY_FILE_NAME = "signing.key"


def default_key_file(env: Mapping[str, str] | None = None) -> Path:
    """``$DTF_STATE_DIR/signing.key``, else ``${XDG_STATE_HOME:-~/.local/state}/dtf/signing.key``."""
    from .state import default_state_dir

    return Path(default_state_dir(os.environ if env is None else env)) / KEY_FILE_NAME


def generate_key() -> str:
    return secrets.token_urlsafe(32)


def _hosts(settings: Any) -> list[str]:
    if settings.sentinels:
        return [h.rsplit(":", 1)[0].strip("[]") for h in settings.sentinels]
    try:
        return [urlsplit(part).hostname or "localhost" for part in settings.broker_url.split(";")]
    except ValueError:
        return [""]


def is_loopback_broker(settings: Any) -> bool:
    """Whether every broker (or Sentinel) host is this machine: localhost or a loopback address."""
    for host in _hosts(settings):
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


def write_key_file(path: Path, keys: Sequence[str], *, replace: bool = False) -> None:
    """Write keys (one a line) readable by this user only; atomically, never half a file.
    Without ``replace`` an existing file is kept (FileExistsError)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(f"{k}\n" for k in keys))
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process created it first: theirs wins
    finally:
        tmp.unlink(missing_ok=True)


def read_key_file(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DtfError(f"cannot read the signing key file {path}: {exc.strerror}") from None
    return tuple(k.strip() for k in text.splitlines() if k.strip())


def default_signing_keys(settings: Any, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The keys a process uses when none is configured: signing is on by default.

    Against a broker on this machine (loopback), the key file in the state dir is created on
    first use, so every dtf process of this user shares it with no setup. Against a broker
    on the network the file must exist (``dtf keygen``, then copy it to every host, or set
    ``DTF_SIGNING_KEY_FILE``): a key made up on each host would only make workers refuse
    everything. ``DTF_INSECURE_NO_SIGNING=1`` turns signing off (empty tuple)."""
    env = os.environ if env is None else env
    flag = (env.get(INSECURE_ENV) or "").strip().lower()
    if flag in {"1", "true", "yes", "on"}:
        return ()
    path = default_key_file(env)
    if not path.exists():
        if not is_loopback_broker(settings):
            raise DtfError(
                f"no signing key for a broker on the network ({settings.safe_broker}): run `dtf keygen` "
                f"(writes {path}) and copy that file to every host, or set DTF_SIGNING_KEY_FILE; "
                f"{INSECURE_ENV}=1 runs unsigned (anyone who can write to the queues runs code on the workers)")
        try:
            write_key_file(path, [generate_key()])
        except FileExistsError:
            pass  # another dtf process made it first
        except OSError as exc:
            raise DtfError(f"cannot create the signing key file {path}: {exc.strerror}") from None
    keys = read_key_file(path)
    if not keys:
        raise DtfError(f"the signing key file {path} is empty: run `dtf keygen --force`")
    return keys
