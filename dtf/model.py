"""Plain data shared by every layer: test specs, rendered tests, results, hardware.

No I/O here. Every type round-trips through JSON-safe dicts (`to_dict`/`from_dict`),
which is what travels on the wire and what the store writes.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "HARDWARE_KINDS",
    "PRECISIONS",
    "FINAL_STATUSES",
    "FAILING_STATUSES",
    "UNFINISHED_STATUSES",
    "PASSING_STATUSES",
    "PASSING_ORDER",
    "FINAL_ORDER",
    "FAILING_ORDER",
    "UNFINISHED_ORDER",
    "Status",
    "RunStatus",
    "CANCELLED_REASON",
    "TestSpec",
    "RenderedTest",
    "TestResult",
    "GpuInfo",
    "HardwareProfile",
    "queue_for",
]

HARDWARE_KINDS: tuple[str, ...] = ("cpu", "cuda", "rocm", "mps", "webgpu")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")


class Status(str, enum.Enum):
    """Life cycle of one test. The last eight are final.

    A worker reports only passed, failed, error, timeout or skipped for an attempt; the
    coordinator alone gives a test the other final statuses: ``flaky`` (an attempt failed,
    a retry passed; dtf/flaky.py), ``cached`` (a passing result with the same cache key was
    reused; dtf/cache.py) and ``quarantined`` (the test failed while quarantined). None of
    the three fails a run."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    FLAKY = "flaky"
    CACHED = "cached"
    FAILED = "failed"
    ERROR = "error"
    TIMEOUT = "timeout"
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


# The one status vocabulary. Status is a str enum, so these hold for plain strings too
# ("failed" in FAILING_STATUSES); the *_ORDER tuples are the order reports show them in.
FINAL_ORDER: tuple[Status, ...] = (Status.PASSED, Status.FLAKY, Status.CACHED, Status.FAILED, Status.ERROR,
                                   Status.TIMEOUT, Status.QUARANTINED, Status.SKIPPED)
FAILING_ORDER: tuple[Status, ...] = (Status.FAILED, Status.ERROR, Status.TIMEOUT)
UNFINISHED_ORDER: tuple[Status, ...] = (Status.PENDING, Status.QUEUED, Status.RUNNING)
# A dependant may start after any of these, and they count as passing in every report.
PASSING_ORDER: tuple[Status, ...] = (Status.PASSED, Status.FLAKY, Status.CACHED)
FINAL_STATUSES = frozenset(FINAL_ORDER)
PASSING_STATUSES = frozenset(PASSING_ORDER)
FAILING_STATUSES = frozenset(FAILING_ORDER)
UNFINISHED_STATUSES = frozenset(UNFINISHED_ORDER)


class RunStatus(str, enum.Enum):
    """Life cycle of a run. A cancelled run keeps what had finished; its other tests are
    ``skipped`` with the reason ``CANCELLED_REASON`` (no test status of its own)."""

    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


CANCELLED_REASON = "cancelled"


def queue_for(hardware: str) -> str:
    """The Celery queue that carries tests for one hardware kind."""
    return f"dtf.{hardware}"


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


def _from_fields(cls: type, data: Mapping[str, Any]) -> Any:
    names = _field_names(cls)
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)  # slots: a 100k-test run keeps 100k of these in the coordinator
class TestSpec:
    """One test of the expanded matrix: a model on one hardware kind at one batch size and precision."""

    __test__ = False  # not a pytest class

    test_id: str
    model: str
    family: str
    hardware: str
    batch_size: int
    precision: str
    template: str
    params: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = 300.0
    retries: int = 0
    iterations: int = 10
    warmup: int = 2
    priority: int = 5
    memory_gb: float = 0.0
    depends_on: tuple[str, ...] = ()
    requires: Mapping[str, Any] = field(default_factory=dict)  # what the worker must offer (dtf.requirements)
    # Set by the coordinator at submit from the results history (dtf/predict.py): the
    # predicted median duration, which orders dispatch longest-first within a priority
    # (None: nothing known), and the result cache key (dtf/cache.py).
    predicted_s: float | None = None
    cache_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict recurses through every value and was a tenth of
        # the coordinator's time when storing a large run. params may nest: deep-copied.
        d = {name: getattr(self, name) for name in _SPEC_FIELDS}
        d["params"] = copy.deepcopy(dict(self.params)) if self.params else {}
        d["depends_on"] = list(self.depends_on)
        d["requires"] = copy.deepcopy(dict(self.requires)) if self.requires else {}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TestSpec":
        names = _field_names(cls)
        values = {k: v for k, v in data.items() if k in names}
        values["depends_on"] = tuple(values.get("depends_on") or ())
        values["params"] = dict(values.get("params") or {})
        values["requires"] = dict(values.get("requires") or {})
        for name in _SHARED_TEXT:  # few distinct values across a run: one copy each, not one per test
            if isinstance(values.get(name), str):
                values[name] = sys.intern(values[name])
        return cls(**values)


