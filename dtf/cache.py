"""The result cache: a test whose inputs did not change reuses an earlier passing result.

Pure: keys, fingerprints and the choice of a source result; the coordinator gathers the
candidates from the store and the live workers' fingerprints from their heartbeats.

**The key** (`cache_key`, computed by the coordinator when a submit arrives) is a sha256 over
the rendered test source, its template's hash, the parameters, the model name and its pinned
revision, the hardware kind, the precision and the batch size. A real model (hf, timm, onnx)
without a pinned ``revision`` has no key and is never reused: its weights may have moved.

**The stack** (`stack_fingerprint`): a sha256 over the Python version and the versions of
`dtf.stack.PACKAGES` on the worker. Every worker reports its fingerprint in its heartbeats
(``health.stack``) and records it with every result it produces (``metrics.stack_fingerprint``).

**The rule** (`choose`): a test is reused when a passed attempt with the same key exists
(of any earlier run; ``cached`` rows are never sources, so a chain always points at the run
that did the work), it finished no more than ``max_age_s`` ago (None: any age), and its
stack fingerprint equals that of at least one live worker consuming the test's hardware
queue. The newest such attempt is the source. The test is then recorded ``cached`` with the
source's metrics, ``cached_from`` naming the source (run, test, attempt) and ``saved_s``
its duration.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .model import RenderedTest

__all__ = ["Candidate", "cache_key", "stack_fingerprint", "choose", "parse_max_age", "SOURCE_KEY", "REAL_SOURCES"]

SOURCE_KEY = "model_source"  # the params entry dtf/suite/expand.py puts a real model's source in
REAL_SOURCES = ("hf", "timm", "onnx")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def cache_key(test: RenderedTest) -> str | None:
    """The test's result cache key, or None when it may not be reused (an unpinned real model)."""
    spec = test.spec
    params = dict(spec.params)
    source = params.get(SOURCE_KEY)
    revision = None
    if isinstance(source, Mapping):
        revision = source.get("revision")
        if source.get("source") in REAL_SOURCES and not revision:
            return None
    what = {
        "source": test.source, "template_hash": test.template_hash, "params": params, "model": spec.model,
        "revision": revision, "hardware": spec.hardware, "precision": spec.precision, "batch_size": spec.batch_size,
    }
    text = json.dumps(what, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stack_fingerprint(python: str, versions: Mapping[str, str | None]) -> str:
    """A short hash of the software stack that produces results."""
    text = json.dumps({"python": python, **{k: versions[k] for k in sorted(versions)}}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Candidate:
    """A passed attempt from the history that a test with the same key could reuse."""

    key: str
    run_id: str
    test_id: str
    attempt: int
    hardware: str
    duration_s: float
    finished_at: float
    stack: str
    metrics: Mapping[str, Any]

    def link(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "test_id": self.test_id, "attempt": self.attempt}


def choose(keys: Mapping[str, str], candidates: Iterable[Candidate], live_stacks: Mapping[str, frozenset[str]],
           *, now: float, max_age_s: float | None) -> dict[str, Candidate]:
    """For each test id in ``keys`` (test id -> its cache key; hardware is part of the key),
    the newest candidate the rule allows (see the module docstring). ``live_stacks`` maps a
    hardware kind to the fingerprints of the live workers consuming its queue."""
    best: dict[str, Candidate] = {}
    for c in candidates:
        if max_age_s is not None and c.finished_at < now - max_age_s:
            continue
        if c.stack not in live_stacks.get(c.hardware, frozenset()):
            continue
        held = best.get(c.key)
        if held is None or c.finished_at > held.finished_at:
            best[c.key] = c
    return {test_id: best[key] for test_id, key in keys.items() if key in best}


def parse_max_age(text: str | None) -> float | None:
    """``--reuse`` values: "any" or "" (no limit: None), or seconds with an optional unit
    s/m/h/d/w ("90m", "7d"). ValueError on anything else."""
    if text is None or text.strip().lower() in ("", "any"):
        return None
    match = _AGE.match(text.lower())
    if not match:
        raise ValueError(f"--reuse: {text!r} is not an age (a number with s, m, h, d or w, or 'any')")
    return float(match.group(1)) * _UNIT_S[match.group(2)]
