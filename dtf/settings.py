"""One frozen settings object, built once at the edge (CLI or worker start) from flags,
then environment variables, then defaults, and passed down. Nothing reads the
environment at import time.

Secrets (the Redis password) come from ``DTF_REDIS_PASSWORD`` or a file named by
``DTF_REDIS_PASSWORD_FILE`` and are never part of ``repr()`` or logs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import DtfError
from .envvars import SECRET_NAMES
from .state import default_state_dir

__all__ = [
    "Settings", "EMBEDDED_BROKER", "check_broker_url", "redact_url", "ENV_PREFIX", "SECRET_ENV_VARS", "scrub_secrets",
    "hide_own_secrets",
]

EMBEDDED_BROKER = "memory://"
ENV_PREFIX = "DTF_"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to log.

    Handles kombu's ``;``-separated failover lists (``sentinel://:pw@h1;sentinel://:pw@h2``),
    bracketed IPv6 hosts and a ``password=`` query parameter; never raises.
    """
    if ";" in url:
        return ";".join(redact_url(part) for part in url.split(";"))
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"  # unparseable: show nothing rather than a secret
    netloc = parts.netloc
    userinfo, at, hostinfo = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() == "password" for k, _ in pairs):
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


#: Broker URL schemes dtf works with (Redis, Redis over TLS, Sentinel, the embedded one).
BROKER_SCHEMES = ("redis", "rediss", "sentinel", "memory")


