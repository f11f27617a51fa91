"""What a rendered real-model test runs, inside its own process.

    load (timed) -> seeded inputs -> cpu/fp32 reference outputs (for parity)
    -> precision and device -> warm-up + timed iterations -> fingerprint, parity
    -> generation timings for generative tasks -> metrics and the stack

Every result records: latency p50/p90/p99 and throughput in the model's unit, load time,
peak device memory (torch's counters on cuda/rocm/mps) and peak process RSS next to the
memory estimate the scheduler used, parameter count, the model's revision, the stack
(``dtf.stack``), the output fingerprint and, for every test but the cpu/fp32 reference,
the parity verdict against cpu/fp32 computed here from the same seeded weights and inputs
(``dtf.parity`` holds the tolerances). A parity failure fails the test with its message.

A missing package skips the test with a reason that names it; a missing model is an error
that says where to fetch it.
"""

from __future__ import annotations

import contextlib
import importlib
import resource
import sys
import time
from typing import Any, Iterator, Mapping

import numpy as np

from .. import parity as parity_mod
from ..stack import stack
from . import reuse
from .hub import ModelMissing, PackageMissing
from .source import PACKAGES_FOR_SOURCE, ModelSource

__all__ = ["main", "require"]

MAX_FINGERPRINT_OUTPUTS = 4
DEFAULT_NEW_TOKENS = 8


def require(source: str) -> None:
    """Raise PackageMissing naming the first package `source` needs that is not installed."""
    import importlib.util

    for package in PACKAGES_FOR_SOURCE.get(source, ()):
        if importlib.util.find_spec(package) is None:
            raise PackageMissing(f"{package} is not installed on this worker (pip install 'dtf[models]')")


def main(h: Any, cfg: Mapping[str, Any]) -> None:
    """Run one real-model test; `h` is the dtf harness, `cfg` what the template rendered."""
    source = ModelSource.from_dict(cfg["source"])
    h.metric("source", source.source)
    h.metric("weights", "file" if source.source == "onnx" else source.weights)
    try:
        require(source.source)
        if source.source == "onnx":
            _run_onnx(h, cfg, source)
        else:
            _run_torch(h, cfg, source)
    except PackageMissing as exc:
        h.metric("provenance", stack())
        h.skip(str(exc))
    except ModelMissing as exc:
        h.metric("provenance", stack())
        raise RuntimeError(str(exc)) from None


# -- torch (transformers, timm) -------------------------------------------------------------


def _torch_device(torch: Any, hardware: str) -> str:
    if hardware == "cpu":
        return "cpu"
    if hardware in ("cuda", "rocm"):
        hip = getattr(torch.version, "hip", None)
        if not torch.cuda.is_available():
            raise PackageMissing(f"torch {torch.__version__} sees no {hardware} device on this worker")
        if (hardware == "rocm") != bool(hip):
            raise PackageMissing(f"torch {torch.__version__} is not a {hardware} build")
        return "cuda"
    if hardware == "mps":
        if not torch.backends.mps.is_available():
            raise PackageMissing(f"torch {torch.__version__} sees no mps device on this worker")
        return "mps"
    raise PackageMissing(f"torch does not run on {hardware}; use the models/webgpu template")


def _check_precision(torch: Any, device: str, precision: str) -> None:
    if precision == "int8" and device != "cpu":
        raise PackageMissing("int8 runs through torch dynamic quantisation on the cpu only; use an ONNX model for int8 on GPUs")
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise PackageMissing("this GPU does not support bf16")


def _sync(torch: Any, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def _float_outputs(torch: Any, out: Any) -> dict[str, Any]:
    """Named floating-point tensors of a model output, as float64 numpy arrays."""
    if isinstance(out, torch.Tensor):
        items: Iterator[tuple[str, Any]] = iter([("output", out)])
    elif isinstance(out, Mapping):
        items = iter(out.items())
    elif isinstance(out, (tuple, list)):
        items = iter((f"output_{i}", v) for i, v in enumerate(out))
    else:
        items = iter(())
    named: dict[str, Any] = {}
    for name, value in items:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            named[name] = value.detach().to("cpu", torch.float64).numpy()
        if len(named) >= MAX_FINGERPRINT_OUTPUTS:
            break
    return named


def _perturbed(outputs: dict[str, Any], noise: float, seed: int) -> dict[str, Any]:
    """Test hook (params.parity_noise): outputs with relative Gaussian noise added, to prove
    that parity catches a backend that computes something else."""
    rng = np.random.default_rng(seed + 1)
    out = {}
    for name, a in outputs.items():
        scale = float(np.sqrt(np.mean(np.square(a)))) if a.size else 0.0
        out[name] = a + noise * scale * rng.standard_normal(a.shape)
    return out


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 1)


