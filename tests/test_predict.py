"""Predictions from seeded history match values computed by hand (dtf/predict.py)."""

from __future__ import annotations

import pytest

from dtf.model import TestSpec
from dtf.predict import Observation, observations, predict


def spec(test_id: str = "bert/cpu/bs8/fp32", model: str = "bert", bs: int = 8, memory_gb: float = 1.5,
         family: str = "text_embedding") -> TestSpec:
    return TestSpec(test_id=test_id, model=model, family=family, hardware="cpu", batch_size=bs,
                    precision="fp32", template="t", memory_gb=memory_gb)


def obs(test_id: str, model: str, bs: int, duration: float, peak_mb: float | None = None,
        family: str = "text_embedding", hardware: str = "cpu") -> Observation:
    return Observation(test_id, model, family, hardware, bs, "fp32", duration, peak_mb)


def static(s: TestSpec, bs: int) -> float:
    return 1.0 + 0.25 * bs  # a stand-in for the suite's estimate: 1 GB of weights, 0.25 GB per sample


def test_same_test_few_samples_uses_median_and_mad_but_never_below_the_largest() -> None:
    hist = [obs("bert/cpu/bs8/fp32", "bert", 8, d, peak) for d, peak in [(1.0, 900), (1.2, 1000), (5.0, 1100)]]
    (p,) = predict([spec()], hist, static)
    assert p.basis == "test" and p.samples == 3
    assert p.duration_s == 1.2
    # median 1.2 + 1.645 * 1.4826 * MAD(0.2) = 1.688, below the largest of fewer than 5 samples: 5.0
    assert p.duration_p95_s == 5.0
    assert p.memory_gb == round(1100 / 1024, 4)


def test_same_test_robust_p95_with_five_samples() -> None:
    hist = [obs("bert/cpu/bs8/fp32", "bert", 8, d) for d in [1.0, 1.1, 1.2, 1.3, 9.0]]
    (p,) = predict([spec()], hist, static)
    assert p.duration_s == 1.2
    assert p.duration_p95_s == pytest.approx(1.2 + 1.645 * 1.4826 * 0.1, abs=1e-4)  # the outlier does not drag it to 9
    assert p.memory_gb == 1.5  # no peaks recorded: the static estimate


def test_same_test_many_samples_reads_the_p95_off_the_data() -> None:
    hist = [obs("bert/cpu/bs8/fp32", "bert", 8, float(d)) for d in range(1, 26)]
    (p,) = predict([spec()], hist, static)
    assert p.duration_s == 13.0
    assert p.duration_p95_s == pytest.approx(23.8)  # rank 24 * 0.95 = 22.8 between 23 and 24


def test_other_batch_sizes_fit_a_power_law_and_a_linear_memory() -> None:
    hist = [obs("bert/cpu/bs1/fp32", "bert", 1, 1.0, 1000), obs("bert/cpu/bs4/fp32", "bert", 4, 2.0, 1600),
            obs("bert/cpu/bs16/fp32", "bert", 16, 4.0, 4000)]
    (p,) = predict([spec()], hist, static)
    assert p.basis == "batch-scaling" and "exponent 0.50" in p.detail
    assert p.duration_s == pytest.approx(2.0 * 2 ** 0.5, abs=1e-4)  # from bs4 (as close as bs16 in log): 2 * (8/4)^0.5
    assert p.memory_gb == pytest.approx((800 + 200 * 8) / 1024, abs=1e-4)  # 800 MB fixed + 200 MB per sample


def test_one_other_batch_size_scales_linearly_and_memory_by_the_static_ratio() -> None:
    (p,) = predict([spec()], [obs("bert/cpu/bs2/fp32", "bert", 2, 1.0, 2048)], static)
    assert p.basis == "batch-scaling" and "linearly from bs2" in p.detail
    assert p.duration_s == 4.0
    assert p.memory_gb == pytest.approx(2.0 * static(spec(), 8) / static(spec(), 2), abs=1e-4)


def test_the_family_gives_a_per_sample_median() -> None:
    hist = [obs("roberta/cpu/bs4/fp32", "roberta", 4, 2.0), obs("minilm/cpu/bs2/fp32", "minilm", 2, 0.5),
            obs("resnet/cpu/bs2/fp32", "resnet", 2, 50.0, family="vision")]  # another family: not used
    (p,) = predict([spec()], hist, static)
    assert p.basis == "family" and "2 other text_embedding model(s)" in p.detail
    assert p.duration_s == pytest.approx(0.375 * 8)  # median of 0.5 and 0.25 s per sample
    assert p.memory_gb == 1.5


def test_no_history_is_static_and_keeps_the_default_timeout() -> None:
    other_hw = [obs("bert/cpu/bs8/fp32", "bert", 8, 1.0, hardware="cuda")]
    (p,) = predict([spec()], other_hw, static)
    assert p.basis == "static" and p.duration_s is None and p.samples == 0
    assert p.memory_gb == 1.5
    assert p.timeout_s(300.0) == 300.0


def test_timeout_is_a_multiple_of_p95_with_a_floor() -> None:
    short = predict([spec()], [obs("bert/cpu/bs8/fp32", "bert", 8, 5.0)], static)[0]
    long = predict([spec()], [obs("bert/cpu/bs8/fp32", "bert", 8, 30.0)], static)[0]
    assert short.timeout_s(300.0) == 60.0
    assert long.timeout_s(300.0) == 90.0
    assert long.timeout_s(300.0, multiple=2, floor=10) == 60.0


def test_observations_skip_rows_that_do_not_fit() -> None:
    rows = [
        {"test_id": "a", "model": "m", "family": "f", "hardware": "cpu", "batch_size": 2, "precision": "fp32",
         "duration_s": 1.5, "peak_memory_mb": 100.0},
        {"test_id": "b", "model": "m", "family": "f", "hardware": "cpu", "batch_size": 2, "precision": "fp32",
         "duration_s": "not a number", "peak_memory_mb": None},
        {"test_id": "c"},
    ]
    assert observations(rows) == [Observation("a", "m", "f", "cpu", 2, "fp32", 1.5, 100.0)]
