"""transformers models: config and weights resolution, the Auto class per task, seeded inputs.

``weights: random`` builds the real architecture from its config with weights drawn from
torch's CPU generator after ``torch.manual_seed(seed)``, so every backend starts from the
very same model. The config comes from the model's folder (``path:``), else from the HF
cache, else from transformers' own defaults for the architecture named in the model's name
(``bert-base-uncased`` -> ``BertConfig()``, which is bert-base). ``params.config`` updates
any config field (a tiny ``num_hidden_layers: 2`` for a quick test).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import reuse
from .hub import ModelMissing, resolve
from .loaded import LoadedModel
from .source import ModelSource

__all__ = ["load", "pick_task", "resolve_config", "auto_class", "guess_model_type"]

_TEXT_FAMILIES = ("text_embedding", "text_generation")


def guess_model_type(name: str) -> str | None:
    """The longest transformers model type named inside `name` (bert-base-uncased -> bert,
    distilgpt2 -> gpt2, openai/whisper-tiny -> whisper), or None."""
    from transformers import CONFIG_MAPPING

    base = name.lower().rpartition("/")[2].replace("_", "-")
    found = [t for t in CONFIG_MAPPING.keys() if t.replace("_", "-") in base]
    return max(found, key=len) if found else None


def resolve_config(name: str, source: ModelSource, overrides: Mapping[str, Any] | None) -> tuple[Any, str, str, str | None]:
    """(config, where it came from: path|cache|defaults, revision, folder with weights or None)."""
    from transformers import AutoConfig

    folder: str | None = None
    if source.path is not None:
        folder, revision = resolve(name, source.revision, path=source.path)
        config, origin = AutoConfig.from_pretrained(folder), "path"
    else:
        try:
            folder, revision = resolve(name, source.revision)
            config, origin = AutoConfig.from_pretrained(folder), "cache"
        except ModelMissing:
            if source.weights == "pretrained":
                raise
            model_type = guess_model_type(name)
            if model_type is None:
                raise ModelMissing(
                    f"{name}: no config in the HF cache and no transformers architecture in its name; "
                    "give path: to a save_pretrained folder or run `dtf models fetch` first"
                ) from None
            config, origin, revision = AutoConfig.for_model(model_type), "defaults", f"defaults:{model_type}"
    if overrides:
        config.update(dict(overrides))
    return config, origin, revision, folder


def pick_task(config: Any, family: str, explicit: str) -> str:
    """The task to run: the suite's, else from the architecture and the model family."""
    if explicit != "auto":
        return explicit
    from transformers.models.auto import modeling_auto as ma

    model_type = getattr(config, "model_type", "")
    if model_type in ma.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES:
        return "speech-seq2seq"
    if hasattr(config, "text_config") and hasattr(config, "vision_config"):
        return "clip"
    if family == "audio":
        return "audio"
    if model_type in ma.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES and family != "text_embedding":
        return "image-classification"
    if getattr(config, "is_encoder_decoder", False) and model_type in ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "seq2seq-lm"
    if family == "text_generation" and model_type in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    return "encoder"


def auto_class(task: str) -> Any:
    import transformers as tf

    return {
        "encoder": tf.AutoModel,
        "causal-lm": tf.AutoModelForCausalLM,
        "seq2seq-lm": tf.AutoModelForSeq2SeqLM,
        "image-classification": tf.AutoModelForImageClassification,
        "audio": tf.AutoModel,
        "speech-seq2seq": tf.AutoModelForSpeechSeq2Seq,
        "clip": tf.AutoModel,
    }[task]


def _dtype_kwarg() -> str:
    import transformers

    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"


