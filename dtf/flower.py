"""Flower, wired to the dtf Celery app and secured by one rule.

The rule (the dashboard follows it too): a web UI bound to a loopback address may run
without authentication, and says so; bound anywhere else it needs basic auth (from
``DTF_FLOWER_BASIC_AUTH`` or the file named by ``DTF_FLOWER_BASIC_AUTH_FILE``, in Flower's
``user:password[,user2:password2]`` form) or Flower's OAuth options, or it refuses to
start. Flower's own default address is every interface, so dtf defaults to 127.0.0.1.

Two ways to start it:

    dtf flower --port 5555                                  # loopback, open, with a warning
    DTF_FLOWER_BASIC_AUTH_FILE=/etc/dtf/flower.auth dtf flower --address 0.0.0.0
    celery -A dtf.flower:app flower --port=5555             # same app, same rule, from env

``dtf.flower:app`` is built on first access from the DTF_* environment (PEP 562
``__getattr__``), so importing this module reads nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Sequence

from .errors import DtfError

__all__ = [
    "WebAuth",
    "is_loopback",
    "basic_auth_from_env",
    "check_exposure",
    "flower_argv",
    "run_flower",
    "DEFAULT_ADDRESS",
    "DEFAULT_PORT",
]

log = logging.getLogger("dtf.flower")

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 5555
FLOWER_AUTH_ENV = "DTF_FLOWER_BASIC_AUTH"


@dataclass(frozen=True)
class WebAuth:
    """How a web UI authenticates: basic-auth credentials and/or Flower's OAuth options."""

    basic: tuple[str, ...] = ()  # "user:password" each
    oauth_emails: str | None = None  # Flower --auth: a regex of allowed e-mail addresses
    oauth_provider: str | None = None  # Flower --auth_provider, e.g. flower.views.auth.GithubLoginHandler

    @property
    def enabled(self) -> bool:
        return bool(self.basic) or bool(self.oauth_emails and self.oauth_provider)

    def __repr__(self) -> str:  # never show passwords
        users = [c.partition(":")[0] for c in self.basic]
        return f"WebAuth(basic_users={users!r}, oauth_emails={self.oauth_emails!r}, oauth_provider={self.oauth_provider!r})"


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; False for "" and 0.0.0.0 (every interface)
    and for any other name, which may resolve to an exposed address."""
    host = address.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credentials(text: str, source: str) -> tuple[str, ...]:
    creds = tuple(c.strip() for c in text.replace("\n", ",").split(",") if c.strip())
    for cred in creds:
        user, sep, password = cred.partition(":")
        if not (user and sep and password):
            raise DtfError(f"{source}: expected user:password[,user2:password2]")
    return creds


def basic_auth_from_env(env: Mapping[str, str], name: str = FLOWER_AUTH_ENV) -> tuple[str, ...]:
    """Credentials from ``name`` or the file named by ``name``_FILE (the variable wins)."""
    if env.get(name):
        return _credentials(env[name], name)
    file_name = env.get(f"{name}_FILE")
    if not file_name:
        return ()
    try:
        text = Path(file_name).read_text(encoding="utf-8")
    except OSError as exc:
        raise DtfError(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from None
    return _credentials(text, f"{name}_FILE")


def check_exposure(what: str, address: str, port: int, auth: WebAuth, *, auth_env: str = FLOWER_AUTH_ENV) -> str | None:
    """Refuse (DtfError) a non-loopback address without authentication; for an open
    loopback one, return the warning to print."""
    if auth.enabled:
        return None
    if not is_loopback(address):
        shown = address or "every interface"
        raise DtfError(
            f"{what} would listen on {shown}:{port} without authentication; set {auth_env}"
            f" (or {auth_env}_FILE){' or the OAuth options' if auth_env == FLOWER_AUTH_ENV else ''},"
            f" or bind to 127.0.0.1"
        )
    return f"{what} runs without authentication on {address}:{port}: reachable from this machine only"


def flower_argv(port: int, address: str, auth: WebAuth, extra: Sequence[str] = ()) -> list[str]:
    """The `celery ... flower` arguments. Credentials go in argv of this process only: Flower
    runs in-process, so they never show in `ps` (only `dtf flower` does)."""
    argv = ["flower", f"--port={port}", f"--address={address}"]
    if auth.basic:
        argv.append(f"--basic-auth={','.join(auth.basic)}")
    if auth.oauth_emails:
        argv.append(f"--auth={auth.oauth_emails}")
    if auth.oauth_provider:
        argv.append(f"--auth_provider={auth.oauth_provider}")
    return argv + list(extra)


def run_flower(app: Any, *, port: int, address: str, auth: WebAuth, extra: Sequence[str] = ()) -> None:
    """Start Flower in this process on the dtf app; blocks until it stops."""
    try:
        import flower  # noqa: F401 - fail early with a clear message
    except ImportError:
        raise DtfError("Flower is not installed: pip install flower") from None
    app.start(flower_argv(port, address, auth, extra))


# -- `celery -A dtf.flower:app flower` ---------------------------------------------------------
def _argv_option(argv: Sequence[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
    return None


def _guard_celery_flower(argv: Sequence[str], env: MutableMapping[str, str]) -> None:
    """Apply the exposure rule to a `celery ... flower` command line: default the address
    to loopback, hand DTF_FLOWER_BASIC_AUTH to Flower (through its FLOWER_* environment)."""
    if "flower" not in argv:
        return
    address = _argv_option(argv, "--address")
    if address is None:
        address = env.setdefault("FLOWER_ADDRESS", DEFAULT_ADDRESS)
    basic = _argv_option(argv, "--basic-auth", "--basic_auth") or env.get("FLOWER_BASIC_AUTH")
    creds = _credentials(basic, "--basic-auth") if basic else basic_auth_from_env(env)
    if creds and not basic:
        env["FLOWER_BASIC_AUTH"] = ",".join(creds)
    oauth = WebAuth(creds, _argv_option(argv, "--auth") or env.get("FLOWER_AUTH"),
                    _argv_option(argv, "--auth_provider", "--auth-provider") or env.get("FLOWER_AUTH_PROVIDER"))
    port = _argv_option(argv, "--port") or env.get("FLOWER_PORT") or str(DEFAULT_PORT)
    warning = check_exposure("Flower", address, int(port) if port.isdigit() else DEFAULT_PORT, oauth)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _app_from_env() -> Any:
    from .app import make_app
    from .settings import Settings

    settings = Settings.from_env()
    if settings.embedded:
        raise DtfError("dtf.flower:app needs a broker: set DTF_BROKER_URL or DTF_SENTINELS")
    try:
        _guard_celery_flower(sys.argv, os.environ)
    except DtfError as exc:
        # Inside celery's app loading an exception becomes a traceback; say it in one line.
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return make_app(settings)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
