"""Settings into connection options: the one translation of broker URL, Sentinels,
passwords and TLS for kombu/Celery (``broker_options``) and for redis-py
(``redis_client_options``, used by dtf.ha's leader lock and the credential check)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from ..errors import DtfError
from ..settings import Settings, tls_options

__all__ = ["BrokerOptions", "broker_options", "broker_connection_args", "control_transport_options",
           "redis_auth", "sentinel_auth", "redis_tls", "CONTROL_UNACKED_KEY"]

# The coordinator queues keep their own unacked bookkeeping, so that what a dead leader had
# taken comes back after a short visibility timeout without touching the workers' tasks
# (whose visibility timeout must outlast the longest test).
CONTROL_UNACKED_KEY = "dtf.coordinator.unacked"


@dataclass(frozen=True)
class BrokerOptions:
    """What kombu and Celery need to reach the broker."""

    url: str
    transport_options: dict[str, Any]
    use_ssl: dict[str, Any] | None = None
    # kombu takes a Sentinel-managed master's password from the URL or broker_password,
    # never from transport options; sentinel URLs mangle passwords, so it is set apart.
    user: str | None = None
    password: str | None = field(default=None, repr=False)


def redis_auth(settings: Settings) -> dict[str, Any]:
    """username/password for the Redis master (empty when none is configured)."""
    auth: dict[str, Any] = {}
    if settings.redis_password:
        auth["password"] = settings.redis_password
        if settings.redis_username:
            auth["username"] = settings.redis_username
    return auth


def sentinel_auth(settings: Settings) -> dict[str, Any]:
    """username/password for the Sentinels themselves (their own, else the master's)."""
    auth: dict[str, Any] = {}
    password = settings.sentinel_password or settings.redis_password
    if password:
        auth["password"] = password
        if settings.redis_username:
            auth["username"] = settings.redis_username
    return auth


def redis_tls(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS keywords (``ssl=True`` plus dtf.settings.tls_options), empty when off."""
    keys = tls_options(settings)
    return {"ssl": True, **keys} if keys else {}


def broker_options(settings: Settings) -> BrokerOptions:
    """The broker URL, transport options, TLS and Sentinel credentials for one settings object."""
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.embedded:
        # The in-memory transport polls; 1 s default would add up to a second per message.
        return BrokerOptions("memory://localhost/", {"polling_interval": 0.005}, tls_options(settings))
    # A killed worker's unacked tasks come back after the visibility timeout plus one sweep;
    # kombu sweeps only every interval x throttle (10 x 10 s by default), so sweep every 5 s.
    options["unacked_restore_interval"] = 5.0
    options["unacked_restore_throttle"] = 1
    tls = tls_options(settings)
    if settings.sentinels:
        url = ";".join(f"sentinel://{hostport}" for hostport in settings.sentinels)
        options["master_name"] = settings.sentinel_master
        # With several Sentinels, one alone must not name the master: a partitioned or stale
        # one would win. A single configured Sentinel has no peers to agree with.
        options["min_other_sentinels"] = 1 if len(settings.sentinels) > 1 else 0
        options["socket_timeout"] = settings.redis_socket_timeout_s
        options["socket_connect_timeout"] = settings.redis_socket_timeout_s
        # Passwords go in kwargs, not the URL: sentinel URL parsing mangles them (kombu#1007).
        options.update(redis_auth(settings))
        if sentinel_auth(settings):
            options["sentinel_kwargs"] = sentinel_auth(settings)
        auth = redis_auth(settings)
        return BrokerOptions(url, options, tls, user=auth.get("username"), password=auth.get("password"))
    if any(k.lower() == "password" for k, _ in parse_qsl(urlsplit(settings.broker_url).query)):
        # kombu fails on it with a TypeError traceback; say how to do it instead.
        raise DtfError("DTF_BROKER_URL: a password= query parameter is not supported; "
                       "set DTF_REDIS_PASSWORD or DTF_REDIS_PASSWORD_FILE")
    return BrokerOptions(_with_credentials(settings.broker_url, settings), options, tls)


def broker_connection_args(settings: Settings) -> tuple[str, dict[str, Any]]:
    """(broker URL, transport options) for Celery and kombu from one settings object."""
    options = broker_options(settings)
    return options.url, options.transport_options


def control_transport_options(settings: Settings) -> dict[str, Any]:
    """Transport options for the leader's own connection (none for the in-memory broker)."""
    if settings.embedded:
        return {}
    return {
        "unacked_key": CONTROL_UNACKED_KEY,
        "unacked_index_key": f"{CONTROL_UNACKED_KEY}_index",
        "unacked_mutex_key": f"{CONTROL_UNACKED_KEY}_mutex",
        "visibility_timeout": settings.control_visibility_timeout_s,
        "unacked_restore_throttle": 10,  # the sync loop sweeps on every empty poll otherwise
    }


def _with_credentials(url: str, settings: Settings) -> str:
    """Put the configured user/password into a redis:// URL that does not carry them."""
    parts = urlsplit(url)
    if not settings.redis_password or parts.password is not None or not parts.scheme.startswith("redis"):
        return url
    user = quote(settings.redis_username or "", safe="")
    host = parts.hostname or "localhost"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:{quote(settings.redis_password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