@contextlib.contextmanager
def _device_peak(torch: Any, device: str) -> Iterator[dict[str, float]]:
    found: dict[str, float] = {}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    yield found
    if device == "cuda":
        found["peak_device_memory_mb"] = round(torch.cuda.max_memory_allocated() / (1 << 20), 1)
    elif device == "mps":
        found["peak_device_memory_mb"] = round(torch.mps.driver_allocated_memory() / (1 << 20), 1)


def _load_torch(cfg: Mapping[str, Any], source: ModelSource, params: Mapping[str, Any], seed: int) -> Any:
    if source.source == "timm":
        from . import timm_source

        return timm_source.load(cfg["model"], source, params, seed)
    from . import hf

    return hf.load(cfg["model"], cfg.get("family", "unknown"), source, params, seed)


def _run_torch(h: Any, cfg: Mapping[str, Any], source: ModelSource) -> None:
    started = time.perf_counter()
    import torch

    hardware, precision, batch = cfg["hardware"], cfg["precision"], int(cfg["batch_size"])
    params: Mapping[str, Any] = cfg.get("params") or {}
    seed = int(params.get("seed", 0))
    if int(params.get("threads", 0)) > 0:
        torch.set_num_threads(int(params["threads"]))
    device = _torch_device(torch, hardware)
    _check_precision(torch, device, precision)
    h.metric("provenance", stack(device))

    importlib.import_module("timm" if source.source == "timm" else "transformers")
    h.metric("import_time_s", round(time.perf_counter() - started, 4))  # torch and the library, once per test process
    reuse.restore_threads(params)  # forked from a model server (dtf.models.reuse): threads as a fresh process has them
    start = time.perf_counter()
    model = _load_torch(cfg, source, params, seed)  # takes the server's module when it built this one
    h.metric("load_time_s", round(time.perf_counter() - start, 4))
    server_load_s = reuse.reused()
    h.metric("model_reused", server_load_s is not None)
    if server_load_s is not None:
        h.metric("model_load_s", round(server_load_s, 4))  # in the server, once for every test forked from it
    param_count = sum(p.numel() for p in model.module.parameters())
    h.metric("param_count", param_count)
    h.metric("task", model.task)
    h.metric("model_class", model.model_class)
    h.metric("revision", model.revision)
    h.metric("config_source", model.config_source)
    h.metric("memory_estimate_gb", cfg.get("memory_gb"))
    inputs = model.make_inputs(batch)

    reference = None
    is_reference = (hardware, precision) == parity_mod.REFERENCE
    if source.parity and not is_reference:
        with torch.inference_mode():
            reference = parity_mod.fingerprint(_float_outputs(torch, model.module(**inputs)))

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    with _device_peak(torch, device) as peak:
        start = time.perf_counter()
        module = model.module
        if precision == "int8":
            module = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
        else:
            module = module.to(device=device, dtype=dtype)
        dev_inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
        _sync(torch, device)
        h.metric("to_device_s", round(time.perf_counter() - start, 4))

        def step() -> Any:
            out = module(**dev_inputs)
            _sync(torch, device)
            return out

        with torch.inference_mode():
            outputs = h.timed(step, iterations=int(cfg["iterations"]), warmup=int(cfg["warmup"]))
            last = _float_outputs(torch, outputs[-1])
            del outputs
            if model.generate_inputs:
                _generation(h, torch, device, module, dev_inputs, model, batch, params)
    h.metrics.update(peak)
    h.metric("peak_rss_mb", _peak_rss_mb())
    h.report_latency(items_per_iteration=batch)
    h.metric("throughput_unit", f"{model.unit}/s")
    _finish(h, cfg, source, last, reference)


