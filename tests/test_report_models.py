"""Real-model results in every output: the source (synthetic labelled), the stack each result
ran on, and cross-hardware parity against cpu/fp32 computed from the stored fingerprints —
in `dtf results --format json`, the terminal table, the report's JSON, Markdown, HTML and
JUnit, regression findings ("the stack changed") and the dashboard's queries.

Rows are shaped like ``Store.final_results``; their metrics are what the real-model runtime
records (fingerprints made by ``dtf.parity.fingerprint`` on seeded numpy outputs)."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xmlschema

from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.parity import compare, fingerprint
from dtf.regression import compare_runs, stack_change_text, stack_changes
from dtf.report import build_report, render
from dtf.report.parity import lift, parity_label, parity_matrix, source_label, stack_table
from dtf.store import Store

from .conftest import REPO, dtf_cmd, dtf_env
from .test_report_rows import BASE_ID, latencies, row_for, run_row

XSD = REPO / "tests" / "fixtures" / "junit" / "junit-10.xsd"
RNG = np.random.default_rng(7)
LOGITS = RNG.standard_normal((2, 16, 32))  # what cpu/fp32 computed for the seeded input
HIDDEN = RNG.standard_normal((2, 16, 8))


def provenance(hardware: str = "cpu", **changes: Any) -> dict[str, Any]:
    prov: dict[str, Any] = {
        "python": "3.11.7", "platform": "linux-x86_64", "hostname": "w1", "dtf": "0.1.0", "numpy": "2.4.6",
        "torch": "2.14.1", "transformers": "5.25.0", "timm": "1.0.31", "onnxruntime": "1.32.0",
        "huggingface-hub": "2.4.0", "device": "cpu", "device_name": "AMD EPYC", "torch_cuda": "13.0",
        "torch_hip": None, "cudnn": 92400, "hf_offline": True,
    }
    if hardware == "cuda":
        prov.update(hostname="gpu1", device="cuda", device_name="NVIDIA H200", device_memory_mb=143771.0,
                    driver="570.124.06", device_capability="9.0")
    prov.update(changes)
    return prov


def outputs(noise: float = 0.0, seed: int = 1) -> dict[str, np.ndarray]:
    """The model's outputs with relative Gaussian noise: what another backend computes."""
    rng = np.random.default_rng(seed)
    return {"logits": LOGITS + noise * rng.standard_normal(LOGITS.shape),
            "hidden": HIDDEN + noise * rng.standard_normal(HIDDEN.shape)}


def real_row(model: str = "bert-base-uncased", hardware: str = "cpu", precision: str = "fp32", *, batch_size: int = 2,
             noise: float = 0.0, status: str = "passed", source: str = "hf", prov: dict[str, Any] | None = None,
             own_parity: bool = True, revision: str = "86b5e0934494bd15c9632b12f734a8a67f723594", **extra: Any) -> dict[str, Any]:
    """A real-model result: metrics as dtf.models.runtime records them."""
    row = row_for(model, hardware, batch_size, precision, status="passed", family="text_embedding", **extra)
    fp = fingerprint(outputs(noise))
    candidate = f"{hardware}/{precision}"
    if (hardware, precision) == ("cpu", "fp32"):
        parity = {"verdict": "reference", "candidate": candidate}
    else:
        parity = compare(fingerprint(outputs()), fp, precision=precision, candidate_name=candidate).to_dict()
    row["metrics"].update({"source": source, "weights": "random", "provenance": prov or provenance(hardware),
                           "revision": revision, "fingerprint": fp, "load_time_s": 2.5, "param_count": 109482240})
    if own_parity:
        row["metrics"]["parity"] = parity
    row["status"] = status
    if status == "failed" and parity.get("verdict") == "fail":
        row["error"] = row["reason"] = f"parity: {parity['message']}"
    return row