def load(name: str, family: str, source: ModelSource, params: Mapping[str, Any], seed: int) -> LoadedModel:
    """Build the model on the CPU in float32, in eval mode."""
    import torch

    config, origin, revision, folder = resolve_config(name, source, params.get("config"))
    task = pick_task(config, family, source.task)
    cls = auto_class(task)
    key = reuse.module_key("hf", name, family, source, params.get("config"), seed)
    module = reuse.take(key)  # built once by a model server this test was forked from (dtf.models.reuse)
    if module is None:
        if source.weights == "random":
            torch.manual_seed(seed)
            module = cls.from_config(config)
            module = module.float()
        else:
            assert folder is not None  # resolve_config raised otherwise
            module = cls.from_pretrained(folder, config=config, **{_dtype_kwarg(): torch.float32})
        module.eval()
        reuse.keep(key, module)
    return LoadedModel(
        module=module,
        task=task,
        revision=revision,
        config_source=origin if source.weights == "random" else "pretrained",
        model_class=type(module).__name__,
        make_inputs=lambda batch: _inputs(config, task, batch, params, seed),
        unit=_UNITS[task],
        generate_inputs=_generate_inputs(task),
        pad_token_id=_pad_token(config),
    )


_UNITS = {
    "encoder": "sequences", "causal-lm": "sequences", "seq2seq-lm": "sequences", "image-classification": "images",
    "audio": "clips", "speech-seq2seq": "clips", "clip": "pairs",
}


def _generate_inputs(task: str) -> tuple[str, ...] | None:
    """The input names generate() takes, for the tasks that generate."""
    return {
        "causal-lm": ("input_ids", "attention_mask"),
        "seq2seq-lm": ("input_ids", "attention_mask"),
        "speech-seq2seq": ("input_features",),
    }.get(task)


def _pad_token(config: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
        if isinstance(value, list) and value:
            return int(value[0])
    return 0


def _sub(config: Any, name: str) -> Any:
    return getattr(config, name, None) or config


def _image_size(config: Any, params: Mapping[str, Any]) -> tuple[int, int]:
    size = params.get("image_size") or getattr(config, "image_size", None) or 224
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[-1])
    if isinstance(size, Mapping):
        return int(size.get("height", 224)), int(size.get("width", 224))
    return int(size), int(size)


def _text(config: Any, batch: int, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    import torch

    vocab = int(getattr(config, "vocab_size", 1000) or 1000)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
    seq = max(1, min(int(params.get("seq_len", 32)), int(limit)))
    ids = rng.integers(low=min(5, vocab - 1), high=vocab, size=(batch, seq))
    return {"input_ids": torch.from_numpy(ids.astype(np.int64)), "attention_mask": torch.ones(batch, seq, dtype=torch.int64)}


def _pixels(config: Any, batch: int, params: Mapping[str, Any], rng: np.random.Generator) -> Any:
    import torch

    height, width = _image_size(config, params)
    channels = int(getattr(config, "num_channels", 3) or 3)
    return torch.from_numpy(rng.standard_normal((batch, channels, height, width), dtype=np.float32))


def _inputs(config: Any, task: str, batch: int, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Deterministic inputs: the same for a given seed on every machine."""
    import torch

    rng = np.random.default_rng(seed)
    if task in ("encoder", "causal-lm"):
        return _text(config, batch, params, rng)
    if task == "seq2seq-lm":
        start = getattr(config, "decoder_start_token_id", None) or 0
        return {**_text(config, batch, params, rng), "decoder_input_ids": torch.full((batch, 1), int(start))}
    if task == "image-classification":
        return {"pixel_values": _pixels(config, batch, params, rng)}
    if task == "clip":
        text = _text(_sub(config, "text_config"), batch, params, rng)
        return {**text, "pixel_values": _pixels(_sub(config, "vision_config"), batch, params, rng)}
    if task == "speech-seq2seq":
        mels = int(getattr(config, "num_mel_bins", 80))
        frames = 2 * int(getattr(config, "max_source_positions", 1500))
        start = getattr(config, "decoder_start_token_id", None) or 0
        features = rng.standard_normal((batch, mels, frames), dtype=np.float32)
        return {"input_features": torch.from_numpy(features), "decoder_input_ids": torch.full((batch, 1), int(start))}
    samples = int(params.get("audio_samples", 16000))  # audio encoders on raw waveforms (wav2vec2, hubert)
    return {"input_values": torch.from_numpy(rng.standard_normal((batch, samples), dtype=np.float32))}
