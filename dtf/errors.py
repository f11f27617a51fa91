"""One exception tree for dtf: library code raises these, only the CLI turns them into
messages and exit codes."""

from __future__ import annotations

__all__ = [
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
