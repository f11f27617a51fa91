"""Finding a template file by name, safely and cheaply: names of plain segments only, the
real path checked to lie inside its root, and memoised answers kept with a watch of the
directory entries they depend on."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

from ..errors import TemplateNotFound

TEMPLATE_SUFFIX = ".py.j2"
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


# --- names and paths -----------------------------------------------------------------


def _printable(name: object) -> str:
    text = str(name)
    return text if text.isprintable() else repr(text)


def _not_found(name: object, why: str = "") -> TemplateNotFound:
    return TemplateNotFound(f"template not found: {_printable(name)}" + (f" ({why})" if why else ""))


def _split_name(name: object) -> tuple[str, str]:
    """``family/variant`` of plain segments; this refuses ``..``, absolute paths,
    backslashes and NUL bytes because none of them can match a segment."""
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 2 or not all(_SEGMENT.fullmatch(p) for p in parts):
        raise _not_found(name)
    return parts[0], parts[1]


def _is_partial(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("/"))


def _check_public(name: object) -> None:
    """TemplateNotFound for a malformed name or a partial's."""
    if any(part.startswith("_") for part in _split_name(name)):
        raise _not_found(name, "partials can only be included")


def _inside(path: Path, root: Path) -> Path | None:
    """The real path of ``path`` if it exists and resolves (symlinks too) inside root."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_relative_to(root) else None


# --- memoised lookups ----------------------------------------------------------------
#
# Finding a name resolves every component of a path, and info() also reads metadata and
# hashes sources: together far more work than rendering a small template, and a suite
# renders the same few templates thousands of times. So an answer is kept with a watch:
# the directory entries it depended on and their lstat stamps. It is reused only while a
# few lstat calls show every entry unchanged; an edited file, a new override in an
# earlier root or a file swapped for a symlink changes a stamp, and the answer is worked
# out again with every check. Only answers with no symlink on the way are kept, because
# then the watched entries by themselves prove that the file lies inside its root.

#: st_mode, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns of a directory entry itself
_Stamp = tuple[int, int, int, int, int, int]
#: (path, its stamp, or None for "nothing there"): what an answer held under
_Watch = tuple[tuple[str, _Stamp | None], ...]
_V = TypeVar("_V")


def _lstamp(path: str) -> _Stamp | None:
    """The stamp of the entry at path, not following a symlink; None when there is none."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _unchanged(watch: _Watch) -> bool:
    """Whether every watched entry is as it was (any other error: look again, the slow way)."""
    try:
        return all(_lstamp(path) == stamp for path, stamp in watch)
    except OSError:
        return False


def _absent(path: Path) -> _Watch:
    """An answer that skipped path holds while nothing is there."""
    return ((str(path), None),)


def _plain_watch(root: Path, path: Path) -> _Watch | None:
    """The watch of ``<root>/<folder>/<file>`` when root and folder are directories and
    the file a regular file, none a symlink: its real path is then itself, inside the
    (resolved) root, for as long as the three are unchanged. None otherwise."""
    entries = (root, path.parent, path)
    kinds = (stat.S_ISDIR, stat.S_ISDIR, stat.S_ISREG)
    try:
        watch = tuple((str(entry), _lstamp(str(entry))) for entry in entries)
    except OSError:
        return None
    if all(st is not None and is_kind(st[0]) for (_, st), is_kind in zip(watch, kinds)):
        return watch
    return None


def _joined(*watches: _Watch | None) -> _Watch | None:
    """All the watches as one (the first stamp of a path wins); None if any is None."""
    merged: dict[str, _Stamp | None] = {}
    for watch in watches:
        if watch is None:
            return None
        for path, st in watch:
            merged.setdefault(path, st)
    return tuple(merged.items())


class _Memo(Generic[_V]):
    """Answers by name, each kept with the watch that vouches for it."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[_Watch, _V]] = {}

    def get(self, key: str) -> _V | None:
        """The answer for key while its watch holds, else None."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None and _unchanged(entry[0]) else None

    def put(self, key: str, value: _V, watch: _Watch | None) -> None:
        """Keep value under key, or forget key when no watch can vouch for it."""
        if watch is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = (watch, value)


class _Found(NamedTuple):
    """Where a name led: the file's real path, the root holding it, and its watch."""

    path: Path
    root: Path
    watch: _Watch | None