def real_run() -> list[dict[str, Any]]:
    """bert on cpu fp32 (reference) and bf16, cuda fp16 drifting past fp16's tolerance (the
    test failed), a skipped rocm test, and a synthetic workload."""
    return [
        real_row(),
        real_row(precision="bf16", noise=0.01),
        real_row(hardware="cuda", precision="fp32", noise=1e-4),
        real_row(hardware="cuda", precision="fp16", noise=0.5, status="failed"),
        {**row_for("bert-base-uncased", "rocm", 2, "fp16", status="skipped", reason="no worker serves rocm"),
         "model_source": "hf"},
        row_for("tiny-synth", batch_size=2, family="vision"),
    ]


# -- source and lifting ---------------------------------------------------------------------
def test_synthetic_workloads_are_labelled_synthetic_and_real_models_by_their_source() -> None:
    real, synthetic = real_row(), row_for("tiny-synth")
    assert source_label(real) == "hf" and source_label(synthetic) == "synthetic"
    assert source_label({**row_for("x", status="skipped"), "model_source": "timm"}) == "timm"


def test_lift_puts_source_provenance_and_parity_at_the_top_without_copying_the_fingerprint() -> None:
    row = real_row(precision="bf16", noise=0.01)
    metrics_before = json.loads(json.dumps(row["metrics"]))
    lifted = lift(row)
    assert lifted["source"] == "hf" and lifted["weights"] == "random"
    assert lifted["provenance"]["torch"] == "2.14.1"
    assert lifted["provenance"]["revision"] == "86b5e0934494bd15c9632b12f734a8a67f723594"
    assert lifted["parity"]["verdict"] == "pass" and lifted["parity"]["reference"] == "cpu/fp32"
    assert "fingerprint" not in lifted and lifted["metrics"] == metrics_before == row["metrics"]
    synthetic = lift(row_for("tiny-synth"))
    assert synthetic["source"] == "synthetic" and synthetic["provenance"] is None and "parity" not in synthetic


def test_the_terminal_parity_label_reads_verdict_and_max_relative_error() -> None:
    passed = real_row(precision="bf16", noise=0.01)
    rel = passed["metrics"]["parity"]["max_rel"]
    assert parity_label(passed) == f"pass {rel:.1e}".replace("e-0", "e-")
    assert parity_label(real_row(hardware="cuda", precision="fp16", noise=0.5)).startswith("FAIL ")
    assert parity_label(real_row()) == "ref"
    assert parity_label(row_for("tiny-synth")) == ""


# -- the parity matrix -------------------------------------------------------------------------
def test_the_parity_matrix_compares_every_backend_with_the_runs_cpu_fp32_from_the_fingerprints() -> None:
    [group] = parity_matrix(real_run())
    assert (group["model"], group["source"], group["batch_size"]) == ("bert-base-uncased", "hf", 2)
    assert group["reference_test_id"] == "bert-base-uncased/cpu/bs2/fp32"
    cells = {c["candidate"]: c for c in group["cells"]}
    assert [c["candidate"] for c in group["cells"]] == ["cpu/fp32", "cpu/bf16", "cuda/fp32", "cuda/fp16", "rocm/fp16"]
    assert cells["cpu/fp32"]["verdict"] == "reference"
    assert cells["cpu/bf16"]["verdict"] == "pass" and cells["cpu/bf16"]["basis"] == "run"
    assert cells["cuda/fp32"]["verdict"] == "pass" and cells["cuda/fp32"]["max_abs"] < 1e-3
    fp16 = cells["cuda/fp16"]
    assert fp16["verdict"] == "fail" and fp16["max_abs"] > fp16["tolerance"]
    assert fp16["message"].startswith("cuda/fp16 differs from cpu/fp32: max abs ")
    assert cells["rocm/fp16"]["verdict"] == "n/a" and "skipped" in cells["rocm/fp16"]["message"]
    assert group["counts"] == {"reference": 1, "pass": 2, "fail": 1, "n/a": 1}


