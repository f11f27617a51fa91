"""Which model sources a worker can run: `dtf detect --json`, the heartbeat, `dtf workers`;
and a test whose source's package is missing is skipped with a reason naming it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dtf.app import make_app
from dtf.cli.fleet import workers_table
from dtf.hardware import detect, format_profile
from dtf.harness import Skip
from dtf.model import HardwareProfile
from dtf.models import inspect as mi
from dtf.models import runtime
from dtf.settings import Settings
from dtf.store import Store
from dtf.worker import WorkerRuntime

REAL_FIND_SPEC = importlib.util.find_spec


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Packages `names` look uninstalled to find_spec (what require() and detect() ask)."""
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in names else REAL_FIND_SPEC(name, *a))


def test_detect_reports_the_sources_this_interpreter_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    profile = detect()
    versions = mi.installed()
    expected = tuple(s for s, needs in runtime.PACKAGES_FOR_SOURCE.items() if all(versions[p] for p in needs))
    assert profile.model_sources == expected and "synthetic" in expected
    if versions["torch"]:
        assert f"torch {versions['torch']}" in profile.model_packages
    assert HardwareProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    rows = dict(format_profile(profile))
    assert rows["model sources"] == ", ".join(expected)
    _hide(monkeypatch, "timm", "onnxruntime")
    hidden = detect()
    assert "timm" not in hidden.model_sources and "onnx" not in hidden.model_sources
    assert not any(p.startswith(("timm ", "onnxruntime ")) for p in hidden.model_packages)
    # playing another machine: nothing claimed about its packages
    other = "windows" if sys.platform.startswith("linux") else "linux"
    assert detect(platform=other, run=lambda argv, timeout: None, read_file=lambda p: None, env={}).model_sources == ()


def test_dtf_detect_json_lists_model_sources() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    proc = subprocess.run([sys.executable, "-m", "dtf.cli", "detect", "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model_sources"] == list(mi.runnable_sources())
    assert all(" " in p for p in data["model_packages"])


def test_the_heartbeat_carries_the_sources_to_dtf_workers(tmp_path: Path) -> None:
    profile = HardwareProfile(platform="linux", hostname="gpu-box", model_sources=("onnx", "synthetic"),
                              model_packages=("onnxruntime 1.17.0",))
    app = make_app(Settings(spool_dir=str(tmp_path / "spool")))
    worker = WorkerRuntime(app, worker_id="w1@gpu-box", queues=["dtf.cpu"], profile=profile)
    body = worker.heartbeat_body()
    assert body["worker"]["hardware"]["model_sources"] == ["onnx", "synthetic"]
    store = Store(tmp_path / "s.duckdb")
    try:
        store.upsert_worker(body["worker"])
        rows = store.workers()
    finally:
        store.close()
    assert rows[0]["hardware"]["model_sources"] == ["onnx", "synthetic"]  # `dtf workers --format json`
    console = Console(record=True, width=400)
    console.print(workers_table(rows, rows[0]["last_seen"]))
    text = console.export_text()
    assert "sources" in text and "onnx, synthetic" in text


class _Harness:
    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}

    def metric(self, name: str, value: Any) -> None:
        self.metrics[name] = value

    def skip(self, reason: str) -> None:
        raise Skip(reason)


@pytest.mark.parametrize(("source", "missing"), [("timm", "timm"), ("hf", "transformers"), ("hf", "torch"),
                                                  ("onnx", "onnxruntime")])
def test_the_runtime_skips_naming_the_missing_package(monkeypatch: pytest.MonkeyPatch, source: str, missing: str) -> None:
    _hide(monkeypatch, missing)
    h = _Harness()
    cfg = {"source": {"source": source, "weights": "random", "path": "/x.onnx" if source == "onnx" else None},
           "model": "m", "hardware": "cpu", "precision": "fp32", "batch_size": 1}
    with pytest.raises(Skip, match=f"^{missing} is not installed on this worker"):
        runtime.main(h, cfg)
    assert h.metrics["source"] == source and "provenance" in h.metrics


def test_dtf_run_skips_a_timm_model_on_a_machine_without_timm(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['timm'] = None  # find_spec('timm') -> None\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent("""\
        name: no-timm
        hardware: [cpu]
        batch_sizes: [1]
        models:
          - {name: resnet18, source: timm, weights: random}
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    env.update(PYTHONPATH=str(hide), DTF_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run([sys.executable, "-m", "dtf.cli", "run", str(suite), "--db", str(tmp_path / "r.duckdb"),
                           "--format", "json", "--workers", "1"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    (test,) = json.loads(proc.stdout)["tests"]
    assert test["status"] == "skipped", proc.stderr[-2000:]
    assert "timm is not installed on this worker" in json.dumps(test)
    assert proc.returncode == 0
