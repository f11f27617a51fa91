"""What a suite says about where a model comes from; pure, no framework imports.

``ModelSource`` travels inside a test spec's params under ``MODEL_SOURCE_KEY`` (JSON),
so every worker sees exactly what the suite asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "MODEL_SOURCES",
    "REAL_SOURCES",
    "WEIGHTS",
    "TASKS",
    "MODEL_SOURCE_KEY",
    "ModelSource",
    "template_for",
    "result_source",
    "PACKAGES_FOR_SOURCE",
]

MODEL_SOURCES: tuple[str, ...] = ("hf", "timm", "onnx", "synthetic")
REAL_SOURCES = frozenset({"hf", "timm", "onnx"})
WEIGHTS: tuple[str, ...] = ("pretrained", "random")
TASKS: tuple[str, ...] = (
    "auto", "encoder", "causal-lm", "seq2seq-lm", "image-classification", "audio", "speech-seq2seq", "clip",
)
MODEL_SOURCE_KEY = "model_source"

# What a worker must have installed to run a source (distribution names).
PACKAGES_FOR_SOURCE: Mapping[str, tuple[str, ...]] = {
    "hf": ("torch", "transformers"),
    "timm": ("torch", "timm"),
    "onnx": ("onnxruntime",),
    "synthetic": (),
}


@dataclass(frozen=True)
class ModelSource:
    """Where one model comes from. `path` is absolute (resolved against the suite file)."""

    source: str = "hf"
    weights: str = "pretrained"
    path: str | None = None
    revision: str | None = None
    task: str = "auto"
    parity: bool = True

    @property
    def real(self) -> bool:
        return self.source in REAL_SOURCES

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "weights": self.weights, "task": self.task, "parity": self.parity}
        if self.path is not None:
            out["path"] = self.path
        if self.revision is not None:
            out["revision"] = self.revision
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSource":
        return cls(
            source=str(data.get("source", "hf")),
            weights=str(data.get("weights", "pretrained")),
            path=data.get("path"),
            revision=data.get("revision"),
            task=str(data.get("task", "auto")),
            parity=bool(data.get("parity", True)),
        )


def result_source(row: Mapping[str, Any]) -> str:
    """Where a result's model came from: the source its test recorded (``metrics.source``),
    else the one its spec named (``model_source``, for a test that never ran), else
    "synthetic" for the built-in workloads. The one rule every report and finding uses."""
    metrics = row.get("metrics")
    value = (metrics.get("source") if isinstance(metrics, Mapping) else None) or row.get("model_source")
    return str(value) if isinstance(value, str) and value else "synthetic"


def template_for(source: ModelSource, hardware: str) -> str | None:
    """The built-in template that runs a real source on a hardware kind (None: synthetic)."""
    if not source.real:
        return None
    if hardware == "webgpu":
        return "models/webgpu"
    return "models/onnx" if source.source == "onnx" else "models/torch"
