"""ONNX models on ONNX Runtime, with the execution provider that matches the hardware.

fp32 runs the file as it is; int8 runs a dynamically quantised copy
(``onnxruntime.quantization.quantize_dynamic``); fp16 a copy converted with
``onnxruntime.transformers.float16`` (inputs and outputs kept float32); bf16 has no general
conversion in ONNX Runtime and is skipped. The provider that actually ran is recorded: ORT
quietly falls back to the CPU when a GPU provider fails to load, and such a run is skipped
with that reason rather than reported as a GPU result.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping

import numpy as np

from .hub import ModelMissing, PackageMissing

__all__ = ["PROVIDERS", "session", "make_inputs", "converted"]

PROVIDERS: Mapping[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "mps": "CoreMLExecutionProvider",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise PackageMissing("onnxruntime is not installed on this worker (pip install 'dtf[models]')") from None
    return onnxruntime


def session(path: str, hardware: str, threads: int = 0) -> tuple[Any, str]:
    """(InferenceSession, the provider that runs it). Raises PackageMissing when the
    provider for `hardware` is not in this onnxruntime build or did not load."""
    ort = _ort()
    if not os.path.exists(path):
        raise ModelMissing(f"no such ONNX file {path}")
    wanted = PROVIDERS.get(hardware)
    available = ort.get_available_providers()
    if wanted is None or wanted not in available:
        raise PackageMissing(
            f"onnxruntime {ort.__version__} here has no {wanted or hardware} provider "
            f"(available: {', '.join(available)}); install the onnxruntime build for {hardware}"
        )
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    providers = [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]
    sess = ort.InferenceSession(path, sess_options=options, providers=providers)
    actual = sess.get_providers()[0]
    if actual != wanted:
        raise PackageMissing(f"{wanted} did not load in onnxruntime {ort.__version__}; it would have run on {actual}")
    return sess, actual


def converted(path: str, precision: str, workdir: str) -> str:
    """The model file to run at `precision` (a converted copy in `workdir` for int8/fp16)."""
    if precision == "fp32":
        return path
    out = os.path.join(workdir, f"model-{precision}.onnx")
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(path, out, weight_type=QuantType.QInt8)
        return out
    if precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(path), keep_io_types=True)
        onnx.save(model, out)
        return out
    raise PackageMissing(f"{precision} has no general conversion in ONNX Runtime; give an ONNX file exported at {precision}")


_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def make_inputs(sess: Any, batch: int, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Seeded inputs for every graph input: the first free dimension is the batch, the
    others `seq_len` (default 32); integer inputs draw ids below `vocab_size` (100)."""
    rng = np.random.default_rng(seed)
    seq = int(params.get("seq_len", 32))
    vocab = int(params.get("vocab_size", 100))
    feeds: dict[str, Any] = {}
    for inp in sess.get_inputs():
        shape, batch_used = [], False
        for dim in inp.shape:
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif not batch_used:
                shape.append(batch)
                batch_used = True
            else:
                shape.append(seq)
        dtype = _NUMPY.get(inp.type)
        if dtype is None:
            raise ValueError(f"input {inp.name} has type {inp.type}, which dtf cannot fill")
        if np.issubdtype(dtype, np.integer):
            value = rng.integers(0, vocab, size=shape).astype(dtype)
            if "mask" in inp.name:
                value = np.ones(shape, dtype=dtype)
        elif dtype is np.bool_:
            value = np.ones(shape, dtype=dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        feeds[inp.name] = value
    return feeds


def temp_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="dtf-onnx-")