_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(TestSpec))
_SHARED_TEXT = ("model", "family", "hardware", "precision", "template")


@dataclass(frozen=True)
class RenderedTest:
    """A spec with the Python source its template rendered and that template's content hash."""

    __test__ = False

    spec: TestSpec
    source: str
    template_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "source": self.source, "template_hash": self.template_hash}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RenderedTest":
        return cls(TestSpec.from_dict(data["spec"]), data["source"], data["template_hash"])


@dataclass(frozen=True)
class TestResult:
    """The outcome of one attempt at one test. Keyed by (run_id, test_id, attempt)."""

    __test__ = False

    run_id: str
    test_id: str
    attempt: int
    status: str
    duration_s: float = 0.0
    peak_memory_mb: float = 0.0
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    stderr_tail: str | None = None
    worker_id: str = ""
    hostname: str = ""
    hardware: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["metrics"] = dict(self.metrics)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TestResult":
        result: TestResult = _from_fields(cls, data)
        return result


@dataclass(frozen=True)
class GpuInfo:
    """One accelerator as a probe reported it."""

    vendor: str  # nvidia, amd, apple, intel
    name: str
    memory_mb: float | None = None
    driver: str | None = None
    compute_capability: str | None = None
    index: int | None = None
    uuid: str | None = None
    mig: bool = False
    utilization_percent: float | None = None
    memory_used_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GpuInfo":
        info: GpuInfo = _from_fields(cls, data)
        return info


@dataclass(frozen=True)
class HardwareProfile:
    """What a worker's machine offers, as detection found it."""

    platform: str  # linux, darwin, windows
    container: str | None = None  # docker, kubernetes, or None
    os_release: str = ""
    architecture: str = ""
    hostname: str = ""
    cpu_model: str = ""
    physical_cores: int | None = None
    logical_cores: int | None = None
    cpu_quota: float | None = None  # cores allowed by a cgroup quota
    memory_total_mb: float | None = None
    memory_available_mb: float | None = None
    memory_limit_mb: float | None = None  # cgroup limit
    disk_total_gb: float | None = None
    disk_free_gb: float | None = None
    gpus: tuple[GpuInfo, ...] = ()
    torch_devices: tuple[str, ...] = ()  # e.g. ("cuda", "mps") when torch is installed
    browser: str | None = None  # a Chromium/Chrome binary for webgpu
    hardware_kinds: tuple[str, ...] = ("cpu",)  # kinds this machine can serve
    notes: tuple[str, ...] = ()  # probes that failed or were skipped, and why
    model_sources: tuple[str, ...] = ()  # model sources it can run (dtf.models.source.PACKAGES_FOR_SOURCE)
    model_packages: tuple[str, ...] = ()  # "torch 2.4.1", ...: the installed packages behind them

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["gpus"] = [g.to_dict() for g in self.gpus]
        for key in ("torch_devices", "hardware_kinds", "notes", "model_sources", "model_packages"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HardwareProfile":
        profile: HardwareProfile = _from_fields(cls, data)
        return dataclasses.replace(
            profile,
            gpus=tuple(GpuInfo.from_dict(g) for g in data.get("gpus") or ()),  # dicts on the wire
            torch_devices=tuple(profile.torch_devices),
            hardware_kinds=tuple(profile.hardware_kinds),
            notes=tuple(profile.notes),
            model_sources=tuple(profile.model_sources),
            model_packages=tuple(profile.model_packages),
        )
