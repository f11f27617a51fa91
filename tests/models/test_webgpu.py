"""Real models on the webgpu queue: an ONNX file (built here, or exported from a tiny
transformers folder) run in headless Chromium through onnxruntime-web's WebGPU execution
provider, served from loopback, with parity against ONNX Runtime's CPU provider. Without a
GPU the adapter is Chromium's software one (SwiftShader), and the results must say so.

Needs Debian's chromium and onnxruntime-web from npm (`python -m dtf.models.webgpu setup`);
skipped locally when either is missing, a failure under CI (.ci/run installs both).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dtf import harness
from dtf.models import webgpu

from ..conftest import IN_CI, dtf_cmd, dtf_env

# Resolved at import, before the fixtures point DTF_STATE_DIR at an empty temp dir.
ORT_WEB = webgpu.ort_web_dir()
BROWSER = webgpu.find_browser()


def need_webgpu_stack() -> tuple[str, Path]:
    missing = []
    if BROWSER is None:
        missing.append("chromium (apt-get install chromium)")
    if ORT_WEB is None:
        missing.append("onnxruntime-web (python -m dtf.models.webgpu setup)")
    if missing:
        if IN_CI:
            pytest.fail(f"{', '.join(missing)} required under CI but not installed")
        pytest.skip(f"{', '.join(missing)} not installed")
    assert BROWSER is not None and ORT_WEB is not None
    return BROWSER, ORT_WEB


def tiny_mlp_onnx(path: Path) -> Path:
    """A 2-layer MLP (16 -> 32 -> relu -> 8) with seeded weights, batch dimension free."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((16, 32)).astype(np.float32) / 4, "b1": rng.standard_normal(32).astype(np.float32) / 4,
        "w2": rng.standard_normal((32, 8)).astype(np.float32) / 4, "b2": rng.standard_normal(8).astype(np.float32) / 4,
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["y0"]),
        helper.make_node("Add", ["y0", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny-mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# -- the adapter label, pure -------------------------------------------------------------------


def test_a_software_adapter_is_labelled_fallback_and_a_gpu_is_not() -> None:
    swiftshader = {"vendor": "google", "architecture": "swiftshader", "isFallbackAdapter": False}
    assert webgpu.is_fallback(swiftshader)
    assert webgpu.adapter_label(swiftshader) == "software fallback (SwiftShader)"
    assert webgpu.is_fallback({"vendor": "mesa", "description": "llvmpipe (LLVM 15.0.6, 256 bits)"})
    assert webgpu.adapter_label({"vendor": "x", "isFallbackAdapter": True}) == "software fallback (unknown software adapter)"
    nvidia = {"vendor": "nvidia", "architecture": "hopper", "description": "NVIDIA H200", "isFallbackAdapter": False}
    assert not webgpu.is_fallback(nvidia)
    assert webgpu.adapter_label(nvidia) == "nvidia hopper NVIDIA H200"


# -- what is missing skips with its name -------------------------------------------------------


def _run_main(source: dict[str, Any], *, precision: str = "fp32", batch: int = 2, **params: Any) -> harness.Harness:
    h = harness.Harness()
    cfg = {"model": "tiny", "family": "unknown", "hardware": "webgpu", "batch_size": batch, "precision": precision,
           "iterations": 3, "warmup": 1, "params": {"browser_timeout_s": 240, **params}, "source": source,
           "memory_gb": 0.3}
    webgpu.main(h, cfg)
    return h


def test_no_browser_skips_naming_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTF_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(harness.Skip, match="Chromium or Chrome binary"):
        _run_main({"source": "onnx", "path": str(tmp_path / "m.onnx")})


def test_no_onnxruntime_web_skips_with_the_setup_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if BROWSER is None:
        pytest.skip("chromium not installed")
    monkeypatch.setenv("DTF_ORT_WEB_DIR", str(tmp_path / "empty"))
    with pytest.raises(harness.Skip, match=r"onnxruntime-web is not installed .*dtf.models.webgpu setup"):
        _run_main({"source": "onnx", "path": str(tmp_path / "m.onnx")})


def test_int8_is_skipped_not_faked(tmp_path: Path) -> None:
    with pytest.raises(harness.Skip, match="runs fp32 and fp16, not int8"):
        _run_main({"source": "onnx", "path": str(tmp_path / "m.onnx")}, precision="int8")


# -- real runs in headless Chromium -----------------------------------------------------------


@pytest.mark.slow
def test_an_onnx_model_on_the_webgpu_queue_passes_parity_labelled_software_fallback(tmp_path: Path) -> None:
    """`dtf run` (embedded) renders models/webgpu for a `source: onnx` entry on the webgpu
    queue; the result passed, matches ORT CPU and says it ran on the software adapter."""
    browser, dist = need_webgpu_stack()
    tiny_mlp_onnx(tmp_path / "mlp.onnx")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: webgpu-real\n"
        "defaults: {timeout_s: 300, retries: 0, iterations: 4, warmup: 1}\n"
        "models:\n"
        "  - {name: tiny-mlp, source: onnx, path: ./mlp.onnx, params: {webgpu_adapter: swiftshader}}\n"
        "hardware: [webgpu]\nbatch_sizes: [2]\nprecisions: [fp32, fp16]\n"
    )
    db = tmp_path / "run.duckdb"
    env = dtf_env(DTF_ORT_WEB_DIR=str(dist), DTF_CHROMIUM=browser, DTF_SPOOL_DIR=str(tmp_path / "spool"),
                  DTF_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run(dtf_cmd("run", str(suite), "--db", str(db), "--workers", "1", "--format", "json"),
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id = json.loads(proc.stdout[proc.stdout.index("{"):])["run"]["run_id"]
    out = subprocess.run(dtf_cmd("results", run_id, "--db", str(db), "--format", "json"), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tests = {t["test_id"]: t for t in json.loads(out.stdout)["tests"]}

    fp32 = tests["tiny-mlp/webgpu/bs2/fp32"]
    assert fp32["status"] == "passed", (fp32["reason"], fp32.get("error"), fp32.get("stderr_tail"))
    assert fp32["template"] == "models/webgpu" and fp32["source"] == "onnx"
    m = fp32["metrics"]
    assert fp32["parity"]["verdict"] == "pass" and fp32["parity"]["reference"] == "cpu/fp32"
    assert fp32["parity"]["candidate"] == "webgpu/fp32" and fp32["parity"]["output"] == "logits"
    # labelled as the software adapter it is, everywhere a reader looks
    assert m["webgpu_fallback"] is True
    assert m["webgpu_adapter"]["fallback"] is True and m["webgpu_adapter"]["architecture"] == "swiftshader"
    assert fp32["provenance"]["device_name"] == "software fallback (SwiftShader)"
    assert fp32["provenance"]["onnx_provider"] == m["onnx_provider"] == "WebGpuExecutionProvider"
    assert fp32["provenance"]["onnxruntime_web"] == webgpu.ORT_WEB_VERSION
    assert "Chromium" in fp32["provenance"]["browser"]
    # the runtime's metrics: browser-side timings, load time, throughput, fingerprint
    assert len(m["latencies_ms"]) == 4 and 0 < m["latency_p50_ms"] <= m["latency_p99_ms"]
    assert m["load_time_s"] > 0 and m["throughput_items_s"] > 0 and m["throughput_unit"] == "items/s"
    assert m["fingerprint"]["logits"]["shape"] == [2, 8] and m["fingerprint"]["logits"]["finite"]

    fp16 = tests["tiny-mlp/webgpu/bs2/fp16"]  # SwiftShader has no shader-f16; a GPU adapter may
    if fp16["status"] == "skipped":
        assert "shader-f16" in fp16["reason"]
    else:
        assert fp16["status"] == "passed" and fp16["parity"]["verdict"] == "pass"


@pytest.mark.slow
def test_a_transformers_folder_is_exported_and_matches_on_webgpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`source: hf` with a save_pretrained folder: built by dtf.models.hf, exported with
    torch.onnx.export, run in Chromium; outputs keep the names the torch runtime uses."""
    browser, dist = need_webgpu_stack()
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    tiny_bert = tmp_path / "tiny-bert"
    transformers.BertModel(transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=64)).save_pretrained(tiny_bert)
    monkeypatch.setenv("DTF_ORT_WEB_DIR", str(dist))
    monkeypatch.setenv("DTF_CHROMIUM", browser)
    h = _run_main({"source": "hf", "weights": "pretrained", "path": str(tiny_bert)}, seq_len=8,
                  webgpu_adapter="swiftshader")
    m = h.metrics
    assert (m["source"], m["task"], m["model_class"]) == ("hf", "encoder", "BertModel")
    assert m["export_time_s"] > 0 and m["throughput_unit"] == "sequences/s"
    assert m["parity"]["verdict"] == "pass", m["parity"]
    assert set(m["fingerprint"]) == {"last_hidden_state", "pooler_output"}
    assert m["fingerprint"]["last_hidden_state"]["shape"] == [2, 8, 32]
    assert m["webgpu_fallback"] is True and m["provenance"]["device_name"].startswith("software fallback")
    json.dumps(m, default=harness._json_default)  # what the harness writes survives JSON
    assert os.environ["DTF_ORT_WEB_DIR"] == str(dist)