def test_the_matrix_numbers_are_dtf_parity_compare_of_the_stored_fingerprints() -> None:
    tests = real_run()
    [group] = parity_matrix(tests)
    cell = next(c for c in group["cells"] if c["candidate"] == "cpu/bf16")
    expected = compare(tests[0]["metrics"]["fingerprint"], tests[1]["metrics"]["fingerprint"],
                       precision="bf16", candidate_name="cpu/bf16")
    assert (cell["max_abs"], cell["max_rel"], cell["tolerance"], cell["output"]) == (
        expected.max_abs, expected.max_rel, expected.tolerance, expected.output)


def test_without_a_cpu_fp32_result_in_the_run_the_tests_own_verdict_is_shown() -> None:
    [group] = parity_matrix([real_row(hardware="cuda", precision="fp16", noise=1e-3)])
    [cell] = group["cells"]
    assert group["reference_test_id"] is None
    assert (cell["verdict"], cell["basis"]) == ("pass", "test")
    [group] = parity_matrix([real_row(hardware="cuda", precision="fp16", own_parity=False)])
    assert group["cells"][0]["verdict"] == "n/a" and "no cpu/fp32 result" in group["cells"][0]["message"]


def test_a_failure_of_the_tests_own_check_is_a_failure_even_when_the_run_comparison_passes() -> None:
    failing = real_row(precision="bf16", noise=0.01)
    failing["metrics"]["parity"] = {"reference": "cpu/fp32", "candidate": "cpu/bf16", "verdict": "fail",
                                    "max_abs": 1.4, "max_rel": 1.4, "tolerance": 0.21, "output": "logits",
                                    "message": "cpu/bf16 differs from cpu/fp32: max abs 1.4e+00 > 2.1e-01 on logits"}
    [group] = parity_matrix([real_row(), failing])
    cell = group["cells"][1]
    assert (cell["verdict"], cell["basis"], cell["run_verdict"], cell["max_abs"]) == ("fail", "test", "pass", 1.4)


def test_parity_switched_off_and_synthetic_workloads() -> None:
    off = real_row(precision="bf16")
    off["metrics"]["parity"] = {"verdict": "off", "candidate": "cpu/bf16"}
    [group] = parity_matrix([real_row(), off, row_for("tiny-synth")])
    assert [c["verdict"] for c in group["cells"]] == ["reference", "off"]
    assert parity_matrix([row_for("tiny-synth"), row_for("tiny-synth", precision="bf16")]) == []


def test_models_of_one_name_from_two_sources_are_not_compared_with_each_other() -> None:
    groups = parity_matrix([real_row(), real_row(precision="bf16", source="onnx", noise=0.01)])
    assert [(g["source"], g["reference_test_id"]) for g in groups] == [
        ("hf", "bert-base-uncased/cpu/bs2/fp32"), ("onnx", None)]


# -- the stack table ------------------------------------------------------------------------------
def test_the_stack_table_has_one_row_per_distinct_stack_per_hardware() -> None:
    tests = [*real_run(),
             real_row(hardware="cuda", precision="bf16", noise=0.01,
                      prov=provenance("cuda", hostname="gpu2", driver="560.35.03", torch="2.13.0"))]
    stacks = stack_table(tests)
    assert [(s["hardware"], s["stack"]["driver"], s["tests"]) for s in stacks] == [
        ("cpu", None, 2), ("cuda", "570.124.06", 2), ("cuda", "560.35.03", 1)]
    assert stacks[1]["stack"]["device_name"] == "NVIDIA H200" and stacks[1]["hosts"] == ["gpu1"]
    assert stacks[2]["stack"]["torch"] == "2.13.0" and stacks[2]["hosts"] == ["gpu2"]


