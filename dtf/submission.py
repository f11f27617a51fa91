"""Getting a suite ready to submit, and collecting a run's results afterwards.

Every bad-input error (suite, templates, baseline) surfaces here, before anything reaches
a broker. ``client`` is a ``dtf.client.CoordinatorClient`` (or anything with its ``call``).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, overload

from .errors import DtfError
from .model import RenderedTest, TestSpec, queue_for

__all__ = ["template_registry", "prepare_suite", "RenderedSuite", "run_meta", "unserved", "unserved_routes", "baseline_choice",
           "check_baseline", "collect", "specs_of"]

RENDER_CHUNK = 200  # tests rendered at a time: the submit's chunk size


class RenderedSuite(Sequence[RenderedTest]):
    """A suite's tests, rendered when they are read, RENDER_CHUNK at a time; only the last
    chunk read is kept. A rendered test is about 17 KB of source (built-in templates), and
    each differs from the next (its id, batch size and precision are in it): 100k tests held
    at once were 1.7 GB, where their specs are 60 MB. Reading the suite twice renders it
    twice (once to check every test before anything is sent, once to send it)."""

    def __init__(self, suite: Any, specs: Sequence[TestSpec], render: Callable[[TestSpec], RenderedTest],
                 chunk: int = RENDER_CHUNK) -> None:
        self.suite = suite
        self.specs = list(specs)
        self._render = render
        self._size = max(1, chunk)
        self._cached: tuple[int, list[RenderedTest]] = (-1, [])

    def __len__(self) -> int:
        return len(self.specs)

    def _chunk(self, index: int) -> list[RenderedTest]:
        from .suite import render_suite  # a render error becomes a SuiteError naming the model entry

        start = index - index % self._size
        if self._cached[0] != start:
            self._cached = (start, render_suite(self.suite, self.specs[start:start + self._size], self._render))
        return self._cached[1]

    @overload
    def __getitem__(self, index: int) -> RenderedTest: ...

    @overload
    def __getitem__(self, index: slice) -> list[RenderedTest]: ...

    def __getitem__(self, index: int | slice) -> RenderedTest | list[RenderedTest]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self._chunk(index)[index % self._size]

    def __iter__(self) -> Iterator[RenderedTest]:
        for start in range(0, len(self), self._size):
            yield from self._chunk(start)


def template_registry(template_dirs: Iterable[str | Path], extra: Sequence[Path] | None = None) -> Any:
    """The template registry over the configured folders and any given on the command line."""
    from .templates import TemplateRegistry

    return TemplateRegistry([Path(p) for p in template_dirs] + list(extra or []))


def prepare_suite(suite_path: Path, registry: Any) -> tuple[Any, RenderedSuite]:
    """Load, validate and expand a suite; its tests are rendered as they are read (RenderedSuite)."""
    from .models.inspect import with_param_counts  # real parameter counts for memory estimates
    from .suite import expand_suite, load_suite
    from .testtasks import collect_tests  # `tests:` entries: pytest collection here, at submit

    suite = with_param_counts(load_suite(suite_path))
    specs = expand_suite(suite, resolve_template=registry.resolve, collect_tests=collect_tests)
    return suite, RenderedSuite(suite, specs, registry.render)


def run_meta(suite: Any) -> dict[str, Any]:
    """A new run's id and where it came from (suite, git commit, branch, CI job)."""
    from .provenance import provenance

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    prov = provenance()
    return {
        "run_id": f"{suite.name}-{stamp}-{uuid.uuid4().hex[:6]}",
        "suite_name": suite.name,
        "suite_hash": suite.source_hash,
        "submitted_at": time.time(),
        "git_sha": prov["git_sha"],
        "branch": prov["branch"],
        "ci_url": prov["ci_url"],
        "info": {"ci_provider": prov["ci_provider"], "suite_path": str(suite.path)},
    }


def unserved(client: Any, tests: Sequence[RenderedTest]) -> list[str]:
    """Hardware kinds of these tests whose queue no live worker consumes while others are live."""
    served = {q for w in client.call("workers") if w.get("state") != "offline" for q in (w.get("queues") or ())}
    if not served:
        return []  # no live worker at all (a cluster starting up): nothing to judge by
    return sorted({s.hardware for s in specs_of(tests) if queue_for(s.hardware) not in served})


def specs_of(tests: Sequence[RenderedTest]) -> Sequence[TestSpec]:
    """The specs of ``tests`` without rendering them (a RenderedSuite keeps its specs)."""
    return tests.specs if isinstance(tests, RenderedSuite) else [t.spec for t in tests]


def requirement_sets(tests: Sequence[RenderedTest]) -> dict[str, dict[str, Any]]:
    """queue -> {hardware, requires, label, tests} for every requirement set of these tests."""
    from .requirements import describe, queue_of

    sets: dict[str, dict[str, Any]] = {}
    for t in tests:
        if t.spec.requires:
            entry = sets.setdefault(queue_of(t.spec), {"hardware": t.spec.hardware, "requires": dict(t.spec.requires),
                                                       "label": describe(t.spec.requires), "tests": 0})
            entry["tests"] += 1
    return sets


def unserved_routes(workers: Sequence[dict[str, Any]], tests: Sequence[RenderedTest]) -> dict[str, dict[str, Any]]:
    """The requirement sets of these tests that no live worker satisfies, by queue; each with
    what the live workers of its kind lack (``lacking``: worker id -> reasons).

    ``workers`` are the coordinator's worker rows (their heartbeats: queues, hardware, tags).
    A worker counts when it is live and consumes the set's hardware queue (so a kind whose
    health check failed does not count)."""
    from .model import HardwareProfile
    from .requirements import unmet

    live = [w for w in workers if w.get("state") != "offline"]
    out: dict[str, dict[str, Any]] = {}
    for queue, entry in requirement_sets(tests).items():
        lacking: dict[str, list[str]] = {}
        served = False
        for w in live:
            if queue_for(entry["hardware"]) not in (w.get("queues") or ()):
                continue
            raw = w.get("hardware")
            hardware: dict[str, Any] = raw if isinstance(raw, dict) else {}
            missing = unmet(HardwareProfile.from_dict({"platform": "", **hardware}), hardware.get("tags") or (),
                            entry["hardware"], entry["requires"])
            if not missing:
                served = True
                break
            lacking[str(w.get("worker_id"))] = missing
        if not served:
            out[queue] = {**entry, "lacking": lacking}
    return out


def baseline_choice(baseline: Optional[str], fail_on_regression: bool) -> Optional[str]:
    """--fail-on-regression with no --baseline compares with the latest earlier run."""
    if baseline is not None and not baseline.strip():
        raise DtfError("--baseline: give a run id or 'latest'")
    return baseline or ("latest" if fail_on_regression else None)


def check_baseline(client: Any, baseline: Optional[str]) -> None:
    """An explicit baseline run must exist: fail before submitting, not after the run."""
    if baseline and baseline != "latest":
        try:
            client.call("status", run_id=baseline)
        except DtfError as exc:
            raise DtfError(f"--baseline {baseline}: {exc}") from None


def collect(client: Any, run_id: str, baseline: Optional[str], reports_wanted: bool) -> tuple[Any, Any]:
    """A run's results, and its report data when reports or a baseline were asked for."""
    data = client.call("results", run_id=run_id)
    wanted = reports_wanted or baseline
    report_data = client.call("report", run_id=run_id, baseline=baseline, timeout_s=120) if wanted else None
    return data, report_data
