"""`dtf models inspect|list|fetch` and dtf.models.inspect: counts on torch's meta device equal
the counts of the real model the runtime builds, for configs from a folder, the HF cache
and transformers' defaults; the commands' JSON, tables and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dtf.cli import app
from dtf.models.inspect import BYTES_PER_PARAM, count_params, inspect_model, installed, runnable_sources
from dtf.models.source import ModelSource
from dtf.suite import estimate_memory_gb

from .conftest import FAKE_SNAPSHOT, TINY_BERT

pytest.importorskip("transformers")
pytest.importorskip("timm")
runner = CliRunner()


def _real_count(module: object) -> int:
    return sum(p.numel() for p in module.parameters())  # type: ignore[attr-defined]


def test_meta_count_of_a_save_pretrained_folder_equals_the_loaded_model(tiny_bert: Path, tiny_gpt2: Path) -> None:
    from dtf.models import hf

    for name, folder, family in (("tiny-bert", tiny_bert, "text_embedding"), ("tiny-gpt2", tiny_gpt2, "text_generation")):
        source = ModelSource(source="hf", path=str(folder))
        loaded = hf.load(name, family, source, {}, seed=0)  # what a test runs: real weights from the folder
        info = inspect_model(name, source, family=family)
        assert info["param_count"] == _real_count(loaded.module) > 0
        assert info["model_class"] == loaded.model_class
        assert info["config_source"] == "path"
    # gpt2 ties its LM head to the embeddings: counted once, as parameters() does
    info = inspect_model("tiny-gpt2", ModelSource(source="hf", path=str(tiny_gpt2)), family="text_generation")
    assert info["model_class"] == "GPT2LMHeadModel" and info["task"] == "causal-lm"


def test_a_hub_id_resolves_through_the_fake_hf_cache(fake_hf_cache: Path) -> None:
    info = inspect_model("org/tiny-bert", ModelSource(source="hf"))  # weights: pretrained -> the cache or nothing
    assert info["config_source"] == "cache"
    assert info["revision"] == FAKE_SNAPSHOT
    import transformers

    expected = _real_count(transformers.BertModel(transformers.BertConfig(**TINY_BERT)))
    assert info["param_count"] == expected


def test_defaults_give_the_real_bert_base_and_memory_per_precision() -> None:
    info = inspect_model("bert-base-uncased", ModelSource(source="hf", weights="random"))
    assert info["config_source"] == "defaults" and info["model_class"] == "BertModel"
    assert info["param_count"] == 109_482_240  # bert-base, as BertConfig() defines it
    for precision, size in BYTES_PER_PARAM.items():
        memory = info["memory"][precision]
        assert memory["weights_gb"] == pytest.approx(info["param_count"] * size / 1e9, rel=1e-3)
        assert memory["estimate_gb"] == estimate_memory_gb("text_embedding", 1, precision, "cpu",
                                                           {"param_count_m": info["param_count"] / 1e6})
    assert info["memory"]["fp32"]["weights_gb"] > info["memory"]["bf16"]["weights_gb"] > info["memory"]["int8"]["weights_gb"]


def test_config_overrides_change_the_count() -> None:
    small = count_params("bert-base-uncased", ModelSource(source="hf", weights="random"), overrides={"num_hidden_layers": 2})
    assert small < 109_482_240


def test_timm_meta_count_equals_create_model() -> None:
    import timm

    info = inspect_model("resnet18", ModelSource(source="timm", weights="random"))
    assert info["param_count"] == _real_count(timm.create_model("resnet18", pretrained=False)) == 11_689_512
    assert info["model_class"] == "ResNet" and info["family"] == "vision"


def test_cli_inspect_json_and_table(tiny_bert: Path) -> None:
    result = runner.invoke(app, ["models", "inspect", "tiny-bert", "--path", str(tiny_bert), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["model_class"] == "BertModel" and info["param_count"] > 0
    assert set(info["memory"]) == {"fp32", "fp16", "bf16", "int8"}
    table = runner.invoke(app, ["models", "inspect", "bert-base-uncased", "--weights", "random", "--batch-size", "4",
                                "--hardware", "cuda"])
    assert table.exit_code == 0, table.output
    assert "109,482,240" in table.stdout and "batch 4 on cuda" in table.stdout and "bf16" in table.stdout


def test_cli_inspect_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["models", "inspect", "org/not-cached"])
    assert missing.exit_code == 2
    assert "org/not-cached is not in the HF cache" in missing.stderr and "dtf models fetch org/not-cached" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    nopath = runner.invoke(app, ["models", "inspect", "x", "--path", str(tmp_path / "nope")])
    assert nopath.exit_code == 2 and "no such file or folder" in nopath.stderr
    onnx = runner.invoke(app, ["models", "inspect", "x", "--source", "onnx"])
    assert onnx.exit_code == 2 and "--source must be hf or timm" in onnx.stderr
    timm_bad = runner.invoke(app, ["models", "inspect", "no-such-timm-net", "--source", "timm"])
    assert timm_bad.exit_code == 2 and "cannot inspect no-such-timm-net (timm)" in timm_bad.stderr


def test_cli_list_shows_sources_versions_and_cached_models(fake_hf_cache: Path) -> None:
    (fake_hf_cache / "models--org--tiny-bert" / "blobs").mkdir()
    (fake_hf_cache / "models--org--tiny-bert" / "blobs" / "weights").write_bytes(b"\0" * (3 << 20))  # 3 MiB
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["packages"]["torch"] == installed()["torch"] and data["packages"]["transformers"]
    assert data["sources"]["hf"]["runnable"] and data["sources"]["synthetic"]["runnable"]
    assert set(runnable_sources()) == {s for s, v in data["sources"].items() if v["runnable"]}
    assert "CPUExecutionProvider" in data["onnx_providers"]
    cached = {m["name"]: m for m in data["cached_models"]}
    assert set(cached) == {"org/tiny-bert", "org/tiny-gpt2"}
    assert cached["org/tiny-bert"]["revisions"] == [FAKE_SNAPSHOT] and cached["org/tiny-bert"]["size_mb"] >= 3.0
    table = runner.invoke(app, ["models", "list"])
    assert table.exit_code == 0 and "org/tiny-bert" in table.stdout and "transformers" in table.stdout


def _fetch(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTF_", "HF_"))}
    env.update(HF_HUB_CACHE=str(tmp_path / "hf-cache"), **env_extra)
    return subprocess.run([sys.executable, "-m", "dtf.cli", "models", "fetch", "prajjwal1/bert-tiny"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_fetch_offline_is_one_line_and_exit_2(tmp_path: Path) -> None:
    offline = _fetch({"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert offline.returncode == 2
    assert offline.stderr.strip().splitlines() == [offline.stderr.strip()]
    assert "cannot fetch prajjwal1/bert-tiny: HF_HUB_OFFLINE is set" in offline.stderr
    # a hub that does not answer (a closed loopback port stands for no network)
    unreachable = _fetch({"HF_ENDPOINT": "http://127.0.0.1:9"}, tmp_path)
    assert unreachable.returncode == 2, unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1
    assert "cannot fetch prajjwal1/bert-tiny: the Hugging Face hub is not reachable" in unreachable.stderr
    assert not list((tmp_path / "hf-cache").glob("models--*/snapshots/*/*"))
