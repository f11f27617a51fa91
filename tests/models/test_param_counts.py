"""The scheduler's memory estimate from the model's real parameter count: the CLI's
pre-pass (dtf.models.inspect.with_param_counts) fills params.param_count_m for hf/timm
models, leaves test ids alone, caches per model, and falls back silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dtf.models import inspect as mi
from dtf.models.source import ModelSource
from dtf.suite import estimate_memory_gb, expand_suite, load_suite

pytest.importorskip("transformers")
pytest.importorskip("timm")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    mi._MEMO.clear()


def _suite(tmp_path: Path, models: str, hardware: str = "[cpu]") -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: counts\nhardware: {hardware}\nbatch_sizes: [1, 2]\nprecisions: [fp32, bf16]\n"
                    f"defaults: {{iterations: 2, warmup: 1, timeout_s: 120}}\nmodels:\n{models}")
    return path


MODELS = """\
  - {name: tiny-bert, source: hf, path: ./tiny-bert}
  - {name: resnet18, source: timm, weights: random}
  - {name: org/tiny-gpt2, source: hf}
  - {name: bert-base-uncased, source: synthetic}
  - {name: sized, source: hf, weights: random, family: text_embedding, params: {memory_gb: 3.5}}
  - {name: org/not-cached, source: hf}
"""


def test_counts_fill_real_models_only_and_keep_test_ids(tmp_path: Path, tiny_bert: Path, fake_hf_cache: Path) -> None:
    suite = load_suite(_suite(tmp_path, MODELS))
    counted = mi.with_param_counts(suite)
    by_name = {m.name: m for m in counted.models}
    bert = mi.count_params("tiny-bert", ModelSource(source="hf", path=str(tiny_bert)))
    assert by_name["tiny-bert"].params["param_count_m"] == pytest.approx(bert / 1e6)
    assert by_name["resnet18"].params["param_count_m"] == pytest.approx(11.689512)
    assert by_name["org/tiny-gpt2"].params["param_count_m"] > 0  # config from the fake HF cache
    for name in ("bert-base-uncased", "sized", "org/not-cached"):  # synthetic, sized by the suite, missing
        assert "param_count_m" not in by_name[name].params
    before, after = expand_suite(suite), expand_suite(counted)
    assert [s.test_id for s in before] == [s.test_id for s in after]
    for old, new in zip(before, after):
        if new.model == "tiny-bert":  # 0.1 M parameters, not bert-base's 110 M
            assert new.memory_gb == estimate_memory_gb(new.family, new.batch_size, new.precision, new.hardware,
                                                       {"param_count_m": bert / 1e6})
            assert new.memory_gb < old.memory_gb
        elif new.model not in ("tiny-bert", "resnet18", "org/tiny-gpt2"):
            assert new.memory_gb == old.memory_gb


def test_counts_are_cached_per_model_in_memory_and_on_disk(tmp_path: Path, tiny_bert: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    suite = load_suite(_suite(tmp_path, "  - {name: tiny-bert, source: hf, path: ./tiny-bert}\n"))
    calls: list[int] = []
    real = mi._count_in_child

    def counting(requests: Any, timeout_s: float) -> Any:
        calls.append(len(requests))
        return real(requests, timeout_s)

    monkeypatch.setattr(mi, "_count_in_child", counting)
    first = mi.with_param_counts(suite)
    assert calls == [1]
    assert mi.with_param_counts(suite) == first and calls == [1]  # memo
    mi._MEMO.clear()
    assert mi.with_param_counts(suite) == first and calls == [1]  # state dir: param-counts.json
    assert (Path(os.environ["DTF_STATE_DIR"]) / "param-counts.json").is_file()
    # a changed config is a different key: counted again
    config = json.loads((tiny_bert / "config.json").read_text())
    (tiny_bert / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    smaller = mi.with_param_counts(suite)
    assert calls == [1, 1]
    assert smaller.models[0].params["param_count_m"] < first.models[0].params["param_count_m"]


def test_falls_back_silently(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = load_suite(_suite(tmp_path, "  - {name: tiny-bert, source: hf, path: ./tiny-bert}\n"
                                        "  - {name: resnet18, source: timm, weights: random}\n"))
    # transformers and timm not installed: no child, the suite as it was
    monkeypatch.setattr(mi, "installed", lambda: {"torch": "2", "transformers": None, "timm": None})
    monkeypatch.setattr(mi, "_count_in_child", lambda *a, **k: pytest.fail("no child without the packages"))
    assert mi.with_param_counts(suite) is suite
    monkeypatch.undo()
    # the child fails or hangs: the suite as it was
    monkeypatch.setattr(mi, "_CHILD", "import sys; sys.exit(3)")
    assert mi.with_param_counts(suite) is suite
    assert not mi._MEMO  # a failed child is not remembered: the next submit tries again
    monkeypatch.setattr(mi, "_CHILD", "import time; time.sleep(30)")
    assert mi.with_param_counts(suite, timeout_s=1) is suite
    assert not mi._MEMO
    # a config transformers cannot read: that model keeps the family footprint
    monkeypatch.undo()
    mi._MEMO.clear()
    (tiny_bert / "config.json").write_text("{not json")
    counted = mi.with_param_counts(suite)
    assert "param_count_m" not in counted.models[0].params and counted.models[1].params["param_count_m"] > 11


def test_dtf_run_admits_with_the_real_count_and_records_it(tmp_path: Path, tiny_bert: Path) -> None:
    """The estimate a real test records (memory_estimate_gb) is the one the scheduler used,
    from the parameter count the runtime itself finds in the model it loaded."""
    suite = _suite(tmp_path, "  - {name: tiny-bert, source: hf, path: ./tiny-bert}\n")
    suite.write_text(suite.read_text().replace("batch_sizes: [1, 2]", "batch_sizes: [2]").replace("[fp32, bf16]", "[fp32]"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    env.update(DTF_STATE_DIR=str(tmp_path / "state"), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "dtf.cli", "run", str(suite), "--db", str(tmp_path / "r.duckdb"),
                           "--format", "json", "--workers", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (test,) = json.loads(proc.stdout)["tests"]
    metrics = test["metrics"]
    assert test["status"] == "passed"
    assert metrics["param_count"] < 1_000_000  # the tiny model, not a bert-base stand-in
    expected = estimate_memory_gb("text_embedding", 2, "fp32", "cpu", {"param_count_m": metrics["param_count"] / 1e6})
    assert metrics["memory_estimate_gb"] == pytest.approx(expected, abs=1e-4)
    assert test["memory_gb"] == pytest.approx(expected, abs=1e-4)
    assert expected < estimate_memory_gb("text_embedding", 2, "fp32", "cpu")
    assert "peak_rss_mb" in metrics
