"""timm models: ``timm.create_model`` with seeded random weights, pretrained weights from the
HF cache (timm reads ``timm/<name>`` through huggingface_hub), or a local weights file."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from . import reuse
from .hub import ModelMissing, folder_revision
from .loaded import LoadedModel
from .source import ModelSource

__all__ = ["load"]


def load(name: str, source: ModelSource, params: Mapping[str, Any], seed: int) -> LoadedModel:
    import timm
    import torch

    if source.task not in ("auto", "image-classification"):
        raise ValueError(f"timm models run image-classification, not {source.task}")
    kwargs = dict(params.get("config") or {})
    key = reuse.module_key("timm", name, "vision", source, kwargs, seed)
    module = reuse.take(key)  # built once by a model server this test was forked from (dtf.models.reuse)
    if module is None:
        torch.manual_seed(seed)
        module = _create(timm, name, source, kwargs).float().eval()
        reuse.keep(key, module)
    if source.path is not None:
        revision = folder_revision(source.path)
    elif source.weights == "pretrained":
        revision = str(getattr(module, "pretrained_cfg", {}).get("hf_hub_id") or "timm")
    else:
        revision = f"timm-{timm.__version__}:random"
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    channels, height, width = cfg.get("input_size", (3, 224, 224))
    size = params.get("image_size")
    if size:
        height = width = int(size)

    def make_inputs(batch: int) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        pixels = rng.standard_normal((batch, channels, height, width), dtype=np.float32)
        return {"x": torch.from_numpy(pixels)}

    return LoadedModel(module=module, task="image-classification", revision=revision, config_source="timm",
                       model_class=type(module).__name__, make_inputs=make_inputs, unit="images")


def _create(timm: Any, name: str, source: ModelSource, kwargs: Mapping[str, Any]) -> Any:
    if source.path is not None:
        if not os.path.exists(source.path):
            raise ModelMissing(f"{name}: no such weights file {source.path}")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": source.path}, **kwargs)
    if source.weights == "pretrained":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the cache or nothing: never wait on the network
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - timm raises many kinds for a missing file
            raise ModelMissing(
                f"timm model {name}: pretrained weights are not in the HF cache of this worker "
                f"({type(exc).__name__}); run `dtf models fetch timm/{name}` where the network is reachable"
            ) from None
    return timm.create_model(name, pretrained=False, **kwargs)
