"""Model types round-trip through the JSON-safe dicts that travel on the wire and reach the store."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dtf.model import (
    FAILING_STATUSES,
    FINAL_STATUSES,
    HARDWARE_KINDS,
    PRECISIONS,
    GpuInfo,
    HardwareProfile,
    RenderedTest,
    Status,
    TestResult,
    TestSpec,
    queue_for,
)

# JSON values as they come back from json.loads: no tuples, no NaN (NaN != NaN).
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
names = st.text(min_size=1, max_size=30)
maybe_float = st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False)
maybe_int = st.none() | st.integers(min_value=0, max_value=4096)
short_texts = st.lists(st.text(max_size=20), max_size=4).map(tuple)

specs = st.builds(
    TestSpec,
    test_id=names,
    model=names,
    family=names,
    hardware=st.sampled_from(HARDWARE_KINDS),
    batch_size=st.integers(min_value=1, max_value=4096),
    precision=st.sampled_from(PRECISIONS),
    template=names,
    params=st.dictionaries(st.text(), json_values, max_size=5),
    timeout_s=st.floats(min_value=0.1, max_value=1e5),
    retries=st.integers(min_value=0, max_value=10),
    iterations=st.integers(min_value=1, max_value=1000),
    warmup=st.integers(min_value=0, max_value=100),
    priority=st.integers(min_value=-100, max_value=100),
    memory_gb=st.floats(min_value=0, max_value=1e4),
    depends_on=st.lists(names, max_size=4).map(tuple),
)

results = st.builds(
    TestResult,
    run_id=names,
    test_id=names,
    attempt=st.integers(min_value=0, max_value=100),
    status=st.sampled_from([s.value for s in Status]),
    duration_s=st.floats(min_value=0, max_value=1e6),
    peak_memory_mb=st.floats(min_value=0, max_value=1e7),
    metrics=st.dictionaries(st.text(), json_values, max_size=6),
    error=st.none() | st.text(),
    stderr_tail=st.none() | st.text(),
    worker_id=st.text(max_size=30),
    hostname=st.text(max_size=30),
    hardware=st.sampled_from(HARDWARE_KINDS),
    started_at=st.floats(min_value=0, max_value=2e9),
    finished_at=st.floats(min_value=0, max_value=2e9),
)

gpus = st.builds(
    GpuInfo,
    vendor=st.sampled_from(["nvidia", "amd", "apple", "intel"]),
    name=names,
    memory_mb=maybe_float,
    driver=st.none() | st.text(max_size=20),
    compute_capability=st.none() | st.sampled_from(["8.0", "9.0"]),
    index=maybe_int,
    uuid=st.none() | st.uuids().map(str),
    mig=st.booleans(),
    utilization_percent=st.none() | st.floats(min_value=0, max_value=100),
    memory_used_mb=maybe_float,
)

profiles = st.builds(
    HardwareProfile,
    platform=st.sampled_from(["linux", "darwin", "windows"]),
    container=st.none() | st.sampled_from(["docker", "kubernetes"]),
    os_release=st.text(max_size=20),
    architecture=st.sampled_from(["x86_64", "arm64"]),
    hostname=st.text(max_size=20),
    cpu_model=st.text(max_size=20),
    physical_cores=maybe_int,
    logical_cores=maybe_int,
    cpu_quota=maybe_float,
    memory_total_mb=maybe_float,
    memory_available_mb=maybe_float,
    memory_limit_mb=maybe_float,
    disk_total_gb=maybe_float,
    disk_free_gb=maybe_float,
    gpus=st.lists(gpus, max_size=3).map(tuple),
    torch_devices=short_texts,
    browser=st.none() | st.text(max_size=20),
    hardware_kinds=st.lists(st.sampled_from(HARDWARE_KINDS), min_size=1, max_size=5, unique=True).map(tuple),
    notes=short_texts,
)


def over_the_wire(data: dict[str, Any]) -> Any:
    """What the other side of a JSON message decodes."""
    return json.loads(json.dumps(data))


@given(specs)
def test_spec_survives_a_json_round_trip(spec: TestSpec) -> None:
    assert TestSpec.from_dict(over_the_wire(spec.to_dict())) == spec


@given(specs, st.text(), st.text(max_size=64))
def test_rendered_test_survives_a_json_round_trip(spec: TestSpec, source: str, template_hash: str) -> None:
    rendered = RenderedTest(spec, source, template_hash)
    assert RenderedTest.from_dict(over_the_wire(rendered.to_dict())) == rendered


@given(results)
def test_result_survives_a_json_round_trip(result: TestResult) -> None:
    assert TestResult.from_dict(over_the_wire(result.to_dict())) == result


@given(profiles)
def test_hardware_profile_survives_a_json_round_trip(profile: HardwareProfile) -> None:
    back = HardwareProfile.from_dict(over_the_wire(profile.to_dict()))
    assert back == profile
    assert all(isinstance(g, GpuInfo) for g in back.gpus)


def test_spec_to_dict_is_plain_json_types() -> None:
    spec = TestSpec("t1", "bert", "encoder", "cuda", 8, "fp16", "encoder/latency", params={"seq": 128},
                    depends_on=("t0",))
    d = spec.to_dict()
    assert d["depends_on"] == ["t0"]
    assert type(d["params"]) is dict
    assert json.loads(json.dumps(d)) == d


def test_from_dict_ignores_keys_it_does_not_know() -> None:
    """A newer sender may add fields; an older receiver must still decode the message."""
    data = TestResult("r", "t", 1, "passed").to_dict() | {"added_in_a_later_version": 42}
    assert TestResult.from_dict(data) == TestResult("r", "t", 1, "passed")


def test_spec_from_dict_fills_defaults_for_missing_optional_fields() -> None:
    spec = TestSpec.from_dict({"test_id": "t", "model": "m", "family": "f", "hardware": "cpu",
                               "batch_size": 1, "precision": "fp32", "template": "x"})
    assert spec.depends_on == () and spec.params == {} and spec.retries == 0


def test_status_prints_as_its_value() -> None:
    assert str(Status.TIMEOUT) == "timeout"
    assert Status("passed") is Status.PASSED


def test_failing_statuses_are_final_and_exclude_passed_and_skipped() -> None:
    assert FAILING_STATUSES < FINAL_STATUSES
    assert Status.PASSED not in FAILING_STATUSES and Status.SKIPPED not in FAILING_STATUSES
    assert not {Status.PENDING, Status.QUEUED, Status.RUNNING} & FINAL_STATUSES


def test_every_hardware_kind_has_a_dtf_queue() -> None:
    assert [queue_for(kind) for kind in HARDWARE_KINDS] == [
        "dtf.cpu", "dtf.cuda", "dtf.rocm", "dtf.mps", "dtf.webgpu"
    ]
