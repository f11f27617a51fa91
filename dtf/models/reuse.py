"""Model reuse: the CPU tests of one model forked from a process that loaded it once.

Loading a real model is most of a short test's wall time (bert-base-uncased on the CPU:
torch and transformers imports about 2 s and the weights about 3 s, against 0.1-0.3 s per
iteration; bench/model_load.py). A test whose params say ``reuse_model: true`` runs on a
*model server* instead (dtf.forkserver.ForkServer with this module's ``preload``): an
interpreter that imported torch and the model's library and built the model once, on the
CPU, in float32 and eval mode, exactly as dtf.models.runtime would. Each test is still a
process of its own, forked from it; the loaders (dtf.models.hf, timm_source) find the built
module here (``take``) instead of building it, and everything else (config, inputs, the
test's params) is the test's own. The test records ``model_reused: true``, ``load_time_s``
(what was left of loading) and the server's ``model_load_s``.

What is shared and what is not (the isolation trade-off, docs/models.md):

* Each test has its own copy of the weights (copy-on-write after the fork): a test that
  changes them (``.to(fp16)``, quantization, training) changes its copy only; the next test
  gets the model as it was loaded.
* What the load left in the process is shared by every test forked from it: torch's global
  settings and RNG state as the load left them (each test seeds its own inputs), modules
  imported, the HF cache files read. A test that depends on a fresh interpreter's import
  side effects does not get them.
* The server never runs a parallel region before forking (it loads with one thread, then
  each test gets the default thread count back), since an OpenMP pool does not survive a
  fork; and it never touches a GPU: only ``cpu`` tests are served (a CUDA context cannot
  cross a fork, and this path is not measured on GPUs).
* Memory: a test's peak RSS counts the shared model pages, as a fresh process would count
  its own copy; the machine holds the model once more per server (at most
  MODEL_SERVERS_MAX per worker process, least recently used stopped first).
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

__all__ = ["REUSE_PARAM", "MODEL_SERVERS_MAX", "load_config", "load_key", "module_key", "preload", "take", "keep",
           "reused", "restore_threads"]

REUSE_PARAM = "reuse_model"
MODEL_SERVERS_MAX = 2

_modules: dict[str, Any] = {}  # module key -> the module built in this model server
_preloading = False
_server: dict[str, Any] = {}  # "load_s", "threads" (torch's default thread count)
_taken: list[str] = []  # module keys this test took


def load_config(model: str, family: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """What building the model depends on, from a spec's model, family and params: the key
    of its model server. None when the test did not ask for reuse, or its model is not a
    torch one (hf, timm)."""
    if params.get(REUSE_PARAM) is not True:
        return None
    source = dict(params.get("model_source") or {"source": "hf"})
    if source.get("source") not in ("hf", "timm"):
        return None
    return {"model": model, "family": family, "source": source, "config": dict(params.get("config") or {}),
            "seed": int(params.get("seed", 0))}


def load_key(cfg: Mapping[str, Any]) -> str:
    return json.dumps(cfg, sort_keys=True, default=str)


def module_key(kind: str, name: str, family: str, source: Any, overrides: Mapping[str, Any] | None, seed: int) -> str:
    """What a loader builds a module from (dtf.models.hf, timm_source): the same in the model
    server and in the test forked from it."""
    return json.dumps([kind, name, family, source.to_dict(), dict(overrides or {}), int(seed)], sort_keys=True, default=str)


def take(key: str) -> Any:
    """In a test forked from a model server: the module built for ``key``, else None."""
    module = _modules.get(key)
    if module is not None:
        _taken.append(key)
    return module


def keep(key: str, module: Any) -> None:
    """In a model server while it preloads: keep the built module for the tests it forks."""
    if _preloading:
        _modules[key] = module


def reused() -> float | None:
    """After loading in a test: the server's load time when the module was taken from it, else None."""
    if not _taken:
        return None
    return float(_server["load_s"])


def restore_threads(params: Mapping[str, Any]) -> None:
    """In a test forked from a model server, unless its params set a thread count: torch's
    default thread count, as a fresh interpreter has it (the server loaded with one)."""
    if _server and int(params.get("threads", 0)) <= 0:
        import torch

        torch.set_num_threads(int(_server["threads"]))


def preload(cfg: Mapping[str, Any]) -> None:
    """In the model server, before it forks anything: build the model once."""
    global _preloading
    import torch

    from .runtime import _load_torch, require
    from .source import ModelSource

    source = ModelSource.from_dict(cfg["source"])
    require(source.source)
    _server["threads"] = torch.get_num_threads()
    torch.set_num_threads(1)  # no OpenMP pool before a fork (see the module's docstring)
    params = {"config": cfg["config"], "seed": cfg["seed"]}
    _preloading = True
    started = time.perf_counter()
    try:
        _load_torch({"model": cfg["model"], "family": cfg["family"]}, source, params, int(cfg["seed"]))
    finally:
        _preloading = False
    _server["load_s"] = time.perf_counter() - started
    if not _modules:
        raise RuntimeError(f"{cfg['model']}: the loader kept no module to reuse")
