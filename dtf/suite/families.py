"""Model families and what follows from a model's family alone: detection from the model
name, the dispatch priority of a test, its memory estimate and the model's slug in test ids.

Small documented functions: README.md and docs/models.md quote their formulas."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["FAMILIES", "KNOWN_MODELS", "detect_family", "estimate_memory_gb", "model_slug", "priority"]

FAMILIES: tuple[str, ...] = ("text_embedding", "text_generation", "vision", "audio", "multimodal", "unknown")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9._-]")

# Exact names, checked first (lowercase keys). Heuristics below cover the rest.
KNOWN_MODELS: Mapping[str, str] = {
    "bert-base-uncased": "text_embedding",
    "bert-base-cased": "text_embedding",
    "distilbert-base-uncased": "text_embedding",
    "roberta-base": "text_embedding",
    "sentence-transformers/all-minilm-l6-v2": "text_embedding",
    "gpt2": "text_generation",
    "distilgpt2": "text_generation",
    "t5-small": "text_generation",
    "google/flan-t5-small": "text_generation",
    "facebook/opt-125m": "text_generation",
    "microsoft/resnet-50": "vision",
    "google/vit-base-patch16-224": "vision",
    "google/bit-50": "vision",
    "facebook/sam-vit-base": "vision",
    "openai/whisper-tiny": "audio",
    "facebook/wav2vec2-base-960h": "audio",
    "laion/clap-htsat-unfused": "audio",
    "microsoft/speecht5_tts": "audio",
    "openai/clip-vit-base-patch32": "multimodal",
    "openai/clip-vit-large-patch14": "multimodal",
    "nlpconnect/vit-gpt2-image-captioning": "multimodal",
    "salesforce/blip-image-captioning-base": "multimodal",
}


def _words(*words: str) -> str:
    """Substrings: distinctive enough to match inside longer names (tinyllama, distilbert)."""
    return "|".join(words)


def _tokens(*words: str) -> str:
    """Whole tokens: short names (t5, opt, vit) must not match inside other words."""
    return rf"(?<![a-z0-9])(?:{'|'.join(words)})(?![a-z])"


# Ordered: the first match wins, so the traps come first. Multimodal before vision and
# generation (clip-vit, vit-gpt2, paligemma, qwen2-vl); audio before embedding and
# generation (hubert contains bert, speecht5 contains t5); embedding before generation
# (e5-mistral, gte-qwen2 and sentence-t5 are embedding models).
_FAMILY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (family, re.compile(pattern))
    for family, pattern in (
        ("multimodal", _words(
            "clip", "llava", "blip", "flava", "siglip", "idefics", "owlvit", "owlv2", "kosmos", "paligemma",
            "fuyu", "pix2struct", "donut", "layoutlm", "vilt", "lxmert", "visualbert", "trocr", "bridgetower",
            "imagebind", "moondream", "florence", "minicpm-v", "internvl", "smolvlm", "cogvlm", "pixtral",
            "groupvit", "minigpt", "vision-encoder-decoder", "captioning",
        )),
        ("multimodal", _tokens("git", "align", "vl", "vlm")),
        ("multimodal", r"vit.*gpt2|(?:llama|phi|qwen|mistral|gemma|granite)\S*vision"),
        ("audio", _words(
            "whisper", "wav2vec", "w2v", "hubert", "wavlm", "encodec", "clap", "speech", "audio", "musicgen",
            "seamless", "parakeet", "conformer", "mctct", "univnet", "pop2piano", "moonshine",
        )),
        ("audio", _tokens("ast", "sew", "mms", "vits", "tts", "asr", "bark")),
        ("vision", _words(
            "resnet", "resnext", "convnext", "efficientnet", "mobilenet", "mobilevit", "regnet", "densenet", "yolo",
            "detr", "deit", "beit", "swin", "dinov", "segformer", "maskformer", "mask2former", "upernet", "levit",
            "poolformer", "inception", "xception", "ghostnet", "mnasnet", "squeezenet", "shufflenet", "alexnet",
        )),
        ("vision", _tokens("vit", "vgg", "cvt", "pvt", "dpt", "dit", "vision")),
        ("text_embedding", _words(
            "bert", "electra", "minilm", "mpnet", "sentence", "embed", "simcse", "contriever", "instructor",
            "labse", "splade", "longformer", "bigbird", "ernie", "xlnet",
        )),
        ("text_embedding", _tokens("e5", "bge", "gte", "gtr", "dpr")),
        ("text_generation", _words(
            "gpt", "llama", "mistral", "mixtral", "falcon", "bloom", "gemma", "qwen", "pythia", "olmo", "starcoder",
            "santacoder", "codegen", "stablelm", "smollm", "deepseek", "zephyr", "vicuna", "alpaca", "xglm",
            "pegasus", "marian", "opus-mt", "nllb", "m2m100", "flan", "tinystories", "dolly", "mamba", "rwkv",
            "granite", "baichuan", "chatglm", "internlm", "nemotron", "minicpm", "galactica", "distilbart", "llm",
        )),
        ("text_generation", _tokens(
            "t5", "mt5", "umt5", "byt5", "codet5", "long-?t5", "ul2", "opt", "phi", "mpt", "bart", "mbart", "ctrl",
        )),
    )
)

# When the name says nothing, some organisations publish one family only.
_ORG_FAMILIES: Mapping[str, str] = {
    "sentence-transformers": "text_embedding",
    "cross-encoder": "text_embedding",
    "baai": "text_embedding",
    "intfloat": "text_embedding",
    "thenlper": "text_embedding",
    "timm": "vision",
    "ultralytics": "vision",
    "openai-community": "text_generation",
    "meta-llama": "text_generation",
    "mistralai": "text_generation",
    "tiiuae": "text_generation",
    "eleutherai": "text_generation",
    "bigscience": "text_generation",
    "llava-hf": "multimodal",
    "huggingfacem4": "multimodal",
    "speechbrain": "audio",
    "distil-whisper": "audio",
    "suno": "audio",
}


def detect_family(model_name: str) -> str:
    """The model family: the exact-name table, then ordered name rules on the part after
    any ``org/``, then the organisation; "unknown" when nothing matches."""
    key = model_name.strip().lower()
    if key in KNOWN_MODELS:
        return KNOWN_MODELS[key]
    org, _, base = key.rpartition("/")
    for family, pattern in _FAMILY_RULES:
        if pattern.search(base):
            return family
    return _ORG_FAMILIES.get(org.rpartition("/")[2], "unknown")


# -- priority and memory ------------------------------------------------------------------

_HEAVY_FAMILIES = frozenset({"text_generation", "multimodal", "unknown"})

# family: (parameters in millions, activation GB per sample at fp32) for a typical small
# model of the family: bert-base, gpt2-medium, resnet-50/vit-base, whisper-base, clip-base.
_FAMILY_FOOTPRINT: Mapping[str, tuple[float, float]] = {
    "text_embedding": (110.0, 0.02),
    "text_generation": (350.0, 0.06),
    "vision": (90.0, 0.05),
    "audio": (75.0, 0.04),
    "multimodal": (150.0, 0.05),
    "unknown": (200.0, 0.05),
}
_BYTES_PER_PARAM: Mapping[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0}
# int8 kernels still keep activations in 16 bits.
_ACTIVATION_SCALE: Mapping[str, float] = {"fp32": 1.0, "fp16": 0.5, "bf16": 0.5, "int8": 0.5}
# Host RSS of Python + torch on cpu; device-side context (CUDA/HIP/Metal/browser) elsewhere.
_RUNTIME_OVERHEAD_GB: Mapping[str, float] = {"cpu": 0.5, "cuda": 0.5, "rocm": 0.5, "mps": 0.3, "webgpu": 0.3}
_ACCELERATOR_SLACK = 1.2  # caching allocators hold about a fifth more than they use


def priority(family: str, batch_size: int, precision: str, hardware: str) -> int:
    """Dispatch priority from 1 to 10 (10 runs first).

    ``10 - ceil(log2(batch_size) / 2) - (precision != fp32) - heavy``, clamped to 1..10,
    where heavy is 1 for text_generation, multimodal and unknown families and 2 for those
    on cpu (slow there). Smaller batches rank higher, so the chain bs1 -> bs2 -> ... starts
    early and a failure at a small batch skips the larger ones before they cost anything;
    fp32 is the reference the others are compared with.
    """
    batch_step = math.ceil(math.log2(max(batch_size, 1)) / 2)
    precision_step = 0 if precision == "fp32" else 1
    heavy_step = (2 if hardware == "cpu" else 1) if family in _HEAVY_FAMILIES else 0
    return max(1, min(10, 10 - batch_step - precision_step - heavy_step))


def estimate_memory_gb(
    family: str, batch_size: int, precision: str, hardware: str, params: Mapping[str, Any] | None = None
) -> float:
    """Estimated peak memory in GB of one test: host RAM on cpu, device memory elsewhere.

    ``overhead[hardware] + slack * (P * bytes_per_param[precision] / 1e3
    + batch_size * A * activation_scale[precision])`` where P (millions of parameters) and
    A (GB per sample at fp32) come from the family's typical model, slack is 1.2 on
    accelerators (caching allocators) and 1 on cpu. ``params["param_count_m"]`` replaces P;
    ``params["memory_gb"]`` replaces the whole estimate.
    """
    params = params or {}
    explicit = _positive(params.get("memory_gb"))
    if explicit is not None:
        return explicit
    param_m, act_gb = _FAMILY_FOOTPRINT.get(family, _FAMILY_FOOTPRINT["unknown"])
    param_m = _positive(params.get("param_count_m")) or param_m
    weights = param_m * _BYTES_PER_PARAM.get(precision, 4.0) / 1e3
    activations = batch_size * act_gb * _ACTIVATION_SCALE.get(precision, 1.0)
    slack = 1.0 if hardware == "cpu" else _ACCELERATOR_SLACK
    return round(_RUNTIME_OVERHEAD_GB.get(hardware, 0.5) + slack * (weights + activations), 4)


def _positive(value: object) -> float | None:
    """A positive finite number as a float, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


def model_slug(name: str) -> str:
    """The model name lowercased, with characters outside ``[a-z0-9._-]`` replaced by '-'."""
    return _SLUG_UNSAFE.sub("-", name.lower())


