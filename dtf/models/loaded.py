"""A torch model as the runtime needs it, whichever library built it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    module: Any  # a torch.nn.Module in eval mode, float32, on the CPU
    task: str
    revision: str  # commit hash from the cache, a folder hash, or defaults:<type>
    config_source: str  # pretrained, path, cache, defaults, timm
    model_class: str
    make_inputs: Callable[[int], dict[str, Any]]  # batch size -> named CPU tensors
    unit: str  # what one item of the batch is: sequences, images, clips, pairs
    generate_inputs: tuple[str, ...] | None = None  # input names generate() takes
    pad_token_id: int = 0