# -- the report document and its formats ---------------------------------------------------------
def doc_of(tests: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return build_report(run_row(), tests, generated_at=1_795_000_100.0, **kw)


def test_the_json_report_carries_source_provenance_parity_matrix_and_stacks() -> None:
    doc = json.loads(render(doc_of(real_run()), "json"))
    by_id = {t["test_id"]: t for t in doc["tests"]}
    fp16 = by_id["bert-base-uncased/cuda/bs2/fp16"]
    assert fp16["source"] == "hf" and fp16["provenance"]["device_name"] == "NVIDIA H200"
    assert fp16["parity"]["verdict"] == "fail" and "fingerprint" not in fp16 and "fingerprint" in fp16["metrics"]
    synth = by_id["tiny-synth/cpu/bs2/fp32"]
    assert synth["source"] == "synthetic" and synth["provenance"] is None
    assert by_id["bert-base-uncased/rocm/bs2/fp16"]["source"] == "hf"  # skipped: from the spec
    assert doc["sources"] == {"hf": 5, "synthetic": 1}
    assert doc["matrix"]["sources"] == {"bert-base-uncased": ["hf"], "tiny-synth": ["synthetic"]}
    assert doc["parity"][0]["counts"]["fail"] == 1 and [s["hardware"] for s in doc["stacks"]] == ["cpu", "cuda"]


def test_markdown_shows_sources_the_parity_matrix_and_the_stack() -> None:
    md = render(doc_of(real_run()), "md")
    assert "| `bert-base-uncased` (hf) |" in md and "| `tiny-synth` (synthetic) |" in md
    assert "### Parity against cpu/fp32" in md
    assert "**`bert-base-uncased`** (hf), batch 2: reference `bert-base-uncased/cpu/bs2/fp32`" in md
    fp16 = next(line for line in md.splitlines() if line.startswith("| `cuda/fp16` |"))
    assert "❌ FAIL: cuda/fp16 differs from cpu/fp32: max abs" in fp16
    assert next(line for line in md.splitlines() if line.startswith("| `cpu/bf16` |")).endswith("✅ pass |")
    assert "### Stack" in md and "| cuda | 2 | gpu1 | NVIDIA H200 |" in md and "570.124.06" in md
    assert "1 synthetic test(s) (built-in workloads) record no stack." in md
    assert "sources: 5 hf, 1 synthetic" in md


def test_an_all_synthetic_run_has_no_parity_or_stack_section_but_says_synthetic() -> None:
    md = render(doc_of([row_for("tiny-synth"), row_for("tiny-synth", precision="bf16")]), "md")
    assert "Parity against" not in md and "### Stack" not in md and "(synthetic)" in md


def test_html_shows_sources_the_parity_matrix_and_the_stack() -> None:
    html = render(doc_of(real_run()), "html")
    assert '<table class="parity">' in html and "<code>cuda/fp16</code>" in html
    assert 'class="verdict fail"' in html and 'class="verdict pass"' in html
    assert '<span class="source synthetic"' in html and '<span class="source" title="real model from hf">hf</span>' in html
    assert "<h2>Stack</h2>" in html and "NVIDIA H200" in html and "570.124.06" in html
    fp16 = next(t for t in real_run() if t["test_id"] == "bert-base-uncased/cuda/bs2/fp16")
    assert f"<td>{parity_label(fp16)}</td>" in html and parity_label(fp16).startswith("FAIL ")  # tests table


def test_junit_carries_the_parity_verdict_and_a_parity_failure_with_its_message(tmp_path: Path) -> None:
    text = render(doc_of(real_run()), "junit")
    xmlschema.XMLSchema(str(XSD)).validate(text)
    root = ET.fromstring(text)
    cuda = next(s for s in root.iter("testsuite") if s.get("name") == "smoke on cuda")
    props = {p.get("name"): p.get("value") for p in cuda.iter("property")}
    assert props["dtf.parity.text_embedding.bert-base-uncased.bs2 fp32"].startswith("pass max_abs=")
    assert props["dtf.parity.text_embedding.bert-base-uncased.bs2 fp16"].startswith("fail ")
    case = next(c for c in cuda.iter("testcase") if c.get("name") == "bs2 fp16")
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "parity"
    assert failure.get("message", "").startswith("cuda/fp16 differs from cpu/fp32: max abs ")
    out = case.findtext("system-out") or ""
    assert "source: hf" in out and "parity: fail " in out
    synth = next(c for c in root.iter("testcase") if c.get("classname") == "vision.tiny-synth")
    assert "source: synthetic" in (synth.findtext("system-out") or "")


# -- regression findings name a changed stack -------------------------------------------------------
def _timed(row: dict[str, Any], center_ms: float, seed: int) -> dict[str, Any]:
    lat = latencies(center_ms, seed=seed)
    row["metrics"]["latencies_ms"] = lat
    return row


def test_a_regression_whose_stack_changed_says_so() -> None:
    base = _timed(real_row(run_id=BASE_ID, prov=provenance(torch="2.13.0")), 1.0, 1)
    now = _timed(real_row(), 1.3, 2)
    [c] = compare_runs([now], [base])
    assert c.verdict == "regression"
    assert c.stack_change == "the stack changed: torch 2.13.0 -> 2.14.1"
    baseline = {"requested": "latest", "runs": [run_row(BASE_ID, hardware=["cpu"])], "tests": [base], "history": []}
    doc = doc_of([now], baseline=baseline)
    assert doc["comparison"]["entries"][0]["stack_change"] == "the stack changed: torch 2.13.0 -> 2.14.1"
    md = render(doc, "md")
    line = next(row for row in md.splitlines() if row.startswith("| `bert-base-uncased/cpu/bs2/fp32`") and "%" in row)
    assert "(the stack changed: torch 2.13.0 -> 2.14.1)" in line
    assert "the stack changed: torch 2.13.0 -&gt; 2.14.1" in render(doc, "html")
    assert "the stack changed: torch 2.13.0 -&gt; 2.14.1" in render(doc, "junit", regressions_fail=True)


def test_stack_changes_name_driver_device_provider_revision_and_source() -> None:
    base = real_row(hardware="cuda", run_id=BASE_ID, revision="aaa")
    now = real_row(hardware="cuda", prov=provenance("cuda", driver="575.51.03", device_name="NVIDIA H100",
                                                    onnx_provider="CUDAExecutionProvider", hostname="other"),
                   revision="bbb")
    assert stack_change_text(stack_changes(base, now)) == (
        "the stack changed: driver 570.124.06 -> 575.51.03, device NVIDIA H200 -> NVIDIA H100, "
        "ONNX provider none -> CUDAExecutionProvider, model revision aaa -> bbb")
    assert stack_changes(row_for("x"), real_row(model="x")) == [("source", "synthetic", "hf")]
    # Same stack on another host, or a baseline without provenance: nothing to say.
    assert stack_changes(real_row(), real_row(prov=provenance(hostname="elsewhere"))) == []
    assert stack_changes(row_for("x"), row_for("x")) == []


def test_an_unchanged_stack_adds_nothing_to_a_regression() -> None:
    [c] = compare_runs([_timed(real_row(), 1.3, 2)], [_timed(real_row(run_id=BASE_ID), 1.0, 1)])
    assert c.verdict == "regression" and c.stack_change == ""


# -- `dtf results` and the dashboard's queries from a real DuckDB file ------------------------------
def _store_real_run(db: Path) -> str:
    run_id = "real-1"
    tests = real_run()
    specs = []
    for t in tests:
        params = {"model_source": {"source": "hf", "weights": "random"}} if t["model"] != "tiny-synth" else {}
        specs.append(TestSpec(test_id=t["test_id"], model=t["model"], family=t["family"], hardware=t["hardware"],
                              batch_size=t["batch_size"], precision=t["precision"], template="models/torch",
                              params=params))
    with Store(db) as store:
        store.insert_run({"run_id": run_id, "suite_name": "real", "submitted_at": 1000.0},
                         [RenderedTest(s, "print(1)", "abcd") for s in specs])
        results = [TestResult(run_id=run_id, test_id=t["test_id"], attempt=1, status=t["status"], duration_s=1.0,
                              metrics=t["metrics"], error=t.get("error"), hardware=t["hardware"],
                              started_at=1001.0, finished_at=1002.0)
                   for t in tests if t["status"] != "skipped"]
        updates = [{"run_id": run_id, "test_id": t["test_id"], "status": t["status"], "attempts": 1,
                    "reason": t.get("reason")} for t in tests]
        store.ingest_batch(results, updates, finished_runs=[(run_id, "failed")])
    return run_id


@pytest.fixture
def real_db(tmp_path: Path) -> Path:
    db = tmp_path / "real.duckdb"
    _store_real_run(db)
    return db


def test_results_json_lifts_source_provenance_and_parity(tmp_path: Path, real_db: Path) -> None:
    proc = subprocess.run(dtf_cmd("results", "real-1", "--db", str(real_db), "--format", "json"),
                          env=dtf_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # the cuda/fp16 test failed its parity check
    by_id = {t["test_id"]: t for t in json.loads(proc.stdout)["tests"]}
    fp16 = by_id["bert-base-uncased/cuda/bs2/fp16"]
    assert fp16["source"] == "hf" and fp16["provenance"]["driver"] == "570.124.06"
    assert fp16["provenance"]["revision"] == "86b5e0934494bd15c9632b12f734a8a67f723594"
    assert fp16["parity"]["verdict"] == "fail" and fp16["parity"]["reference"] == "cpu/fp32"
    assert "fingerprint" not in fp16 and "fingerprint" in fp16["metrics"]
    assert by_id["bert-base-uncased/rocm/bs2/fp16"]["source"] == "hf"
    assert by_id["tiny-synth/cpu/bs2/fp32"]["source"] == "synthetic"
    assert by_id["tiny-synth/cpu/bs2/fp32"]["provenance"] is None and "parity" not in by_id["tiny-synth/cpu/bs2/fp32"]


def test_results_table_has_source_and_parity_columns(tmp_path: Path, real_db: Path) -> None:
    proc = subprocess.run(dtf_cmd("results", "real-1", "--db", str(real_db)), env=dtf_env(COLUMNS="250"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if "test" in line and "source" in line)
    assert "parity" in header
    row = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in lines
           if line.startswith("│") and line.split("│")[1].strip()}
    assert row["bert-base-uncased/cuda/bs2/fp16"][:2] == ["hf", "failed"]
    assert row["bert-base-uncased/cuda/bs2/fp16"][2].startswith("FAIL ")
    assert row["bert-base-uncased/cpu/bs2/bf16"][2].startswith("pass ")
    assert row["bert-base-uncased/cpu/bs2/fp32"][2] == "ref"
    assert row["tiny-synth/cpu/bs2/fp32"][:2] == ["synthetic", "passed"]
    assert "parity: cuda/fp16 differs from cpu/fp32" in row["bert-base-uncased/cuda/bs2/fp16"][-1]


def test_the_dashboards_matrix_and_trends_carry_each_models_source(real_db: Path) -> None:
    with Store(real_db, read_only=True) as store:
        cells = {(c["model"], c["hardware"]): c for c in store.run_matrix("real-1")}
        trends = {(s["model"], s["hardware"], s["precision"]): s for s in store.metric_trends(5)}
    assert cells[("bert-base-uncased", "cpu")]["sources"] == ["hf"]
    assert cells[("bert-base-uncased", "rocm")]["sources"] == ["hf"]  # skipped: from the spec
    assert cells[("tiny-synth", "cpu")]["sources"] == ["synthetic"]
    assert trends[("tiny-synth", "cpu", "fp32")]["sources"] == ["synthetic"]
    assert trends[("bert-base-uncased", "cuda", "fp32")]["sources"] == ["hf"]
    with Store(real_db, read_only=True) as store:
        rows = {r["test_id"]: r for r in store.final_results("real-1")}
    assert rows["bert-base-uncased/rocm/bs2/fp16"]["model_source"] == "hf"
    assert rows["tiny-synth/cpu/bs2/fp32"]["model_source"] is None
