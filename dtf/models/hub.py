"""Finding model files: a local folder, or a hub id in the standard Hugging Face cache.

Offline is the normal case on test machines. ``resolve`` looks in the cache only
(``local_files_only``), so it never waits on the network; a model that is not there is a
``ModelMissing`` whose message says what to run where the network is reachable. ``fetch``
(``dtf models fetch``) is the one place that downloads, with ``snapshot_download``.

The cache is huggingface_hub's: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``, laid out as ``models--org--name/{refs,snapshots,blobs}``.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["ModelMissing", "PackageMissing", "resolve", "fetch", "folder_revision", "cache_dir", "cached_models"]

_HASH_EDGE = 1 << 20  # bytes hashed from the start and the end of each file


class ModelMissing(Exception):
    """The model's files are not on this machine."""


class PackageMissing(Exception):
    """A package the source needs is not installed; the test is skipped with this reason."""


def cache_dir() -> Path:
    """The Hugging Face hub cache this process uses."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def folder_revision(path: str | Path) -> str:
    """A content hash of a model folder (or file): names, sizes, and the first and last
    MiB of each file, so multi-GB weights are fingerprinted without reading them whole."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root) if file != root else file.name}\0{size}\0".encode())
        with file.open("rb") as fh:
            digest.update(fh.read(_HASH_EDGE))
            if size > 2 * _HASH_EDGE:
                fh.seek(size - _HASH_EDGE)
                digest.update(fh.read(_HASH_EDGE))
    return "sha256:" + digest.hexdigest()[:16]


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise PackageMissing("huggingface_hub is not installed on this worker (pip install 'dtf[models]')") from None
    return huggingface_hub


def resolve(name: str, revision: str | None = None, *, path: str | None = None) -> tuple[str, str]:
    """(local folder, revision) of a model: `path` when given, else the cached snapshot
    of hub id `name` at `revision` (default main). Raises ModelMissing, never downloads."""
    if path is not None:
        if not os.path.exists(path):
            raise ModelMissing(f"{name}: no such file or folder {path} on worker {platform.node()}")
        return path, folder_revision(path)
    hub = _hub()
    try:
        folder = hub.snapshot_download(repo_id=name, revision=revision, local_files_only=True,
                                       cache_dir=str(cache_dir()))  # read now: the env may have changed since import
    except Exception as exc:  # LocalEntryNotFoundError, a malformed id, an unreadable cache
        raise ModelMissing(
            f"{name} is not in the HF cache of worker {platform.node()} ({cache_dir()}); "
            f"run `dtf models fetch {name}` where the network is reachable"
            f" ({type(exc).__name__})"
        ) from None
    return folder, Path(folder).name


def fetch(name: str, revision: str | None = None, *, allow_patterns: list[str] | None = None) -> str:
    """Download a hub model into the cache; returns the snapshot folder."""
    hub = _hub()
    folder: str = hub.snapshot_download(repo_id=name, revision=revision, allow_patterns=allow_patterns,
                                        cache_dir=str(cache_dir()))
    return folder


def cached_models() -> list[dict[str, Any]]:
    """The models in the HF cache: id, revisions, size on disk."""
    root = cache_dir()
    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    for repo in sorted(root.glob("models--*")):
        snapshots = sorted(p.name for p in (repo / "snapshots").glob("*") if p.is_dir())
        size = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file() and not p.is_symlink())
        out.append({"name": repo.name[len("models--"):].replace("--", "/"), "revisions": snapshots,
                    "size_mb": round(size / (1 << 20), 1), "path": str(repo)})
    return out
