"""One exception tree for dtf: library code raises these, only the CLI turns them into
messages and exit codes."""

from __future__ import annotations

from collections.abc import Collection

__all__ = [
    "check_option",
    "check_positive",
    "DtfError",
    "SuiteError",
    "TemplateError",
    "TemplateNotFound",
    "HardwareError",
    "BrokerError",
    "StoreError",
    "PayloadTooLarge",
    "FencingError",
]


class DtfError(Exception):
    """Base of every error dtf raises on purpose; its message is one line for the user."""

    exit_code = 2


class SuiteError(DtfError):
    """A suite file is missing, unreadable, malformed or fails validation."""

    def __init__(self, path: str, field: str | None, message: str) -> None:
        self.path = path
        self.field = field
        self.message = message
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {message}")


class TemplateError(DtfError):
    """A template failed to load or render."""


class TemplateNotFound(TemplateError):
    """No template of that name exists under the template roots."""


class HardwareError(DtfError):
    """An unknown hardware kind or queue name was asked for."""


class BrokerError(DtfError):
    """The broker cannot be reached or refused an operation."""


class StoreError(DtfError):
    """The results database cannot be opened or written."""


class PayloadTooLarge(DtfError):
    """A message is over the size cap and was not published."""


class FencingError(StoreError):
    """A write carried a fencing token lower than one the database has already seen."""


def check_option(option: str, value: object, allowed: Collection[object], what: str) -> None:
    """A command-line value outside `allowed` is one line: ``--x: unknown <what> 'v' (expected one of ...)``."""
    if value not in allowed:
        raise DtfError(f"{option}: unknown {what} {value!r} (expected one of {', '.join(map(str, allowed))})")


def check_positive(option: str, value: int) -> None:
    """A count below 1 is one line: ``--x: expected a positive integer, got 0``."""
    if value < 1:
        raise DtfError(f"{option}: expected a positive integer, got {value}")