def check_broker_url(url: str) -> None:
    """Refuse, in one line, a broker URL dtf cannot use (kombu would fail later with a
    traceback, or read ``not-a-url`` as an AMQP host name)."""
    where = "broker URL (--broker or DTF_BROKER_URL)"
    shown = redact_url(url)
    for part in url.split(";"):  # kombu's failover list: each must be usable
        try:
            parts = urlsplit(part.strip())
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as exc:
            raise DtfError(f"{where} {shown!r}: {exc}") from None
        if not parts.scheme or "://" not in part:
            raise DtfError(f"{where} {shown!r} is not a URL; expected e.g. redis://127.0.0.1:6379/0")
        if parts.scheme not in BROKER_SCHEMES:
            raise DtfError(f"{where} {shown!r}: unsupported scheme {parts.scheme!r}; dtf uses redis://, rediss:// "
                           "or Redis Sentinel (DTF_SENTINELS)")
        db = parts.path.strip("/")
        if parts.scheme in ("redis", "rediss") and db and not db.isdigit():
            raise DtfError(f"{where} {shown!r}: the path must be a database number, e.g. /0, not {parts.path!r}")


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _flag(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise DtfError(f"{name}: expected 1/0, true/false, yes/no or on/off, got {value!r}")


def _read_secret(env: Mapping[str, str], name: str) -> str | None:
    if env.get(name):
        return env[name]
    file_name = env.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DtfError(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from None
    return None


#: Variables that hold secrets. Processes that run test code get none of them, nor their
#: _FILE forms: see scrub_secrets.
SECRET_ENV_VARS: tuple[str, ...] = SECRET_NAMES  # the registry in dtf/envvars.py says which


def scrub_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the secret variables and their ``_FILE`` forms, and with any password
    written into ``DTF_BROKER_URL`` replaced by ***."""
    scrubbed = {k: v for k, v in env.items() if k not in SECRET_ENV_VARS and k.removesuffix("_FILE") not in SECRET_ENV_VARS}
    if scrubbed.get("DTF_BROKER_URL"):
        scrubbed["DTF_BROKER_URL"] = redact_url(scrubbed["DTF_BROKER_URL"])
    return scrubbed


def hide_own_secrets() -> list[str]:
    """Remove the secret variables (and a password inside ``DTF_BROKER_URL``) from this
    process, once its settings are read: from ``os.environ`` and, on Linux, from the
    environment block the kernel shows as ``/proc/<pid>/environ`` to any process of the same
    user (a test the worker runs included). Scrubbing ``os.environ`` alone does not change
    that block, so its bytes are overwritten in place (as setproctitle does for argv).
    Returns the names hidden."""
    names = [k for k in os.environ if k in SECRET_ENV_VARS]
    if os.environ.get("DTF_BROKER_URL") and redact_url(os.environ["DTF_BROKER_URL"]) != os.environ["DTF_BROKER_URL"]:
        names.append("DTF_BROKER_URL")
    if names and sys.platform.startswith("linux"):
        _blank_environment_block({n.encode() for n in names})
    for name in names:
        os.environ.pop(name, None)
    return names


def _blank_environment_block(names: set[bytes]) -> None:
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50 and 51)
        block = ctypes.string_at(start, end - start)
    except (OSError, ValueError, IndexError):
        return  # no /proc, or an old kernel: os.environ is still scrubbed
    offset = 0
    for entry in block.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        if eq and name in names and value:
            ctypes.memset(start + offset + len(name) + 1, ord("*"), len(value))
        offset += len(entry) + 1


_DB_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_db(spec: str) -> str:
    """A ``--db`` string (or a message quoting one) with a catalog password hidden."""
    return _DB_PASSWORD.sub(r"\1***", spec)


@dataclass(frozen=True)
class Settings:
    """Everything a dtf process needs to know about where things are."""

    broker_url: str = EMBEDDED_BROKER
    sentinels: tuple[str, ...] = ()  # "host:port" of Redis Sentinels
    sentinel_master: str = "mymaster"
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    db_path: str = "dtf.duckdb"  # a DuckDB file, or "ducklake:<catalog>" (dtf.store.open_store)
    data_path: str = ""  # where a DuckLake keeps its Parquet files ("": where its catalog says)
    db_password: str | None = field(default=None, repr=False)  # a DuckLake catalog's PostgreSQL password
    spool_dir: str = ""  # "": <state_dir>/spool
    state_dir: str = field(default_factory=lambda: default_state_dir({}))  # dtf.state; from_env reads XDG_STATE_HOME
    template_dirs: tuple[str, ...] = ()
    visibility_timeout_s: int = 4 * 3600
    result_batch_size: int = 500
    result_batch_ms: int = 200
    max_payload_bytes: int = 1 << 20
    log_level: str = "WARNING"
    sentinel_password: str | None = field(default=None, repr=False)  # when Sentinels have their own
    redis_socket_timeout_s: float = 5.0  # every Redis call; a dead master must not hang a caller
    leader_ttl_ms: int = 10_000  # the coordinator lease; keep it above the Sentinel failover time
    control_visibility_timeout_s: int = 30  # coordinator queues: redelivery after a leader dies
    reconcile_grace_s: int = 60  # silence allowed beyond a test's timeout before re-publishing
    auto_quarantine: float | None = None  # flake rate from which a (test, hardware) is quarantined (dtf/flaky.py)
    signing_keys: tuple[str, ...] = field(default=(), repr=False)  # HMAC keys (dtf.signing); the first signs
    signing_max_age_s: int = 7 * 86400  # a signed message older than this is refused
    # Celery task events (task-received/started/succeeded) cost a broker publish each, per
    # test. Off by default, as in Celery: Flower turns them on in running workers itself.
    task_events: bool = False

    def __post_init__(self) -> None:
        if not self.spool_dir:  # results wait in the state directory, not in whatever folder dtf started in
            object.__setattr__(self, "spool_dir", os.path.join(self.state_dir, "spool"))

    def __repr__(self) -> str:
        # The dataclass repr would show a password written into broker_url.
        shown = ", ".join(
            f"{f.name}={redact_url(self.broker_url) if f.name == 'broker_url' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.repr
        )
        return f"Settings({shown})"

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("memory://") and not self.sentinels

    @property
    def safe_db(self) -> str:
        """``db_path`` as it may be printed: a catalog's password hidden."""
        return redact_db(self.db_path)

    @property
    def safe_broker(self) -> str:
        if self.sentinels:
            return f"sentinel://{','.join(self.sentinels)} (master {self.sentinel_master})"
        return redact_url(self.broker_url)

    def with_overrides(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Flags (overrides, None meaning unset) win over DTF_* variables, which win over defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        simple = {
            "broker_url": "DTF_BROKER_URL",
            "sentinel_master": "DTF_SENTINEL_MASTER",
            "redis_username": "DTF_REDIS_USERNAME",
            "tls_ca": "DTF_TLS_CA",
            "tls_cert": "DTF_TLS_CERT",
            "tls_key": "DTF_TLS_KEY",
            "db_path": "DTF_DB",
            "data_path": "DTF_DATA_PATH",
            "spool_dir": "DTF_SPOOL_DIR",
            "state_dir": "DTF_STATE_DIR",
            "log_level": "DTF_LOG_LEVEL",
        }
        for attr, var in simple.items():
            if env.get(var):
                values[attr] = env[var]
        for attr, var in {
            "visibility_timeout_s": "DTF_VISIBILITY_TIMEOUT",
            "result_batch_size": "DTF_RESULT_BATCH_SIZE",
            "result_batch_ms": "DTF_RESULT_BATCH_MS",
            "max_payload_bytes": "DTF_MAX_PAYLOAD_BYTES",
            "leader_ttl_ms": "DTF_LEADER_TTL_MS",
            "control_visibility_timeout_s": "DTF_CONTROL_VISIBILITY_TIMEOUT",
            "reconcile_grace_s": "DTF_RECONCILE_GRACE",
            "signing_max_age_s": "DTF_SIGNING_MAX_AGE",
        }.items():
            if env.get(var):
                try:
                    values[attr] = int(env[var])
                except ValueError:
                    raise DtfError(f"{var}: expected an integer, got {env[var]!r}") from None
        if env.get("DTF_REDIS_SOCKET_TIMEOUT"):
            try:
                values["redis_socket_timeout_s"] = float(env["DTF_REDIS_SOCKET_TIMEOUT"])
            except ValueError:
                raise DtfError(f"DTF_REDIS_SOCKET_TIMEOUT: expected seconds, got {env['DTF_REDIS_SOCKET_TIMEOUT']!r}") from None
        if env.get("DTF_AUTO_QUARANTINE"):
            try:
                values["auto_quarantine"] = float(env["DTF_AUTO_QUARANTINE"])
            except ValueError:
                raise DtfError(f"DTF_AUTO_QUARANTINE: expected a flake rate such as 0.2, got {env['DTF_AUTO_QUARANTINE']!r}") from None
            if not 0 < values["auto_quarantine"] <= 1:
                raise DtfError(f"DTF_AUTO_QUARANTINE: expected a flake rate in (0, 1], got {env['DTF_AUTO_QUARANTINE']!r}")
        if env.get("DTF_TASK_EVENTS"):
            values["task_events"] = _flag(env["DTF_TASK_EVENTS"], "DTF_TASK_EVENTS")
        if env.get("DTF_SENTINELS"):
            values["sentinels"] = _split(env["DTF_SENTINELS"])
        if env.get("DTF_TEMPLATES"):
            values["template_dirs"] = _split(env["DTF_TEMPLATES"].replace(os.pathsep, ","))
        password = _read_secret(env, "DTF_REDIS_PASSWORD")
        if password:
            values["redis_password"] = password
        db_password = _read_secret(env, "DTF_DB_PASSWORD")
        if db_password:
            values["db_password"] = db_password.strip()
        sentinel_password = _read_secret(env, "DTF_SENTINEL_PASSWORD")
        if sentinel_password:
            values["sentinel_password"] = sentinel_password
        signing_keys = _read_secret(env, "DTF_SIGNING_KEY")
        if signing_keys:  # a key file may hold several, one a line, for rotation
            values["signing_keys"] = tuple(k.strip() for k in signing_keys.splitlines() if k.strip())
        values.setdefault("state_dir", default_state_dir(env))
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "broker_url" in values:
            check_broker_url(str(values["broker_url"]))
        return cls(**values)


def tls_options(settings: "Settings") -> dict[str, Any] | None:
    """The one translation of the TLS settings, in the keys both kombu's ``broker_use_ssl``
    and redis-py take (redis-py also needs ``ssl=True``); None when TLS is off."""
    if not (settings.broker_url.startswith("rediss://") or settings.tls_ca):
        return None
    import ssl

    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.tls_ca:
        options["ssl_ca_certs"] = settings.tls_ca
    if settings.tls_cert:
        options["ssl_certfile"] = settings.tls_cert
    if settings.tls_key:
        options["ssl_keyfile"] = settings.tls_key
    return options
