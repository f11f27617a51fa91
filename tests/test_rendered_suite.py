"""dtf.submission.RenderedSuite: a suite's tests rendered when read, one chunk at a time,
with render errors named as before; and a client submit that takes them chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtf.errors import SuiteError, TemplateError
from dtf.model import RenderedTest, TestSpec
from dtf.submission import RenderedSuite, specs_of
from dtf.suite import load_suite

SUITE = ("name: s\nmodels:\n  - {name: m0, family: generic}\n  - {name: m1, family: generic}\nhardware: [cpu]\n"
         "batch_sizes: [1]\nprecisions: [fp32]\n")


def specs(n: int) -> list[TestSpec]:
    return [TestSpec(f"m{i % 2}/cpu/bs{i}/fp32", f"m{i % 2}", "generic", "cpu", i, "fp32", "generic/x") for i in range(n)]


def suite(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "s.yaml"
    path.write_text(SUITE)
    return load_suite(path)


def test_tests_are_rendered_when_read_one_chunk_at_a_time(tmp_path: Path) -> None:
    rendered: list[str] = []

    def render(spec: TestSpec) -> RenderedTest:
        rendered.append(spec.test_id)
        return RenderedTest(spec, f"print({spec.test_id!r})", "h")

    tests = RenderedSuite(suite(tmp_path), specs(10), render, chunk=4)
    assert len(tests) == 10 and rendered == []  # nothing rendered up front
    assert tests[5].spec.batch_size == 5
    assert len(rendered) == 4  # the chunk holding test 5: tests 4..7
    assert tests[6].source == "print('m0/cpu/bs6/fp32')" and len(rendered) == 4  # the same chunk, kept
    assert [t.spec.batch_size for t in tests[8:10]] == [8, 9]
    assert [t.spec.batch_size for t in tests] == list(range(10))
    assert tests[-1].spec.batch_size == 9
    with pytest.raises(IndexError):
        tests[10]
    assert [s.batch_size for s in specs_of(tests)] == list(range(10)) and len(rendered) == 4 + 2 + 10


def test_a_render_error_names_the_suite_entry_as_before(tmp_path: Path) -> None:
    def render(spec: TestSpec) -> RenderedTest:
        if spec.batch_size == 7:
            raise TemplateError("params.x: expected an int")
        return RenderedTest(spec, "pass", "h")

    tests = RenderedSuite(suite(tmp_path), specs(10), render, chunk=4)
    assert tests[0].source == "pass"
    with pytest.raises(SuiteError, match=r"models\[1\].*params.x: expected an int \(test m1/cpu/bs7/fp32\)"):
        list(tests)
