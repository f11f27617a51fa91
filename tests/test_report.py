"""The report document, its JSON and Markdown, and `dtf report` on a real DuckDB file."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.report import FILE_NAMES, SCHEMA_VERSION, build_report, exit_code, render, write_reports
from dtf.store import Store

from .conftest import dtf_cmd, dtf_env
from .test_report_rows import BASE_ID, RUN_ID, latencies, mixed_tests, row_for, run_row


def baseline_for(tests: list[dict[str, Any]], slower: str) -> dict[str, Any]:
    """A baseline where every passed test ran as now, except ``slower`` ran 25% faster."""
    rows = []
    for t in tests:
        if t["status"] != "passed":
            continue
        base = dict(t, run_id=BASE_ID)
        if t["model"] == slower:
            lat = [x / 1.25 for x in t["metrics"]["latencies_ms"]]
            base["metrics"] = dict(t["metrics"], latencies_ms=lat)
        rows.append(base)
    return {"requested": "latest", "runs": [run_row(BASE_ID, hardware=["cpu"])], "tests": rows, "history": []}


def report(**kw: Any) -> dict[str, Any]:
    tests = mixed_tests()
    return build_report(run_row(), tests, generated_at=time.time(), dtf_version="0.1.0", **kw)


# -- the document ------------------------------------------------------------------------------
def test_the_document_carries_its_schema_version_and_run_provenance() -> None:
    doc = report()
    assert doc["schema"] == "dtf-report" and doc["schema_version"] == SCHEMA_VERSION
    assert doc["run"]["git_sha"].startswith("0123456789") and doc["run"]["branch"] == "main"
    assert doc["run"]["ci_provider"] == "github" and doc["run"]["ci_url"].startswith("https://")
    assert doc["run"]["submitted_at"].endswith("Z")


def test_totals_count_every_status_and_unfinished_tests() -> None:
    totals = report()["totals"]
    assert totals == {"tests": 8, "passed": 3, "flaky": 0, "cached": 0, "failed": 1, "error": 1, "timeout": 1,
                      "quarantined": 0, "skipped": 1, "unfinished": 1}


def test_a_run_with_an_unfinished_test_is_incomplete_and_exits_2() -> None:
    doc = report()
    assert doc["outcome"] == "incomplete" and exit_code(doc) == 2


def test_a_failed_test_makes_the_run_failed_and_exit_1() -> None:
    tests = [t for t in mixed_tests() if t["status"] != "queued"]
    doc = build_report(run_row(), tests)
    assert doc["outcome"] == "failed" and exit_code(doc) == 1


def test_a_passing_run_exits_0_unless_a_regression_is_flagged_and_asked_to_fail() -> None:
    tests = [row_for("bert-base-uncased", center_ms=1.0), row_for("gpt2", center_ms=5.0, seed=3)]
    doc = build_report(run_row(), tests, baseline=baseline_for(tests, slower="gpt2"))
    assert doc["outcome"] == "passed" and doc["regressions"] == 1
    assert exit_code(doc) == 0
    assert exit_code(doc, fail_on_regression=True) == 1


def test_the_matrix_has_one_cell_per_model_and_hardware_that_has_tests() -> None:
    matrix = report()["matrix"]
    assert matrix["hardware"] == ["cpu", "cuda"]
    cells = {(c["model"], c["hardware"]): c for c in matrix["cells"]}
    assert cells[("bert-base-uncased", "cpu")]["outcome"] == "passed"
    assert cells[("gpt2", "cpu")]["outcome"] == "failed"
    assert cells[("bert-base-uncased", "cuda")]["outcome"] == "skipped"
    assert cells[("gpt2", "cuda")]["outcome"] == "incomplete"
    assert ("openai/whisper-tiny", "cuda") not in cells


def test_status_changes_name_tests_that_broke_since_the_baseline() -> None:
    tests = mixed_tests()
    base = baseline_for(tests, slower="none")
    base["tests"].append(row_for("gpt2", family="text_generation", batch_size=4, run_id=BASE_ID))
    changes = build_report(run_row(), tests, baseline=base)["comparison"]["status_changes"]
    assert changes == [{"test_id": "gpt2/cpu/bs4/fp32", "baseline_status": "passed", "status": "failed", "change": "broken"}]


def test_json_is_strict_json_without_nan() -> None:
    tests = mixed_tests()
    tests[0]["metrics"]["latency_p99_ms"] = float("nan")
    text = render(build_report(run_row(), tests), "json")
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["tests"][0]["metrics"]["latency_p99_ms"] is None


names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(names, names, st.sampled_from(["passed", "failed", "error", "timeout", "skipped", "queued"]))
def test_every_format_renders_any_model_name_and_error_text(model: str, error: str, status: str) -> None:
    tests = [row_for(model, status=status, error=error, reason=error, stderr_tail=error)]
    doc = build_report(run_row(), tests)
    assert json.loads(render(doc, "json"))["tests"][0]["model"] == model
    for fmt in ("md", "html", "junit"):
        assert render(doc, fmt)


# -- Markdown ---------------------------------------------------------------------------------------
def test_markdown_has_totals_matrix_failures_regressions_and_slowest_tests() -> None:
    tests = mixed_tests()
    md = render(build_report(run_row(), tests, baseline=baseline_for(tests, slower="gpt2")), "md")
    assert md.startswith("## ⏳ dtf: incomplete, 1 performance regression(s)")
    assert "**8 tests** · ✅ 3 passed · ❌ 1 failed · 💥 1 error · ⌛ 1 timeout · ⏭️ 1 skipped · ⏳ 1 never finished" in md
    assert "| model | cpu | cuda |" in md and "| `gpt2` (synthetic) | ❌ 1 of 2 failed | ⏳ 1 of 1 unfinished |" in md
    assert "### Failures (4)" in md and "AssertionError: check failed: logits are all finite" in md
    assert "**Regressions (1)**" in md and "`gpt2/cpu/bs1/fp32`" in md and "+25.0%" in md
    assert "### Slowest tests" in md
    assert "no worker here serves cuda" in md


def test_markdown_table_cells_survive_pipes_and_newlines() -> None:
    tests = [row_for("m", status="failed", error="a | b\nc")]
    md = render(build_report(run_row(), tests), "md")
    assert "a \\| b c" in md


def test_markdown_stays_under_the_github_comment_limit_for_a_large_run() -> None:
    tests = [row_for(f"model-{i}", status="failed", error="x" * 400, stderr_tail="y\n" * 200, batch_size=b)
             for i in range(300) for b in (1, 2, 4)]
    md = render(build_report(run_row(), tests), "md")
    assert len(md.encode()) < 65536


def test_write_reports_writes_every_format(tmp_path: Path) -> None:
    written = write_reports(report(), tmp_path / "out")
    assert {p.name for p in written.values()} == set(FILE_NAMES.values())
    assert all(p.stat().st_size > 0 for p in written.values())


# -- `dtf report` on a DuckDB file -------------------------------------------------------------------
def _spec(model: str, batch: int) -> TestSpec:
    return TestSpec(test_id=f"{model}/cpu/bs{batch}/fp32", model=model, family="unknown", hardware="cpu",
                    batch_size=batch, precision="fp32", template="generic/default")


def _stored_run(store: Store, run_id: str, submitted: float, center_ms: float, *, fail: str | None = None) -> None:
    specs = [_spec("mlp", 1), _spec("mlp", 4)]
    store.insert_run({"run_id": run_id, "suite_name": "s", "submitted_at": submitted},
                     [RenderedTest(s, "print(1)", "abcd") for s in specs])
    results, updates = [], []
    for s in specs:
        status = "failed" if s.test_id == fail else "passed"
        lat = latencies(center_ms * s.batch_size, seed=s.batch_size)
        results.append(TestResult(run_id=run_id, test_id=s.test_id, attempt=1, status=status, duration_s=1.0,
                                  metrics={"latencies_ms": lat, "latency_p50_ms": sorted(lat)[20]},
                                  error="AssertionError: nope" if status == "failed" else None,
                                  hardware="cpu", started_at=submitted + 1, finished_at=submitted + 2))
        updates.append({"run_id": run_id, "test_id": s.test_id, "status": status, "attempts": 1})
    store.ingest_batch(results, updates, finished_runs=[(run_id, "failed" if fail else "passed")])


@pytest.fixture
def results_db(tmp_path: Path) -> Path:
    db = tmp_path / "r.duckdb"
    with Store(db) as store:
        _stored_run(store, "s-1", 1000.0, 1.0)
        _stored_run(store, "s-2", 2000.0, 1.3)
        _stored_run(store, "s-3", 3000.0, 1.3, fail="mlp/cpu/bs4/fp32")
    return db


def dtf(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dtf_cmd(*args), env=dtf_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_report_from_a_duckdb_file_compares_with_the_latest_earlier_run(tmp_path: Path, results_db: Path) -> None:
    proc = dtf(tmp_path, "report", "s-2", "--db", str(results_db), "--format", "json", "--baseline", "latest")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["run_id"] for r in doc["baseline"]["runs"]] == ["s-1"]
    assert {e["verdict"] for e in doc["comparison"]["entries"]} == {"regression"}


def test_report_exit_code_follows_the_run_and_fail_on_regression(tmp_path: Path, results_db: Path) -> None:
    assert dtf(tmp_path, "report", "s-3", "--db", str(results_db)).returncode == 1
    assert dtf(tmp_path, "report", "s-2", "--db", str(results_db), "--baseline", "s-1").returncode == 0
    assert dtf(tmp_path, "report", "s-2", "--db", str(results_db), "--fail-on-regression").returncode == 1


def test_report_writes_every_format_into_an_output_dir(tmp_path: Path, results_db: Path) -> None:
    out = tmp_path / "reports"
    proc = dtf(tmp_path, "report", "s-3", "--db", str(results_db), "--output-dir", str(out), "--baseline", "latest")
    assert proc.returncode == 1, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(FILE_NAMES.values())
    assert "mlp/cpu/bs4/fp32" in (out / "report.md").read_text()


def test_report_writes_one_format_to_a_file(tmp_path: Path, results_db: Path) -> None:
    target = tmp_path / "j.xml"
    proc = dtf(tmp_path, "report", "s-1", "--db", str(results_db), "--format", "junit", "--out", str(target))
    assert proc.returncode == 0 and proc.stdout == ""
    assert target.read_text().startswith("<?xml")


@pytest.mark.parametrize("args, message", [
    (["s-1", "--format", "pdf"], "unknown report format 'pdf'"),
    (["nope"], "unknown run 'nope'"),
    (["s-2", "--baseline", "nope"], "unknown baseline run 'nope'"),
    (["s-2", "--baseline", "s-2"], "cannot be its own baseline"),
])
def test_report_bad_input_is_one_line_and_exit_2(tmp_path: Path, results_db: Path, args: list[str], message: str) -> None:
    proc = dtf(tmp_path, "report", *args, "--db", str(results_db))
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_report_opens_the_file_read_only(tmp_path: Path, results_db: Path) -> None:
    before = results_db.read_bytes()
    assert dtf(tmp_path, "report", "s-2", "--db", str(results_db), "--baseline", "latest").returncode == 0
    assert results_db.read_bytes() == before


def test_runs_lists_newest_first_from_a_duckdb_file(tmp_path: Path, results_db: Path) -> None:
    proc = dtf(tmp_path, "runs", "--db", str(results_db), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert [r["run_id"] for r in json.loads(proc.stdout)] == ["s-3", "s-2", "s-1"]


def test_store_baselines_are_chosen_per_hardware_from_earlier_finished_runs(results_db: Path) -> None:
    with Store.open_for_reports(results_db) as store:
        assert [r["run_id"] for r in store.earlier_runs("s-3", limit=5)] == ["s-2", "s-1"]
        assert store.earlier_runs("s-1") == []
        data = store.report_data("s-3", baseline="latest", history=5)
    assert [r["run_id"] for r in data["baseline"]["runs"]] == ["s-2"]
    assert sorted({h["run_id"] for h in data["baseline"]["history"]}) == ["s-1", "s-2"]
    assert all(h["fast_ms"] > 0 for h in data["baseline"]["history"])
    assert RUN_ID not in {r["run_id"] for r in data["baseline"]["runs"]}
