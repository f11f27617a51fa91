"""What a validated suite is: the frozen data `parse_suite` builds and `expand_suite`
reads, the keys each part of a suite file may hold, and the limits on its values."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..models.source import ModelSource
from .families import detect_family

__all__ = [
    "DependencyEdge", "ModelEntry", "RunSettings", "Suite", "TestTaskEntry",
    "MAX_BATCH_SIZE", "MODEL_KEYS", "PYTEST_FAMILY", "PYTEST_TEMPLATE", "SUITE_KEYS", "TEST_KEYS", "TEST_SPLITS",
]

MAX_BATCH_SIZE = 4096
MAX_RETRIES = 10
MAX_TIMEOUT_S = 86_400.0  # the broker's visibility timeout must exceed the longest test timeout
MAX_ITERATIONS = 1_000_000

RUN_SETTING_KEYS = ("timeout_s", "retries", "iterations", "warmup")
SUITE_KEYS = (
    "name", "description", "defaults", "models", "hardware", "batch_sizes", "precisions",
    *RUN_SETTING_KEYS, "depends_on", "chain_batch_sizes", "source", "parity", "tests", "requires",
)
SOURCE_KEYS = ("source", "weights", "path", "revision", "task", "parity")
MODEL_KEYS = (
    "name", "family", "template", "params", "hardware", "batch_sizes", "precisions", *RUN_SETTING_KEYS, *SOURCE_KEYS,
    "requires",
)
EDGE_KEYS = ("test", "after")
# `tests:` entries: pytest files run as dtf tasks (collected and shipped by dtf.testtasks)
TEST_KEYS = ("path", "args", "hardware", "split", "root", "timeout_s", "retries", "memory_gb", "requires")
TEST_SPLITS = ("file", "case")
PYTEST_FAMILY = "pytest"
PYTEST_TEMPLATE = "pytest/run"


@dataclass(frozen=True)
class RunSettings:
    """How each test of a model runs: time limit, retries, timed and warm-up iterations."""

    timeout_s: float = 300.0
    retries: int = 0
    iterations: int = 10
    warmup: int = 2


@dataclass(frozen=True)
class ModelEntry:
    """One entry of a suite's `models` list; None means "use the suite's value"."""

    name: str
    family: str | None = None
    template: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    hardware: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] | None = None
    precisions: tuple[str, ...] | None = None
    overrides: Mapping[str, float | int] = field(default_factory=dict)  # subset of RUN_SETTING_KEYS
    source: ModelSource = ModelSource(source="synthetic")  # where the model comes from (resolved)
    source_keys: Mapping[str, Any] = field(default_factory=dict)  # the source keys as written
    requires: Mapping[str, Any] | None = None  # replaces the suite's keys it states (dtf.requirements)

    @property
    def resolved_family(self) -> str:
        """The family the suite names, else the one detected from the model name."""
        return self.family or detect_family(self.name)

    def run_settings(self, defaults: RunSettings) -> RunSettings:
        """The suite's defaults with this model's overrides applied."""
        return _with_settings(defaults, self.overrides)


@dataclass(frozen=True)
class DependencyEdge:
    """Every test matching selector `test` waits for every test matching selector `after`."""

    test: str
    after: str


@dataclass(frozen=True)
class TestTaskEntry:
    """One entry of a suite's `tests` list: a pytest file or folder run as dtf tasks, one
    per file or per collected case (`split`), on each hardware kind. `path` and `root` are
    as written (relative to the suite file's folder); None means "use the suite's value"."""

    __test__ = False  # not a pytest class

    path: str
    args: tuple[str, ...] = ()
    hardware: tuple[str, ...] | None = None
    split: str = "file"
    root: str | None = None
    timeout_s: float | None = None
    retries: int | None = None
    memory_gb: float | None = None
    requires: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "split": self.split}
        if self.args:
            out["args"] = list(self.args)
        if self.hardware is not None:
            out["hardware"] = list(self.hardware)
        for key in ("root", "timeout_s", "retries", "memory_gb"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.requires:
            out["requires"] = dict(self.requires)
        return out


@dataclass(frozen=True)
class Suite:
    """A validated suite file. `source_hash` is the sha256 of the file's bytes."""

    name: str
    models: tuple[ModelEntry, ...]
    hardware: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    precisions: tuple[str, ...] = ("fp32",)
    defaults: RunSettings = RunSettings()
    depends_on: tuple[DependencyEdge, ...] = ()
    chain_batch_sizes: bool = True
    description: str = ""
    source_hash: str = ""
    path: str = "<suite>"
    default_source: str = "hf"
    parity: bool = True
    tests: tuple[TestTaskEntry, ...] = ()
    requires: Mapping[str, Any] = field(default_factory=dict)  # every test's, unless its model or entry says otherwise

    def to_dict(self) -> dict[str, Any]:
        """The suite as a JSON-safe document that `parse_suite` accepts again."""
        return {
            "name": self.name,
            "description": self.description,
            "defaults": asdict(self.defaults),
            "models": [_model_to_dict(m) for m in self.models],
            "hardware": list(self.hardware),
            "batch_sizes": list(self.batch_sizes),
            "precisions": list(self.precisions),
            "depends_on": [{"test": e.test, "after": e.after} for e in self.depends_on],
            "chain_batch_sizes": self.chain_batch_sizes,
            "source": self.default_source,
            "parity": self.parity,
            **({"tests": [t.to_dict() for t in self.tests]} if self.tests else {}),
            **({"requires": dict(self.requires)} if self.requires else {}),
        } if self.models or not self.tests else self._tests_only_dict()

    def _tests_only_dict(self) -> dict[str, Any]:
        """A suite of only `tests:` has no models, batch sizes (or maybe hardware) to write."""
        out = Suite.to_dict(replace(self, tests=()))
        for key in ("models", "batch_sizes", "hardware"):
            if not out[key]:
                del out[key]
        return {**out, "tests": [t.to_dict() for t in self.tests]}


def _with_settings(base: RunSettings, values: Mapping[str, float | int]) -> RunSettings:
    return RunSettings(
        timeout_s=float(values.get("timeout_s", base.timeout_s)),
        retries=int(values.get("retries", base.retries)),
        iterations=int(values.get("iterations", base.iterations)),
        warmup=int(values.get("warmup", base.warmup)),
    )


def _model_to_dict(entry: ModelEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"name": entry.name}
    for key in ("family", "template", "hardware", "batch_sizes", "precisions"):
        value = getattr(entry, key)
        if value is not None:
            out[key] = list(value) if isinstance(value, tuple) else value
    if entry.params:
        out["params"] = copy.deepcopy(dict(entry.params))
    out.update(entry.overrides)
    out.update(entry.source_keys)
    if entry.requires is not None:
        out["requires"] = dict(entry.requires)
    return out
