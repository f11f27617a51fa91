"""Dependencies between the tests of a suite: the `model/hardware/bsN/precision` selectors
of `depends_on`, the dependency map expansion fills in (the batch-size chain, then the
explicit edges, both budgeted), and the check for dangling ids and cycles."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import NamedTuple

from ..errors import SuiteError
from ..model import HARDWARE_KINDS, PRECISIONS, TestSpec
from .check import _Checker, _show
from .data import Suite

__all__ = ["MAX_DEPENDENCY_EDGES", "MAX_SELECTOR_SCANS", "validate_dependencies"]

MAX_DEPENDENCY_EDGES = 1_000_000  # a wildcard selector pair could otherwise ask for max_tests**2
MAX_SELECTOR_SCANS = 20_000_000  # distinct selectors x tests: 200 selectors over 100k tests, about 10 s
_BATCH_PART = re.compile(r"bs[1-9][0-9]*")
_GLOB_CHARS = frozenset("*?[")


class _Selector(NamedTuple):
    """`model/hardware/bsN/precision`; each part may be a glob such as ``*``."""

    text: str
    model: str
    hardware: str
    batch: str
    precision: str


def _parse_selector(check: _Checker, value: object, where: str) -> _Selector:
    text = value if isinstance(value, str) else ""
    parts = text.rsplit("/", 3)
    if len(parts) != 4 or not all(parts):
        expected = "a selector model/hardware/bsN/precision (parts may be *)"
        raise check.error(where, f"expected {expected}, got {_show(value)}")
    selector = _Selector(text, *parts)
    kinds = ((selector.hardware, HARDWARE_KINDS, "hardware"), (selector.precision, PRECISIONS, "precision"))
    for part, allowed, what in kinds:
        if part not in allowed and not _GLOB_CHARS & set(part):
            expected = f"expected one of {', '.join(allowed)} or a * pattern"
            raise check.error(where, f"unknown {what} {part!r} in selector {text!r} ({expected})")
    if not _BATCH_PART.fullmatch(selector.batch) and not _GLOB_CHARS & set(selector.batch):
        expected = "a batch part like bs4 (or a * pattern)"
        raise check.error(where, f"expected {expected} in selector {text!r}, got {selector.batch!r}")
    return selector



def _dependency_map(suite: Suite, specs: Sequence[TestSpec]) -> dict[str, tuple[str, ...]]:
    """test id -> the ids it waits for: the batch-size chain first, then explicit edges."""
    deps: dict[str, dict[str, None]] = {s.test_id: {} for s in specs}
    if suite.chain_batch_sizes:
        previous: dict[tuple[str, str, str], str] = {}
        for spec in specs:  # specs come batch-ascending within each (model, hardware)
            key = (spec.model, spec.hardware, spec.precision)
            if key in previous:
                deps[spec.test_id][previous[key]] = None
            previous[key] = spec.test_id
    budget = MAX_DEPENDENCY_EDGES
    check = _Checker(suite.path)
    # Each distinct selector is matched once (YAML aliases repeat the same text), and the
    # matching itself is budgeted: distinct selectors x tests scanned, not only the edges.
    found: dict[str, list[str]] = {}
    scans = [MAX_SELECTOR_SCANS]

    def matching(text: str, where: str) -> list[str]:
        if text not in found:
            scans[0] -= len(specs)
            if scans[0] < 0:
                raise check.error(where, f"depends_on selectors would scan more than {MAX_SELECTOR_SCANS:,} tests "
                                         "in all; use fewer distinct selectors (globs match many tests at once)")
            found[text] = _matching(check, text, where, specs)
        return found[text]

    for i, edge in enumerate(suite.depends_on):
        tests = matching(edge.test, f"depends_on[{i}].test")
        afters = matching(edge.after, f"depends_on[{i}].after")
        budget -= len(tests) * len(afters)
        if budget < 0:
            raise check.error(f"depends_on[{i}]", f"selectors ask for more than {MAX_DEPENDENCY_EDGES} edges in all")
        for test in tests:
            deps[test].update((after, None) for after in afters if after != test)  # never itself
    return {tid: tuple(parents) for tid, parents in deps.items() if parents}


def _matching(check: _Checker, text: str, where: str, specs: Sequence[TestSpec]) -> list[str]:
    selector = _parse_selector(check, text, where)
    found = [s.test_id for s in specs if _selects(selector, s)]
    if not found:
        raise check.error(where, f"selector {text!r} matches no test of the suite (dangling dependency)")
    return found


def _selects(selector: _Selector, spec: TestSpec) -> bool:
    slug = spec.test_id.rsplit("/", 3)[0]
    return (
        (_glob(spec.model, selector.model) or _glob(slug, selector.model))
        and _glob(spec.hardware, selector.hardware)
        and _glob(f"bs{spec.batch_size}", selector.batch)
        and _glob(spec.precision, selector.precision)
    )


def _glob(value: str, pattern: str) -> bool:
    return value == pattern or fnmatch.fnmatchcase(value, pattern)


def validate_dependencies(specs: Sequence[TestSpec], *, path: str = "<tests>") -> None:
    """Raise SuiteError on a duplicate test id, a dependency on a test that is not in
    `specs` (dangling), or a dependency cycle (listing its test ids)."""
    known: set[str] = set()
    for spec in specs:
        if spec.test_id in known:
            raise SuiteError(path, "tests", f"duplicate test id {spec.test_id!r}")
        known.add(spec.test_id)
    for spec in specs:
        for parent in spec.depends_on:
            if parent not in known:
                message = f"{spec.test_id!r} depends on {parent!r}, which is not a test of the suite"
                raise SuiteError(path, "depends_on", f"{message} (dangling dependency)")
    cycle = _find_cycle(specs)
    if cycle:
        raise SuiteError(path, "depends_on", f"dependency cycle: {' -> '.join(cycle)} (each waits for the next)")


def _find_cycle(specs: Sequence[TestSpec]) -> list[str] | None:
    """One cycle as [a, b, ..., a] where each waits for the next; iterative, so a chain of
    thousands of tests does not hit the recursion limit."""
    parents = {s.test_id: s.depends_on for s in specs}
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in parents:
        if root in state:
            continue
        path, stack = [root], [iter(parents[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(parents[nxt]))
    return None
