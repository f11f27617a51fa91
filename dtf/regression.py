"""Performance regression detection: compare a run's per-iteration latencies with a
baseline's, test by test, with a rule that knows how noisy each measurement is.

Pure logic over plain data (rows shaped like ``Store.final_results``); no I/O. A test is
keyed by (model, hardware, batch size, precision), so a baseline matches even when the
template behind a test changed (that is reported, since it is often the reason).

The rule, for one key with baseline samples ``b`` and current samples ``c`` (the
``latencies_ms`` a test's harness recorded, one per timed iteration):

* the compared location is the fast tail, p10: interference only adds time, so it moves
  the median and the slow tail far more than the fast tail, while a real slowdown of the
  code moves them all; change = p10(c) / p10(b) - 1;
* a **regression** needs the change to be at least ``threshold`` (with the median moving
  the same way by as much), a one-sided Mann-Whitney U test saying ``c`` is
  stochastically larger than ``b`` at level ``alpha``, the change to clear the run's own
  noise band (max of (p50 - p10) / p10 of ``b`` and of ``c``), and, with two or more
  history runs, the current p10 to be ``threshold`` beyond the slowest p10 any of them
  measured; an **improvement** is the mirror image;
* a significant change past the threshold that fails the noise band or the history is
  **noisy**: shown, never flagged. Too few samples on either side is **no-data**; no
  usable baseline is **new**; anything else is **unchanged**.

Why: iterations within one run are not independent of that run's conditions (another
process on the core, a per-process memory layout), so two runs of an unchanged tree differ
by more than Mann-Whitney alone expects. docs/reports.md records the false alarms and
the sensitivity this gives, measured.

Every comparison also says when the *stack* under the test changed between the baseline
and now (``stack_change``: "the stack changed: torch 2.13.0 -> 2.14.1"), from the
provenance real-model tests record (``metrics["provenance"]``, ``metrics["revision"]``,
``metrics["source"]``), since a new torch, driver or device is the first suspect for a
slowdown.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .models.source import result_source

__all__ = [
    "Rule",
    "Comparison",
    "VERDICTS",
    "MetricKey",
    "key_of",
    "mann_whitney_greater",
    "quantile",
    "relative_iqr",
    "compare_samples",
    "compare_runs",
    "count_verdicts",
    "STACK_KEYS",
    "stack_of",
    "stack_changes",
    "stack_change_text",
]

VERDICTS: tuple[str, ...] = ("regression", "improvement", "noisy", "unchanged", "new", "no-data")

MetricKey = tuple[str, str, int, str]


@dataclass(frozen=True)
class Rule:
    """The knobs of the rule; the defaults are the ones docs/reports.md measured."""

    threshold: float = 0.10  # smallest relative change worth a verdict
    alpha: float = 0.01  # one-sided Mann-Whitney U significance level
    noise_factor: float = 1.0  # the change must also exceed this many noise bands
    min_samples: int = 8  # per side; fewer makes the U test meaningless
    fast_quantile: float = 0.1  # the location compared: the fast tail, which interference barely moves

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """The verdict for one test key, with the numbers behind it."""

    model: str
    hardware: str
    batch_size: int
    precision: str
    test_id: str
    verdict: str
    baseline_run_id: str | None = None
    baseline_fast_ms: float | None = None  # the fast-tail latency the rule compares
    current_fast_ms: float | None = None
    baseline_median_ms: float | None = None
    current_median_ms: float | None = None
    change: float | None = None  # relative change of the median latency; +0.2 is 20% slower
    p_value: float | None = None  # one-sided, in the direction of the change
    noise: float | None = None  # relative noise band used
    required: float | None = None  # the change the verdict needed
    baseline_samples: int = 0
    current_samples: int = 0
    baseline_throughput: float | None = None
    current_throughput: float | None = None
    template_changed: bool = False
    note: str = ""
    stack_change: str = ""  # "the stack changed: torch 2.13.0 -> 2.14.1" when it did


    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def flagged(self) -> bool:
        return self.verdict == "regression"


def key_of(row: Mapping[str, Any]) -> MetricKey:
    """(model, hardware, batch size, precision) of a test row."""
    return (str(row["model"]), str(row["hardware"]), int(row["batch_size"]), str(row["precision"]))


# -- the stack a result ran on ------------------------------------------------------------------
# Provenance keys whose change explains a performance change, in the order they are named, with
# the words a finding uses for them. "source" and "revision" are read from the metrics.
STACK_KEYS: tuple[str, ...] = ("source", "torch", "transformers", "timm", "onnxruntime", "torch_cuda", "torch_hip",
                               "driver", "device_name", "onnx_provider", "revision")
_STACK_WORDS = {"torch_cuda": "CUDA", "torch_hip": "HIP", "device_name": "device", "onnx_provider": "ONNX provider",
                "revision": "model revision", "source": "model source"}


def stack_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The stack keys of a result row; {} when it recorded no provenance (a synthetic
    workload, or a result from before provenance was recorded), except its source."""
    metrics = row.get("metrics") or {}
    prov = metrics.get("provenance")
    out: dict[str, Any] = {"source": result_source(row)}
    if isinstance(prov, Mapping):
        for key in STACK_KEYS[1:-1]:
            out[key] = prov.get(key)
    revision = metrics.get("revision") or (prov.get("revision") if isinstance(prov, Mapping) else None)
    if revision is not None:
        out["revision"] = revision
    return out


