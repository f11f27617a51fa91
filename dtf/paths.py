"""Path conversion between Windows and POSIX spellings of the same location.

Deployment scripts are rendered on one machine for another, so a path given in one
spelling must be written in the other. Both directions accept either separator (``/`` and
``\\``) in their input. Drive letters map to ``/c/x`` (MSYS, Git Bash, Cygwin-style) or,
with ``style="wsl"``, to ``/mnt/c/x``; UNC shares ``\\\\server\\share\\x`` map to
``//server/share/x``. Only the spelling changes: nothing here touches the file system.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Literal

from dtf.errors import DtfError

__all__ = ["PathStyle", "to_windows", "to_posix", "convert_path", "WINDOWS_PLATFORMS", "POSIX_PLATFORMS"]

PathStyle = Literal["msys", "wsl"]

WINDOWS_PLATFORMS: frozenset[str] = frozenset({"windows"})
POSIX_PLATFORMS: frozenset[str] = frozenset({"linux", "macos", "posix", "docker", "kubernetes"})

_MSYS_DRIVE = re.compile(r"^/([A-Za-z])(?:/(.*))?$", re.DOTALL)
_WSL_DRIVE = re.compile(r"^/mnt/([A-Za-z])(?:/(.*))?$", re.DOTALL)
_EXTENDED_PREFIX = "\\\\?\\"


def _posix_spelling(path: str) -> str:
    """Forward slashes only, runs of slashes collapsed except a leading pair (UNC/`//host`)."""
    text = path.replace("\\", "/")
    lead = "//" if text.startswith("//") and not text.startswith("///") else ""
    body = re.sub(r"/+", "/", text[len(lead):])
    return lead + body


def _check_windows_part(part: str, original: str) -> None:
    if ":" in part:
        raise DtfError(f"path {original!r} has a ':' in {part!r}, which Windows does not allow in a name")


def to_windows(path: str, *, style: PathStyle = "msys") -> str:
    """The Windows spelling of `path`: `/c/x/y` (or `/mnt/c/x/y` with style="wsl") becomes
    `C:\\x\\y`, `//server/share/x` becomes `\\\\server\\share\\x`, `a/b` becomes `a\\b`.

    A POSIX absolute path with no drive (`/opt/dtf`) becomes root-relative (`\\opt\\dtf`).
    Input already in Windows spelling is normalised and returned.
    """
    if not path:
        return "."
    if path.startswith(_EXTENDED_PREFIX):
        path = _strip_extended_prefix(path)
    text = _posix_spelling(path)
    pattern = _WSL_DRIVE if style == "wsl" else _MSYS_DRIVE
    match = pattern.match(text)
    if match:
        rest = match.group(2) or ""
        text = f"{match.group(1).upper()}:/{rest}"
    windows = PureWindowsPath(text)
    if windows.drive and not windows.root and not windows.drive.startswith("\\\\"):
        raise DtfError(f"path {path!r} is relative to the current directory of drive {windows.drive}; give C:\\... instead")
    for part in windows.parts[1 if windows.anchor else 0:]:
        _check_windows_part(part, path)
    drive = windows.drive
    if len(drive) == 2 and drive[1] == ":":
        windows = PureWindowsPath(drive.upper() + str(windows)[2:])
    return str(windows)


def _strip_extended_prefix(path: str) -> str:
    rest = path[len(_EXTENDED_PREFIX):]
    if rest[:4].upper() == "UNC\\":
        return "\\\\" + rest[4:]
    return rest


def to_posix(path: str, *, style: PathStyle = "msys") -> str:
    """The POSIX spelling of `path`: `C:\\x\\y` becomes `/c/x/y` (or `/mnt/c/x/y` with
    style="wsl"), `\\\\server\\share\\x` becomes `//server/share/x`, `a\\b` becomes `a/b`.

    Backslashes are read as separators, so a POSIX name that contains one is split.
    """
    if not path:
        return "."
    if path.startswith(_EXTENDED_PREFIX):
        path = _strip_extended_prefix(path)
    windows = PureWindowsPath(path)
    drive, parts = windows.drive, list(windows.parts[1 if windows.anchor else 0:])
    if drive.startswith("\\\\"):
        server_share = drive[2:].replace("\\", "/")
        return str(PurePosixPath("//" + server_share, *parts))
    if drive:
        if not windows.root:
            raise DtfError(f"path {path!r} is relative to the current directory of drive {drive}; give {drive}\\... instead")
        mount = "/mnt/" if style == "wsl" else "/"
        return str(PurePosixPath(mount + drive[0].lower(), *parts))
    if windows.root:
        return str(PurePosixPath("/", *parts))
    return str(PurePosixPath(*parts)) if parts else "."


def convert_path(path: str, platform: str, *, style: PathStyle = "msys") -> str:
    """`path` spelled for `platform`: Windows spelling for "windows", POSIX spelling for
    "linux", "macos", "posix", "docker" and "kubernetes"."""
    if platform in WINDOWS_PLATFORMS:
        return to_windows(path, style=style)
    if platform in POSIX_PLATFORMS:
        return to_posix(path, style=style)
    known = ", ".join(sorted(WINDOWS_PLATFORMS | POSIX_PLATFORMS))
    raise DtfError(f"unknown platform {platform!r} (expected one of {known})")
