"""Suites that ask for unbounded work or memory are refused up front, in one line: the
matching work of depends_on selectors (not only the edges they make), and params text
that every test of a model carries. YAML aliases make both cheap to write."""

from __future__ import annotations

import pytest

import dtf.suite.expand as expand_module
import dtf.suite.graph as graph_module
from dtf.errors import SuiteError
from dtf.suite import expand_suite, parse_suite

MODELS = [f"m{i}" for i in range(10)]


def doc(**extra: object) -> dict[str, object]:
    return {"name": "limits", "source": "synthetic", "models": MODELS, "hardware": ["cpu"],
            "batch_sizes": [1, 2, 4, 8, 16], "precisions": ["fp32", "fp16"], "chain_batch_sizes": False, **extra}


def test_aliased_copies_of_one_selector_are_matched_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_module, "MAX_SELECTOR_SCANS", 4 * 100)  # 100 tests: four distinct selectors
    edge = {"test": "m1/cpu/bs1/fp32", "after": "m0/cpu/bs1/fp32"}
    specs = expand_suite(parse_suite(doc(depends_on=[edge] * 5000), "s.yaml"))
    assert len(specs) == 100
    assert next(s for s in specs if s.test_id == "m1/cpu/bs1/fp32").depends_on == ("m0/cpu/bs1/fp32",)


def test_too_many_distinct_selectors_are_refused_naming_the_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_module, "MAX_SELECTOR_SCANS", 4 * 100)
    edges = [{"test": f"m{i}/cpu/bs1/fp32", "after": "m0/cpu/bs2/fp32"} for i in range(1, 6)]
    with pytest.raises(SuiteError) as info:
        expand_suite(parse_suite(doc(depends_on=edges), "s.yaml"))
    message = str(info.value)
    assert message.startswith("s.yaml: depends_on[")
    assert "would scan more than 400 tests in all" in message and "\n" not in message


def test_params_text_repeated_in_every_test_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expand_module, "MAX_PARAMS_TEXT", 150_000)
    big = "x" * 10_000  # 10 KB in each of m0's 10 tests: 100 KB; twice that is over the cap
    with pytest.raises(SuiteError, match=r"s\.yaml: models\[0\]\.params: params repeated in every test come to more than 150,000 characters"):
        expand_suite(parse_suite(doc(models=[{"name": "m0", "params": {"blob": big, "again": big}}]), "s.yaml"))
    assert len(expand_suite(parse_suite(doc(models=[{"name": "m0", "params": {"blob": big}}]), "s.yaml"))) == 10


def test_the_real_limits_admit_a_full_size_suite() -> None:
    assert graph_module.MAX_SELECTOR_SCANS >= 100 * expand_module.DEFAULT_MAX_TESTS
    assert expand_module.MAX_PARAMS_TEXT >= expand_module.DEFAULT_MAX_TESTS * 256
