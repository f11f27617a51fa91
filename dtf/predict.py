"""How long a test will take and how much memory it will need, predicted from history.

Pure: the caller hands in past results (`Observation`, one per passed attempt) and the specs
to predict; no store, broker or clock here. Each prediction says which basis it used, most
specific first, so an operator can check it by hand:

1. ``test``: the same test id on the same hardware. Duration: the median; p95 from the
   empirical quantile when there are 20 or more samples, else median + 1.645 x 1.4826 x MAD
   (a normal p95 with the MAD as a robust sigma), never below the largest of the last few
   samples when there are fewer than 5. Memory: the largest peak seen.
2. ``batch-scaling``: the same model, hardware and precision at other batch sizes. With two
   or more batch sizes, duration follows a power law ``d = a * bs ** b`` fitted by Theil-Sen
   (the median of pairwise slopes in log-log space, robust to one bad run), ``b`` kept in
   [0, 1.5]; memory follows ``m = c + k * bs`` fitted the same way (k >= 0). With one batch
   size, duration scales linearly (b = 1, an upper bound: batching is rarely worse than
   linear) and memory by the ratio of the static estimates.
3. ``family``: the same family, hardware and precision (other models): the median duration
   per sample, times the batch size; memory stays the static estimate.
4. ``static``: no history; duration unknown, memory the suite's static estimate.

Only passed attempts count: a failure can end early and a timeout is cut at its limit.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from .model import TestSpec

__all__ = ["Observation", "Prediction", "Predictor", "predict", "observations", "DEFAULT_TIMEOUT_MULTIPLE", "DEFAULT_TIMEOUT_FLOOR_S"]

DEFAULT_TIMEOUT_MULTIPLE = 3.0  # a predicted timeout is this many times the predicted p95 ...
DEFAULT_TIMEOUT_FLOOR_S = 60.0  # ... and never under this
_EMPIRICAL_MIN = 20  # samples from which the p95 is read off the data instead of the MAD
_MAD_TO_SIGMA = 1.4826
_Z95 = 1.645
_MAX_EXPONENT = 1.5


@dataclass(frozen=True)
class Observation:
    """One passed attempt from the results history."""

    test_id: str
    model: str
    family: str
    hardware: str
    batch_size: int
    precision: str
    duration_s: float
    peak_memory_mb: float | None = None


@dataclass(frozen=True)
class Prediction:
    """What one test is expected to cost, and why."""

    test_id: str
    basis: str  # test | batch-scaling | family | static
    detail: str  # one line a person can check: the samples and the fit used
    samples: int
    duration_s: float | None  # the median (typical) duration; None on a static basis
    duration_p95_s: float | None
    memory_gb: float

    def timeout_s(self, default: float, *, multiple: float = DEFAULT_TIMEOUT_MULTIPLE,
                  floor: float = DEFAULT_TIMEOUT_FLOOR_S) -> float:
        """``multiple`` x the predicted p95 with a floor; ``default`` when nothing is known."""
        if self.duration_p95_s is None:
            return default
        return round(max(floor, multiple * self.duration_p95_s), 1)

    def to_dict(self) -> dict[str, object]:
        return {
            "test_id": self.test_id, "basis": self.basis, "detail": self.detail, "samples": self.samples,
            "duration_s": self.duration_s, "duration_p95_s": self.duration_p95_s, "memory_gb": self.memory_gb,
        }


StaticMemory = Callable[[TestSpec, int], float]


def predict(specs: Sequence[TestSpec], history: Iterable[Observation], static_memory_gb: StaticMemory) -> list[Prediction]:
    """One prediction per spec, in the specs' order. ``static_memory_gb(spec, batch_size)`` is
    the suite's own estimate for that spec at another batch size (used to scale a single
    observed batch size's memory)."""
    return Predictor(history, static_memory_gb).predict(specs)


class Predictor:
    """The history indexed once, for predicting many specs (a large submit arrives in chunks)."""

    def __init__(self, history: Iterable[Observation], static_memory_gb: StaticMemory) -> None:
        self.static_memory_gb = static_memory_gb
        self.by_test: dict[tuple[str, str], list[Observation]] = {}
        self.by_model: dict[tuple[str, str, str], list[Observation]] = {}
        self.by_family: dict[tuple[str, str, str], list[Observation]] = {}
        for obs in history:
            if not (obs.duration_s >= 0 and math.isfinite(obs.duration_s)):
                continue
            self.by_test.setdefault((obs.test_id, obs.hardware), []).append(obs)
            if obs.batch_size > 0:
                self.by_model.setdefault((obs.model, obs.hardware, obs.precision), []).append(obs)
                self.by_family.setdefault((obs.family, obs.hardware, obs.precision), []).append(obs)

    def predict(self, specs: Sequence[TestSpec]) -> list[Prediction]:
        return [self.one(spec) for spec in specs]

    def one(self, spec: TestSpec) -> Prediction:
        same = self.by_test.get((spec.test_id, spec.hardware))
        if same:
            return _from_test(spec, same)
        model = self.by_model.get((spec.model, spec.hardware, spec.precision))
        if model:
            return _from_batch_sizes(spec, model, self.static_memory_gb)
        family = self.by_family.get((spec.family, spec.hardware, spec.precision))
        if family:
            return _from_family(spec, family)
        return Prediction(spec.test_id, "static", "no history: the suite's static memory estimate", 0,
                          None, None, round(spec.memory_gb, 4))


