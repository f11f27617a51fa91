"""dtf.models.runtime on real transformers, timm and ONNX Runtime models, in this process:
tiny configs with random weights, saved with save_pretrained / exported to ONNX into a temp
dir and loaded back through the same code a user's folder or hub id takes. Checks what a
result records (metrics, stack, fingerprint, parity) and the missing-model and
missing-package paths. End-to-end runs through `dtf run` are in test_models_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dtf import harness
from dtf.models import runtime

from .conftest import FAKE_SNAPSHOT, TINY_BERT, fake_cache_entry, save_tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def run(model: str, source: dict[str, Any], *, hardware: str = "cpu", precision: str = "fp32", batch: int = 2,
        family: str = "unknown", **params: Any) -> harness.Harness:
    """runtime.main with the dtf harness, as a rendered test calls it; returns the harness."""
    h = harness.Harness()
    cfg = {"model": model, "family": family, "hardware": hardware, "batch_size": batch, "precision": precision,
           "iterations": 2, "warmup": 1, "params": {"threads": 1, **params}, "source": source, "memory_gb": 0.5}
    runtime.main(h, cfg)
    return h


def hf(path: Path | None = None, **keys: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"source": "hf", "weights": "pretrained", "task": "auto", "parity": True, **keys}
    if path is not None:
        out["path"] = str(path)
    return out


# -- transformers ------------------------------------------------------------------------------


def test_an_encoder_from_a_save_pretrained_folder_is_the_reference_at_cpu_fp32(tiny_bert: Path) -> None:
    h = run("tiny-bert", hf(tiny_bert), family="text_embedding")
    m = h.metrics
    model = transformers.BertModel.from_pretrained(tiny_bert)
    assert m["param_count"] == sum(p.numel() for p in model.parameters())
    assert (m["source"], m["task"], m["model_class"], m["config_source"]) == ("hf", "encoder", "BertModel", "pretrained")
    assert m["revision"].startswith("sha256:")
    assert m["parity"]["verdict"] == "reference"
    assert set(m["fingerprint"]) >= {"last_hidden_state", "pooler_output"}
    assert m["fingerprint"]["last_hidden_state"]["shape"] == [2, 32, TINY_BERT["hidden_size"]]
    assert m["throughput_unit"] == "sequences/s" and m["iterations"] == 2.0
    assert m["provenance"]["torch"] == torch.__version__.split("+")[0] or m["provenance"]["torch"]
    assert m["provenance"]["transformers"] == transformers.__version__
    assert m["peak_rss_mb"] > 0 and m["load_time_s"] >= 0


def test_the_fingerprint_is_the_same_from_the_same_folder_and_seed(tiny_bert: Path) -> None:
    a = run("tiny-bert", hf(tiny_bert), family="text_embedding").metrics["fingerprint"]
    b = run("tiny-bert", hf(tiny_bert), family="text_embedding").metrics["fingerprint"]
    assert a == b


@pytest.mark.parametrize("precision", ["bf16", "fp16", "int8"])
def test_reduced_precisions_on_cpu_pass_parity_against_cpu_fp32(tiny_bert: Path, precision: str) -> None:
    parity = run("tiny-bert", hf(tiny_bert), precision=precision, family="text_embedding").metrics["parity"]
    assert parity["verdict"] == "pass", parity
    assert parity["reference"] == "cpu/fp32" and parity["candidate"] == f"cpu/{precision}"
    assert 0 <= parity["max_abs"] <= parity["tolerance"]


def test_a_perturbed_backend_fails_with_the_parity_message(tiny_bert: Path) -> None:
    with pytest.raises(AssertionError, match=r"parity: cpu/bf16 differs from cpu/fp32: max abs \S+ > \S+ on \w+"):
        run("tiny-bert", hf(tiny_bert), precision="bf16", family="text_embedding", parity_noise=0.5)


def test_parity_can_be_switched_off(tiny_bert: Path) -> None:
    m = run("tiny-bert", hf(tiny_bert, parity=False), precision="bf16", family="text_embedding",
            parity_noise=0.5).metrics
    assert m["parity"]["verdict"] == "off"


def test_a_causal_lm_times_generate_with_time_to_first_token(tiny_gpt2: Path) -> None:
    m = run("tiny-gpt2", hf(tiny_gpt2), family="text_generation", new_tokens=4).metrics
    assert (m["task"], m["model_class"]) == ("causal-lm", "GPT2LMHeadModel")
    assert m["generate_new_tokens"] == 4
    assert m["tokens_per_s"] > 0 and m["time_to_first_token_ms"] > 0
    assert m["fingerprint"]["logits"]["shape"] == [2, 32, 99]


def test_random_weights_from_transformers_defaults_are_seeded_and_named() -> None:
    small = {"config": {"n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 50}}
    a = run("gpt2", hf(weights="random"), family="text_generation", **small).metrics
    b = run("gpt2", hf(weights="random"), family="text_generation", **small).metrics
    c = run("gpt2", hf(weights="random"), family="text_generation", seed=1, **small).metrics
    assert (a["config_source"], a["revision"]) == ("defaults", "defaults:gpt2")
    assert a["fingerprint"] == b["fingerprint"]
    assert a["fingerprint"] != c["fingerprint"]


def test_a_vision_model_runs_image_classification() -> None:
    config = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 37, "num_labels": 5}
    m = run("google/vit-base-patch16-224", hf(weights="random"), family="vision", config=config).metrics
    assert (m["task"], m["model_class"], m["throughput_unit"]) == ("image-classification", "ViTForImageClassification", "images/s")
    assert m["fingerprint"]["logits"]["shape"] == [2, 5]


def test_a_speech_encoder_runs_on_raw_waveforms() -> None:
    config = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 20,
              "conv_dim": [8, 8], "conv_stride": [5, 4], "conv_kernel": [10, 8], "num_feat_extract_layers": 2,
              "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}
    m = run("facebook/wav2vec2-base-960h", hf(weights="random"), family="audio", config=config,
            audio_samples=1600).metrics
    assert (m["task"], m["model_class"]) == ("audio", "Wav2Vec2Model")
    assert m["fingerprint"]["last_hidden_state"]["shape"][0] == 2


def test_whisper_runs_speech_to_text_with_generate() -> None:
    config = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
              "decoder_attention_heads": 2, "encoder_ffn_dim": 20, "decoder_ffn_dim": 20, "num_mel_bins": 8,
              "max_source_positions": 16, "max_target_positions": 32, "vocab_size": 60,
              "decoder_start_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "bos_token_id": 1}
    m = run("openai/whisper-tiny", hf(weights="random"), family="audio", config=config, new_tokens=3).metrics
    assert (m["task"], m["model_class"]) == ("speech-seq2seq", "WhisperForConditionalGeneration")
    assert m["tokens_per_s"] > 0


def test_a_clip_like_model_takes_text_and_pixels(tmp_path: Path) -> None:
    text = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 20, "max_position_embeddings": 16}
    vision = {"image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 20}
    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
    model.save_pretrained(tmp_path / "tiny-clip")
    m = run("tiny-clip", hf(tmp_path / "tiny-clip"), family="multimodal", seq_len=8).metrics
    assert (m["task"], m["model_class"], m["throughput_unit"]) == ("clip", "CLIPModel", "pairs/s")
    assert m["fingerprint"]["logits_per_image"]["shape"] == [2, 2]


# -- the HF cache, offline ------------------------------------------------------------------------


def test_a_hub_id_resolves_through_the_hf_cache_and_records_the_commit(tmp_path: Path) -> None:
    folder = fake_cache_entry(tmp_path / "hf-cache", "org/tiny-bert", {})
    save_tiny("bert", folder)  # config.json and model.safetensors in the snapshot
    m = run("org/tiny-bert", hf(), family="text_embedding").metrics
    assert m["revision"] == FAKE_SNAPSHOT
    assert m["model_class"] == "BertModel"


def test_random_weights_take_the_config_from_the_cache_when_it_is_there(fake_hf_cache: Path) -> None:
    m = run("org/tiny-bert", hf(weights="random"), family="text_embedding").metrics
    assert (m["config_source"], m["revision"]) == ("cache", FAKE_SNAPSHOT)
    assert m["fingerprint"]["last_hidden_state"]["shape"] == [2, 32, TINY_BERT["hidden_size"]]


def test_a_model_missing_from_the_cache_says_what_to_run() -> None:
    with pytest.raises(RuntimeError) as info:
        run("org/absent-model", hf(), family="text_embedding")
    message = str(info.value)
    assert "org/absent-model is not in the HF cache of worker" in message
    assert "run `dtf models fetch org/absent-model` where the network is reachable" in message
    assert "\n" not in message


def test_a_missing_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"no such file or folder .*nowhere"):
        run("x", hf(tmp_path / "nowhere"))


def test_a_missing_package_skips_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    with pytest.raises(harness.Skip, match=r"timm is not installed on this worker \(pip install 'dtf\[models\]'\)"):
        run("resnet18", {"source": "timm", "weights": "random"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_skips_with_the_reason(tiny_bert: Path) -> None:
    with pytest.raises(harness.Skip, match=r"sees no cuda device"):
        run("tiny-bert", hf(tiny_bert), hardware="cuda")


def test_int8_on_a_gpu_kind_is_skipped_not_faked(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    with pytest.raises(harness.Skip, match=r"int8 runs through torch dynamic quantisation on the cpu only"):
        run("tiny-bert", hf(tiny_bert), hardware="cuda", precision="int8")


# -- timm ---------------------------------------------------------------------------------------------


def test_a_timm_model_with_seeded_random_weights_passes_parity_at_bf16() -> None:
    pytest.importorskip("timm")
    ref = run("test_resnet", {"source": "timm", "weights": "random"}, image_size=32).metrics
    bf16 = run("test_resnet", {"source": "timm", "weights": "random"}, precision="bf16", image_size=32).metrics
    assert (ref["task"], ref["config_source"], ref["parity"]["verdict"]) == ("image-classification", "timm", "reference")
    assert bf16["parity"]["verdict"] == "pass"
    assert ref["provenance"]["timm"] is not None


def test_timm_pretrained_weights_missing_from_the_cache_say_what_to_fetch() -> None:
    pytest.importorskip("timm")
    with pytest.raises(RuntimeError, match=r"not in the HF cache of this worker .*dtf models fetch timm/test_resnet"):
        run("test_resnet", {"source": "timm", "weights": "pretrained"})


# -- ONNX Runtime ----------------------------------------------------------------------------------------


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.randn(2, 16),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    return path


def test_an_onnx_model_reports_the_provider_that_ran(tiny_onnx: Path) -> None:
    m = run("net", {"source": "onnx", "path": str(tiny_onnx)}, batch=3).metrics
    assert m["onnx_provider"] == "CPUExecutionProvider"
    assert m["provenance"]["onnx_provider"] == "CPUExecutionProvider"
    assert m["fingerprint"]["y"]["shape"] == [3, 8]
    assert m["parity"]["verdict"] == "reference"


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_onnx_int8_and_fp16_copies_pass_parity_against_the_cpu_provider(tiny_onnx: Path, precision: str) -> None:
    m = run("net", {"source": "onnx", "path": str(tiny_onnx)}, precision=precision).metrics
    assert m["parity"]["verdict"] == "pass", m["parity"]


def test_onnx_on_a_gpu_kind_without_its_provider_is_skipped(tiny_onnx: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(harness.Skip, match=r"has no CUDAExecutionProvider provider"):
        run("net", {"source": "onnx", "path": str(tiny_onnx)}, hardware="cuda")


def test_the_metrics_survive_json_as_the_harness_writes_them(tiny_bert: Path) -> None:
    m = run("tiny-bert", hf(tiny_bert), precision="bf16", family="text_embedding").metrics
    again = json.loads(json.dumps(m))
    assert again["parity"]["verdict"] == "pass" and again["provenance"]["python"]
