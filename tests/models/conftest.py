"""Tiny real models on disk (save_pretrained folders) and a fake Hugging Face cache layout,
so every models test runs offline with the code path a user's folder or hub id takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=37, max_position_embeddings=64)
TINY_GPT2 = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=2, n_positions=64)
FAKE_SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test here reaches the hub; each has its own empty HF cache and state dir."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("DTF_STATE_DIR", str(tmp_path / "state"))


def save_tiny(kind: str, folder: Path) -> Path:
    """A tiny transformers model, random weights, saved with save_pretrained."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind == "bert":
        model: Any = tf.BertModel(tf.BertConfig(**TINY_BERT))
    elif kind == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(**TINY_GPT2))
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_bert(tmp_path: Path) -> Path:
    return save_tiny("bert", tmp_path / "tiny-bert")


@pytest.fixture
def tiny_gpt2(tmp_path: Path) -> Path:
    return save_tiny("gpt2", tmp_path / "tiny-gpt2")


def fake_cache_entry(cache: Path, repo_id: str, config: dict[str, Any], snapshot: str = FAKE_SNAPSHOT) -> Path:
    """models--org--name/{refs/main, snapshots/<hash>/config.json}, as huggingface_hub lays it out."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(snapshot)
    folder = repo / "snapshots" / snapshot
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def fake_hf_cache(tmp_path: Path) -> Iterator[Path]:
    """The HF cache (HF_HUB_CACHE) holding config-only org/tiny-bert and org/tiny-gpt2."""
    cache = tmp_path / "hf-cache"
    fake_cache_entry(cache, "org/tiny-bert", {"model_type": "bert", "architectures": ["BertModel"], **TINY_BERT})
    fake_cache_entry(cache, "org/tiny-gpt2", {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], **TINY_GPT2})
    yield cache