def stack_changes(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, before, after) for every stack key that differs between two result rows.
    A key one side did not record at all (no provenance, no revision) is not a change."""
    old, new = stack_of(baseline), stack_of(current)
    return [(key, old[key], new[key]) for key in STACK_KEYS
            if key in old and key in new and old[key] != new[key]]


def stack_change_text(changes: Sequence[tuple[str, Any, Any]]) -> str:
    """"the stack changed: torch 2.13.0 -> 2.14.1, driver 550.54 -> 560.28"; "" for none."""
    if not changes:
        return ""
    shown = ", ".join(f"{_STACK_WORDS.get(key, key)} {'none' if old is None else old} -> {'none' if new is None else new}"
                      for key, old, new in changes)
    return f"the stack changed: {shown}"


# -- statistics ----------------------------------------------------------------------------
def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile, q in [0, 1] (the harness's percentile, scaled)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def relative_iqr(values: Sequence[float]) -> float:
    """Interquartile range over the median: a spread that a few outliers do not move."""
    median = quantile(values, 0.5)
    if not median > 0:
        return math.inf
    return (quantile(values, 0.75) - quantile(values, 0.25)) / median


def tail_spread(values: Sequence[float], q: float) -> float:
    """How far the median sits above the fast tail, relative to it: near 0 for a clean
    measurement, large when interference slowed many iterations."""
    fast = quantile(values, q)
    if not fast > 0:
        return math.inf
    return (quantile(values, 0.5) - fast) / fast


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Average ranks (1-based) of values, and the sizes of the groups of ties."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided p-value of the Mann-Whitney U test that ``y`` tends to be larger than ``x``.

    Normal approximation with tie and continuity corrections (good from about 8 samples a
    side). 1.0 when there is no variation at all.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 1.0
    ranks, ties = _ranks([*x, *y])
    u_y = sum(ranks[n1:]) - n2 * (n2 + 1) / 2.0
    n = n1 + n2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if variance <= 0:
        return 1.0
    z = (u_y - n1 * n2 / 2.0 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


# -- the rule ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Verdict:
    verdict: str
    change: float | None = None
    p_value: float | None = None
    noise: float | None = None
    required: float | None = None
    note: str = ""


def _grown(old: float, new: float) -> float:
    """Relative growth from old to new, measured from the smaller side: 20% slower and
    20% faster (in time per iteration) are both 0.2."""
    return new / old - 1.0 if new >= old else old / new - 1.0


def compare_samples(
    baseline: Sequence[float],
    current: Sequence[float],
    rule: Rule = Rule(),
    history_fast: Sequence[float] = (),
) -> _Verdict:
    """The rule applied to two samples of per-iteration latencies (see the module doc).

    ``history_fast`` holds the fast-tail latency of the same key in the baseline run and
    the runs before it; with two or more, a change must also clear all of them.
    """
    if len(baseline) < rule.min_samples or len(current) < rule.min_samples:
        return _Verdict("no-data", note=f"needs {rule.min_samples} timed iterations a side "
                                         f"(has {len(baseline)} and {len(current)})")
    q = rule.fast_quantile
    fast_b, fast_c = quantile(baseline, q), quantile(current, q)
    med_b, med_c = quantile(baseline, 0.5), quantile(current, 0.5)
    if not (fast_b > 0 and fast_c > 0 and med_b > 0 and med_c > 0):
        return _Verdict("no-data", note="a latency is not positive")
    change = fast_c / fast_b - 1.0
    slower = fast_c > fast_b
    size = _grown(fast_b, fast_c)
    noise = max(tail_spread(baseline, q), tail_spread(current, q))
    required = max(rule.threshold, rule.noise_factor * noise)
    median_agrees = (med_c > med_b) == slower and _grown(med_b, med_c) >= rule.threshold
    p = mann_whitney_greater(baseline, current) if slower else mann_whitney_greater(current, baseline)
    word = "slower" if slower else "faster"
    if size < rule.threshold or not median_agrees or p >= rule.alpha:
        return _Verdict("unchanged", change, p, noise, required)
    if size < required:
        return _Verdict("noisy", change, p, noise, required,
                        f"{size:.0%} {word} but within the run's noise band of {noise:.0%}")
    seen = _seen_level(history_fast, fast_c, slower, rule.threshold)
    if seen is not None:
        return _Verdict("noisy", change, p, noise, required,
                        f"{size:.0%} {word}, but an earlier run measured {seen:.4g} ms")
    return _Verdict("regression" if slower else "improvement", change, p, noise, required)


def _seen_level(history: Sequence[float], fast: float, slower: bool, threshold: float) -> float | None:
    """The slowest (or, for an improvement, fastest) earlier run when it comes within
    ``threshold`` of ``fast``: a level this test has reached before on the same code is
    a mode of its environment, not news. None when there is too little history."""
    usable = [h for h in history if h > 0 and math.isfinite(h)]
    if len(usable) < 2:
        return None
    ref = max(usable) if slower else min(usable)
    beyond = fast / ref - 1.0 if slower else ref / fast - 1.0
    return ref if beyond < threshold else None


def _latencies(row: Mapping[str, Any]) -> list[float]:
    values = (row.get("metrics") or {}).get("latencies_ms") or []
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0]


def _throughput(row: Mapping[str, Any]) -> float | None:
    value = (row.get("metrics") or {}).get("throughput_items_s")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _quantile_or_none(values: Sequence[float], q: float) -> float | None:
    return quantile(values, q) if values else None


@dataclass
class _Index:
    rows: dict[MetricKey, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: Iterable[Mapping[str, Any]]) -> "_Index":
        index = cls()
        for row in rows:
            if row.get("status") == "passed":
                index.rows[key_of(row)] = row
        return index


def compare_runs(
    current: Iterable[Mapping[str, Any]],
    baseline: Iterable[Mapping[str, Any]],
    *,
    history: Mapping[MetricKey, Sequence[float]] | None = None,
    rule: Rule = Rule(),
) -> list[Comparison]:
    """One Comparison per passed test of ``current``, against the passed test of the same
    key in ``baseline`` (rows of possibly several baseline runs, one per hardware).

    ``history`` maps a key to the median latencies of that key in earlier runs (the
    baseline's included), which widens the noise band by the between-run spread.
    """
    base = _Index.of(baseline)
    history = history or {}
    out: list[Comparison] = []
    for row in current:
        if row.get("status") != "passed":
            continue
        key = key_of(row)
        out.append(_compare_row(row, base.rows.get(key), history.get(key, ()), rule))
    return sorted(out, key=lambda c: (c.model, c.hardware, c.precision, c.batch_size))


def _compare_row(
    row: Mapping[str, Any], base: Mapping[str, Any] | None, history: Sequence[float], rule: Rule
) -> Comparison:
    model, hardware, batch_size, precision = key_of(row)
    cur = _latencies(row)
    common: dict[str, Any] = dict(
        model=model, hardware=hardware, batch_size=batch_size, precision=precision,
        test_id=str(row["test_id"]), current_median_ms=_quantile_or_none(cur, 0.5),
        current_fast_ms=_quantile_or_none(cur, rule.fast_quantile), current_samples=len(cur),
        current_throughput=_throughput(row),
    )
    if base is None:
        return Comparison(verdict="new", note="no passed test of this key in the baseline", **common)
    old = _latencies(base)
    v = compare_samples(old, cur, rule, history)
    return Comparison(
        verdict=v.verdict, baseline_run_id=base.get("run_id"), baseline_median_ms=_quantile_or_none(old, 0.5),
        baseline_fast_ms=_quantile_or_none(old, rule.fast_quantile),
        change=v.change, p_value=v.p_value, noise=v.noise, required=v.required, baseline_samples=len(old),
        baseline_throughput=_throughput(base),
        template_changed=bool(base.get("template_hash") and row.get("template_hash")
                              and base.get("template_hash") != row.get("template_hash")),
        note=v.note, stack_change=stack_change_text(stack_changes(base, row)), **common,
    )


def count_verdicts(comparisons: Iterable[Comparison]) -> dict[str, int]:
    """{verdict: count} with every verdict present."""
    counts = {v: 0 for v in VERDICTS}
    for c in comparisons:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return counts
