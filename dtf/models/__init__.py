"""Real models: where they come from, how a test loads and runs them, what it records.

A suite's model entry names a ``source``:

- ``hf``: transformers Auto classes chosen by task (encoder, causal LM with generate,
  seq2seq, image classification, speech, CLIP-like), from a local ``save_pretrained``
  folder or a hub id resolved through the standard Hugging Face cache. ``weights: random``
  builds the real architecture from its config with seeded random weights.
- ``timm``: ``timm.create_model``, random or pretrained (from the HF cache).
- ``onnx``: ONNX Runtime with the execution provider that matches the hardware.
- ``synthetic``: the built-in numpy/torch workloads of ``templates/``, always labelled so.

Modules: ``source`` (the suite-side description, pure), ``hub`` (HF cache resolution and
``dtf models fetch``), ``hf``/``timm_source``/``onnx_source`` (loaders), ``runtime`` (what a
rendered test calls), ``inspect`` (parameter counts and memory per precision on torch's
meta device). Only ``source`` is imported by the suite layer; the rest import their
frameworks lazily, inside the test process.
"""

from .source import MODEL_SOURCES, REAL_SOURCES, WEIGHTS, ModelSource, template_for

__all__ = ["MODEL_SOURCES", "REAL_SOURCES", "WEIGHTS", "ModelSource", "template_for"]