def _from_test(spec: TestSpec, rows: Sequence[Observation]) -> Prediction:
    durations = [o.duration_s for o in rows]
    median, p95 = _median_p95(durations)
    peaks = [o.peak_memory_mb for o in rows if o.peak_memory_mb]
    memory = round(max(peaks) / 1024, 4) if peaks else round(spec.memory_gb, 4)
    detail = f"{len(rows)} passed run(s) of this test on {spec.hardware}: median {median:.3g} s, p95 {p95:.3g} s"
    return Prediction(spec.test_id, "test", detail, len(rows), round(median, 4), round(p95, 4), memory)


def _from_batch_sizes(spec: TestSpec, rows: Sequence[Observation], static_memory_gb: StaticMemory) -> Prediction:
    per_bs: dict[int, list[Observation]] = {}
    for o in rows:
        per_bs.setdefault(o.batch_size, []).append(o)
    sizes = sorted(per_bs)
    medians = {bs: _median_p95([o.duration_s for o in per_bs[bs]]) for bs in sizes}
    peaks = {bs: max((o.peak_memory_mb or 0.0) for o in per_bs[bs]) for bs in sizes}
    target = spec.batch_size
    if len(sizes) >= 2:
        points = [(math.log(bs), math.log(max(medians[bs][0], 1e-9))) for bs in sizes]
        exponent = min(_MAX_EXPONENT, max(0.0, _theil_sen_slope(points)))
        ref = min(sizes, key=lambda bs: abs(math.log(bs) - math.log(target)))
        how = f"power law fitted over batch sizes {sizes} (exponent {exponent:.2f}), from bs{ref}"
    else:
        ref = sizes[0]
        exponent = 1.0
        how = f"scaled linearly from bs{ref}"
    factor = (target / ref) ** exponent
    median = medians[ref][0] * factor
    p95 = medians[ref][1] * factor
    if len(sizes) >= 2 and all(peaks[bs] > 0 for bs in sizes):
        slope = max(0.0, _theil_sen_slope([(float(bs), peaks[bs]) for bs in sizes]))
        intercept = statistics.median(peaks[bs] - slope * bs for bs in sizes)
        memory = (intercept + slope * target) / 1024
    elif peaks[ref] > 0:
        memory = peaks[ref] / 1024 * static_memory_gb(spec, target) / max(static_memory_gb(spec, ref), 1e-9)
    else:
        memory = spec.memory_gb
    detail = f"{len(rows)} passed run(s) of {spec.model} on {spec.hardware} at {spec.precision}: {how}"
    return Prediction(spec.test_id, "batch-scaling", detail, len(rows), round(median, 4), round(p95, 4),
                      round(max(memory, 0.0), 4))


def _from_family(spec: TestSpec, rows: Sequence[Observation]) -> Prediction:
    per_sample = [o.duration_s / o.batch_size for o in rows]
    median, p95 = _median_p95(per_sample)
    models = len({o.model for o in rows})
    detail = (f"{len(rows)} passed run(s) of {models} other {spec.family} model(s) on {spec.hardware}: "
              f"median {median:.3g} s per sample x bs{spec.batch_size}")
    return Prediction(spec.test_id, "family", detail, len(rows), round(median * spec.batch_size, 4),
                      round(p95 * spec.batch_size, 4), round(spec.memory_gb, 4))


def _median_p95(values: Sequence[float]) -> tuple[float, float]:
    """The median and a robust p95 (see the module docstring)."""
    ordered = sorted(values)
    median = statistics.median(ordered)
    if len(ordered) >= _EMPIRICAL_MIN:
        return median, _quantile(ordered, 0.95)
    mad = statistics.median(abs(v - median) for v in ordered)
    p95 = median + _Z95 * _MAD_TO_SIGMA * mad
    if len(ordered) < 5:
        p95 = max(p95, ordered[-1])
    return median, p95


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) on sorted values."""
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _theil_sen_slope(points: Sequence[tuple[float, float]]) -> float:
    """The median of the slopes between every pair of points with distinct x."""
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1:] if x2 != x1]
    return statistics.median(slopes) if slopes else 0.0


def observations(rows: Iterable[Mapping[str, object]]) -> list[Observation]:
    """Observations from store rows (results joined with tests); rows that do not fit are skipped."""
    out = []
    for row in rows:
        try:
            out.append(Observation(
                str(row["test_id"]), str(row["model"]), str(row["family"]), str(row["hardware"]),
                int(row["batch_size"] or 0),  # type: ignore[call-overload]
                str(row["precision"]), float(row["duration_s"]),  # type: ignore[arg-type]
                float(row["peak_memory_mb"]) if row.get("peak_memory_mb") is not None else None,  # type: ignore[arg-type]
            ))
        except (KeyError, TypeError, ValueError):
            continue
    return out
