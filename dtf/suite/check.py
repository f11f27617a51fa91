"""The validators of one suite document (`_Checker`): each returns the clean value or raises
a SuiteError whose field is a path into the document (``models[2].batch_sizes[1]``), and
`_show`, how a message shows a value."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SuiteError
from .data import MAX_BATCH_SIZE, MAX_ITERATIONS, MAX_RETRIES, MAX_TIMEOUT_S, RUN_SETTING_KEYS
from .families import _positive

_SUITE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class _Checker:
    """Validators for one document; each returns the clean value or raises SuiteError."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, where: str | None, message: str) -> SuiteError:
        return SuiteError(self.path, where or None, message)

    def known_keys(self, mapping: Mapping[object, object], allowed: Sequence[str], where: str | None) -> None:
        """Typo protection: name the first unknown key and suggest the closest known one."""
        for key in mapping:
            if isinstance(key, str) and key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1) if isinstance(key, str) else []
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
            raise self.error(where, f"unknown key {_show(key)} ({hint})")

    def mapping(self, value: object, where: str, what: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"expected {what}, got {_show(value)}")
        return value

    def nonempty_list(self, value: object, where: str, what: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.error(where, f"expected a non-empty list of {what}, got {_show(value)}")
        return value

    def suite_name(self, data: Mapping[str, object]) -> str:
        if "name" not in data:
            raise self.error("name", "required field missing")
        value = data["name"]
        if not isinstance(value, str) or not _SUITE_NAME.fullmatch(value):
            raise self.error("name", f"expected 1-100 characters from A-Z a-z 0-9 _ . -, got {_show(value)}")
        return value

    def optional_text(self, value: object, where: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(where, f"expected text, got {_show(value)}")
        return value

    def optional_pattern(self, value: object, where: str, pattern: re.Pattern[str], what: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise self.error(where, f"expected {what}, got {_show(value)}")
        return value

    def one_of(self, value: object, where: str, allowed: Sequence[str], what: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise self.error(where, f"unknown {what} {_show(value)} (expected one of {', '.join(allowed)})")
        return value

    def flag(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"expected true or false, got {_show(value)}")
        return value

    def choices(
        self,
        data: Mapping[str, object],
        key: str,
        allowed: Sequence[str],
        what: str,
        *,
        required: bool,
        prefix: str = "",
    ) -> tuple[str, ...] | None:
        where = f"{prefix}{key}"
        if self.absent(data, key, where, required):
            return None
        items = self.nonempty_list(data[key], where, f"{what} kinds")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.error(f"{where}[{i}]", f"expected a {what} name, got {_show(item)}")
            if item not in allowed:
                raise self.error(f"{where}[{i}]", f"unknown {what} {item!r} (expected one of {', '.join(allowed)})")
        return self.unique(items, where)

    def batch_sizes(
        self, data: Mapping[str, object], key: str, *, required: bool, prefix: str = ""
    ) -> tuple[int, ...] | None:
        where = f"{prefix}{key}"
        if self.absent(data, key, where, required):
            return None
        items = self.nonempty_list(data[key], where, "batch sizes")
        for i, item in enumerate(items):
            self.integer(item, f"{where}[{i}]", 1, MAX_BATCH_SIZE, "a positive integer")
        return self.unique(items, where)

    def absent(self, data: Mapping[str, object], key: str, where: str, required: bool) -> bool:
        """True when an optional key is missing or null; raises when a required one is."""
        if data.get(key) is not None:
            return False
        if required:
            message = "required field missing" if key not in data else "expected a non-empty list, got null"
            raise self.error(where, message)
        return True

    def unique(self, items: list[Any], where: str) -> tuple[Any, ...]:
        seen: set[object] = set()
        for i, item in enumerate(items):
            if item in seen:
                raise self.error(f"{where}[{i}]", f"duplicate value {_show(item)}")
            seen.add(item)
        return tuple(items)

    def integer(self, value: object, where: str, lo: int, hi: int, expected: str, *, ranged: bool = False) -> int:
        """An int (never a bool) in lo..hi; `ranged` when `expected` already names hi."""
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise self.error(where, f"expected {expected}, got {_show(value)}")
        if value > hi:
            limit = "" if ranged else f" of at most {hi}"
            raise self.error(where, f"expected {expected}{limit}, got {_show(value)}")
        return value

    def positive_number(self, value: object, where: str, hi: float, unit: str = "") -> float:
        number = _positive(value)
        if number is None:
            raise self.error(where, f"expected a positive number{unit}, got {_show(value)}")
        if number > hi:
            raise self.error(where, f"expected a positive number{unit} of at most {hi:g}, got {_show(value)}")
        return number

    def run_settings(self, data: Mapping[str, object], prefix: str) -> dict[str, float | int]:
        """The run settings present (and not null) in `data`, validated."""
        out: dict[str, float | int] = {}
        for key in RUN_SETTING_KEYS:
            value, where = data.get(key), f"{prefix}{key}"
            if value is None:
                continue
            if key == "timeout_s":
                out[key] = self.positive_number(value, where, MAX_TIMEOUT_S, " of seconds")
            elif key == "retries":
                expected = f"an integer from 0 to {MAX_RETRIES}"
                out[key] = self.integer(value, where, 0, MAX_RETRIES, expected, ranged=True)
            elif key == "iterations":
                out[key] = self.integer(value, where, 1, MAX_ITERATIONS, "a positive integer")
            else:
                out[key] = self.integer(value, where, 0, MAX_ITERATIONS, "a non-negative integer")
        return out



def _one_line(text: str) -> str:
    """A message for one line of stderr: runs of whitespace, newlines included, become one space."""
    return " ".join(text.split())


def _show(value: object) -> str:
    """A value as the message shows it: YAML spellings for scalars, kinds for containers."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:56] + "...'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"  # date, datetime, set: what other YAML tags give