def _generation(h: Any, torch: Any, device: str, module: Any, inputs: Mapping[str, Any], model: Any,
                batch: int, params: Mapping[str, Any]) -> None:
    """Time to first token and tokens/s with greedy decoding of a fixed number of tokens."""
    new_tokens = int(params.get("new_tokens", DEFAULT_NEW_TOKENS))
    gen_inputs = {k: v for k, v in inputs.items() if k in (model.generate_inputs or ())}
    common = {"do_sample": False, "pad_token_id": model.pad_token_id}

    def generate(n: int) -> float:
        start = time.perf_counter()
        module.generate(**gen_inputs, max_new_tokens=n, min_new_tokens=n, **common)
        _sync(torch, device)
        return time.perf_counter() - start

    generate(1)  # warm-up: the first call builds caches
    first = generate(1)
    full = generate(new_tokens)
    h.metric("time_to_first_token_ms", round(first * 1000.0, 4))
    h.metric("generate_new_tokens", new_tokens)
    h.metric("tokens_per_s", round(batch * new_tokens / full, 3) if full > 0 else None)


def _finish(h: Any, cfg: Mapping[str, Any], source: ModelSource, outputs: dict[str, Any],
            reference: dict[str, Any] | None) -> None:
    """Fingerprint, checks and parity; a parity failure is raised last, after every metric."""
    params: Mapping[str, Any] = cfg.get("params") or {}
    noise = float(params.get("parity_noise", 0.0) or 0.0)
    if noise > 0 and reference is not None:  # candidates only: the cpu/fp32 reference stays true
        outputs = _perturbed(outputs, noise, int(params.get("seed", 0)))
    h.check(bool(outputs), "the model returned floating-point outputs")
    fp = parity_mod.fingerprint(outputs)
    h.metric("fingerprint", fp)
    batch = int(cfg["batch_size"])
    for name, entry in fp.items():
        h.check(entry["finite"], f"{name} is finite")
        h.check(not entry["shape"] or entry["shape"][0] == batch, f"{name} has the batch dimension {batch}")
    candidate = f"{cfg['hardware']}/{cfg['precision']}"
    if not source.parity:
        h.metric("parity", {"verdict": "off", "candidate": candidate})
        return
    if reference is None:
        h.metric("parity", {"verdict": "reference", "candidate": candidate})
        return
    result = parity_mod.compare(reference, fp, precision=cfg["precision"], candidate_name=candidate)
    h.metric("parity", result.to_dict())
    if result.verdict == "fail":
        raise AssertionError(f"parity: {result.message}")


# -- ONNX Runtime ------------------------------------------------------------------------------


def _run_onnx(h: Any, cfg: Mapping[str, Any], source: ModelSource) -> None:
    from . import onnx_source
    from .hub import folder_revision

    hardware, precision, batch = cfg["hardware"], cfg["precision"], int(cfg["batch_size"])
    params: Mapping[str, Any] = cfg.get("params") or {}
    seed, threads = int(params.get("seed", 0)), int(params.get("threads", 0))
    if source.path is None:
        raise ModelMissing(f"{cfg['model']}: an onnx model needs path: to its .onnx file")
    h.metric("provenance", stack("cpu"))
    with onnx_source.temp_dir() as workdir:
        start = time.perf_counter()
        path = onnx_source.converted(source.path, precision, workdir)
        sess, provider = onnx_source.session(path, hardware, threads)
        h.metric("load_time_s", round(time.perf_counter() - start, 4))
        h.metric("provenance", stack(hardware if hardware != "cpu" else "cpu", provider=provider))
        h.metric("onnx_provider", provider)
        h.metric("revision", folder_revision(source.path))
        h.metric("task", "onnx")
        h.metric("memory_estimate_gb", cfg.get("memory_gb"))
        feeds = onnx_source.make_inputs(sess, batch, params, seed)
        names = [o.name for o in sess.get_outputs()]

        reference = None
        if source.parity and (hardware, precision) != parity_mod.REFERENCE:
            ref_sess, _ = onnx_source.session(source.path, "cpu", threads)
            ref_feeds = onnx_source.make_inputs(ref_sess, batch, params, seed)
            reference = parity_mod.fingerprint(_named(names, ref_sess.run(None, ref_feeds)))

        outputs = h.timed(lambda: sess.run(None, feeds), iterations=int(cfg["iterations"]), warmup=int(cfg["warmup"]))
        last = _named(names, outputs[-1])
    h.metric("peak_rss_mb", _peak_rss_mb())
    h.report_latency(items_per_iteration=batch)
    h.metric("throughput_unit", "items/s")
    _finish(h, cfg, source, last, reference)


def _named(names: list[str], values: list[Any]) -> dict[str, Any]:
    out = {}
    for name, value in zip(names, values):
        a = np.asarray(value)
        if np.issubdtype(a.dtype, np.floating):
            out[name] = a.astype(np.float64)
        if len(out) >= MAX_FINGERPRINT_OUTPUTS:
            break
    return out
