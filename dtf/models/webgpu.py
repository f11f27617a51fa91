"""Real models on WebGPU: an ONNX file run by onnxruntime-web's WebGPU execution provider in
headless Chromium, with parity against ONNX Runtime's CPU provider at fp32.

    ONNX file (``source: onnx`` as is; ``hf``/``timm`` exported with torch.onnx.export)
    -> seeded inputs -> ORT CPU fp32 reference fingerprint (Python, same file and inputs)
    -> loopback HTTP server on 127.0.0.1 serving the page, onnxruntime-web and the model
    -> headless Chromium: requestAdapter (recorded), InferenceSession on "webgpu",
       warm-up + timed runs with performance.now(), outputs posted back
    -> latency, load time, throughput, adapter, stack, fingerprint, parity

onnxruntime-web comes from the npm registry, installed once per machine by
``python -m dtf.models.webgpu setup`` (what the worker's setup script and ``.ci/run`` call)
into ``<state dir>/webgpu`` (``DTF_STATE_DIR``, else ``~/.local/state/dtf``); a worker
installed by ``dtf deploy-script``'s install.sh has it beside its venv (``<prefix>/webgpu``);
``DTF_ORT_WEB_DIR`` overrides both (a folder holding onnxruntime-web's ``dist`` files). Nothing is
fetched from a CDN at run time: the browser reaches only the loopback server.

The adapter is recorded as the page saw it (``adapter.info``: vendor, architecture,
device, description, and whether it is a fallback adapter). A software adapter
(SwiftShader, llvmpipe, lavapipe, or one the browser flags as a fallback) is labelled so in
every place a reader looks: ``webgpu_adapter.fallback``, the metric ``webgpu_fallback`` and
the provenance's ``device_name`` ("software fallback (SwiftShader)"); it is never shown as
a GPU. A machine without Chromium, onnxruntime-web or any WebGPU adapter skips the test
with a reason that names what is missing.

Why one module of ~650 lines: the export, the loopback server, the page's script and the
browser run are the steps of one path that nothing else uses, and the page's JavaScript and
the Python that reads its answer must change together.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..hardware.probe import BROWSERS  # the names dtf detect looks for
from .hub import ModelMissing, PackageMissing
from .source import ModelSource

__all__ = [
    "ORT_WEB_VERSION",
    "PROVIDER",
    "CHROMIUM_FLAGS",
    "main",
    "ort_web_dir",
    "find_browser",
    "setup",
    "is_fallback",
    "adapter_label",
]

ORT_WEB_VERSION = "1.31.1"  # the pinned onnxruntime-web from the npm registry
PROVIDER = "WebGpuExecutionProvider"
ORT_WEB_DIR_ENV = "DTF_ORT_WEB_DIR"
BROWSER_ENV = "DTF_CHROMIUM"
DEFAULT_BROWSER_TIMEOUT_S = 300.0
ORT_BUNDLE = "ort.webgpu.min.mjs"
# Headless Chromium with WebGPU on Linux. Without a GPU the browser's software adapter
# (SwiftShader through Vulkan) answers; with one, the hardware adapter does (high-performance).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--disable-vulkan-surface",
)
# Flags that ask for the software adapter outright (params.webgpu_adapter: swiftshader).
SWIFTSHADER_FLAGS = ("--use-angle=swiftshader", "--use-webgpu-adapter=swiftshader")
_SOFTWARE = ("swiftshader", "llvmpipe", "lavapipe", "softpipe", "warp", "microsoft basic render")


# -- where things are ------------------------------------------------------------------------


def _state_dir() -> str:
    from ..state import default_state_dir

    return default_state_dir(os.environ)


def install_dir() -> Path:
    """The npm prefix ``setup`` installs into: ``<state dir>/webgpu``."""
    return Path(_state_dir()) / "webgpu"


def ort_web_dir() -> Path | None:
    """The folder with onnxruntime-web's dist files (``ort.webgpu.min.mjs`` and its .wasm),
    from DTF_ORT_WEB_DIR or the state dir; None when it is not installed."""
    explicit = os.environ.get(ORT_WEB_DIR_ENV)
    candidates = []
    if explicit:
        base = Path(explicit)
        candidates = [base, base / "dist", base / "node_modules" / "onnxruntime-web" / "dist"]
    else:
        # the state dir (python -m dtf.models.webgpu setup), then beside the venv, where the
        # worker's install.sh puts it (<prefix>/venv and <prefix>/webgpu)
        rel = Path("node_modules") / "onnxruntime-web" / "dist"
        candidates = [install_dir() / rel, Path(sys.prefix).parent / "webgpu" / rel]
    return next((c for c in candidates if (c / ORT_BUNDLE).is_file()), None)


def ort_web_version(dist: Path) -> str | None:
    try:
        return str(json.loads((dist.parent / "package.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def find_browser() -> str | None:
    """A Chromium or Chrome binary: DTF_CHROMIUM if set, else the first on PATH."""
    explicit = os.environ.get(BROWSER_ENV)
    if explicit:
        return explicit if os.path.exists(explicit) else None
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def browser_version(browser: str) -> str | None:
    try:
        out = subprocess.run([browser, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def setup(prefix: str | os.PathLike[str] | None = None, version: str = ORT_WEB_VERSION) -> Path:
    """``npm install onnxruntime-web@VERSION`` into `prefix` (default ``install_dir()``),
    from the npm registry npm is configured for; returns the dist folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise PackageMissing("npm is not installed (apt-get install npm, or Node.js from nodejs.org)")
    target = Path(prefix) if prefix else install_dir()
    target.mkdir(parents=True, exist_ok=True)
    manifest = target / "package.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"name": "dtf-webgpu", "private": True}) + "\n", encoding="utf-8")
    subprocess.run([npm, "install", "--prefix", str(target), "--no-audit", "--no-fund", "--ignore-scripts",
                    "--save-exact", f"onnxruntime-web@{version}"], check=True)
    dist = target / "node_modules" / "onnxruntime-web" / "dist"
    if not (dist / ORT_BUNDLE).is_file():
        raise PackageMissing(f"npm installed onnxruntime-web@{version} but {dist / ORT_BUNDLE} is missing")
    return dist


# -- the adapter -----------------------------------------------------------------------------


def is_fallback(adapter: Mapping[str, Any]) -> bool:
    """True for a software adapter: flagged as a fallback by the browser, or a known
    software rasteriser in its vendor/architecture/device/description."""
    if adapter.get("isFallbackAdapter"):
        return True
    text = " ".join(str(adapter.get(k) or "") for k in ("vendor", "architecture", "device", "description")).lower()
    return any(name in text for name in _SOFTWARE)


def adapter_label(adapter: Mapping[str, Any]) -> str:
    """What the provenance's device_name says: "software fallback (SwiftShader)" for a
    software adapter, else the vendor and architecture or description the browser gave."""
    text = " ".join(str(adapter.get(k) or "") for k in ("vendor", "architecture", "device", "description")).lower()
    if is_fallback(adapter):
        known = {"swiftshader": "SwiftShader", "llvmpipe": "llvmpipe", "lavapipe": "lavapipe",
                 "softpipe": "softpipe", "warp": "WARP", "microsoft basic render": "Microsoft Basic Render"}
        name = next((v for k, v in known.items() if k in text), "unknown software adapter")
        return f"software fallback ({name})"
    parts = [str(adapter.get(k)) for k in ("vendor", "architecture", "description") if adapter.get(k)]
    return " ".join(dict.fromkeys(parts)) or "WebGPU adapter (no info)"


# -- the ONNX file and its inputs ------------------------------------------------------------


def _export(cfg: Mapping[str, Any], source: ModelSource, params: Mapping[str, Any], seed: int, batch: int,
            workdir: str) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """Build the hf/timm model with the runtime's loaders and export it to ONNX (fixed
    shapes). Returns (path, numpy inputs, facts for the metrics)."""
    import torch

    from .runtime import _load_torch

    model = _load_torch(cfg, source, params, seed)
    inputs = model.make_inputs(batch)
    names = list(inputs)
    path = os.path.join(workdir, "model.onnx")
    kwargs: dict[str, Any] = dict(inputs)
    if getattr(getattr(model.module, "config", None), "use_cache", None) is not None:
        kwargs["use_cache"] = False  # one forward pass; no key/value cache among the outputs
    with torch.no_grad():
        output_names = _output_names(torch, model.module(**kwargs))
        torch.onnx.export(model.module, (), path, kwargs=kwargs, input_names=names, output_names=output_names,
                          dynamo=True, external_data=False, optimize=True, verbose=False)
    facts = {
        "param_count": sum(p.numel() for p in model.module.parameters()),
        "task": model.task,
        "model_class": model.model_class,
        "revision": model.revision,
        "config_source": model.config_source,
        "unit": model.unit,
    }
    return path, {k: v.detach().cpu().numpy() for k, v in inputs.items()}, facts


def _output_names(torch: Any, out: Any) -> list[str]:
    """Names for the exported graph's leading outputs, the same the torch runtime gives them
    (last_hidden_state, logits, ...; "output" for a bare tensor), so fingerprints line up."""
    if isinstance(out, torch.Tensor):
        return ["output"]
    items = list(out.items()) if isinstance(out, Mapping) else [(f"output_{i}", v) for i, v in enumerate(out)]
    names = []
    for name, value in items:
        if not isinstance(value, torch.Tensor):
            break  # a nested tuple (hidden states, a cache) flattens into many outputs: stop naming
        names.append(name)
    return names


def _ort_feeds(sess: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The exported inputs, by the graph's input names (unused inputs dropped)."""
    feeds = {}
    for inp in sess.get_inputs():
        if inp.name not in inputs:
            raise ValueError(f"the exported graph wants input {inp.name}, which the model's inputs lack")
        feeds[inp.name] = inputs[inp.name]
    return feeds


def _external_files(path: str) -> list[str]:
    """Locations of external-data files next to an ONNX model (relative to its folder)."""
    try:
        import onnx
    except ImportError:
        return []
    model = onnx.load(path, load_external_data=False)
    found = []
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location" and entry.value not in found:
                found.append(entry.value)
    return found


# -- the browser -----------------------------------------------------------------------------

PAGE = """<!doctype html><meta charset="utf-8"><title>dtf webgpu</title><script type="module">
const CFG = await (await fetch("/config.json")).json();
const post = (kind, body) => fetch("/" + kind, {method: "POST", body: JSON.stringify(body)});
const TYPED = {float32: Float32Array, float16: (typeof Float16Array !== "undefined" ? Float16Array : Uint16Array),
               int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array, bool: Uint8Array, int8: Int8Array};
function b64(buf) {
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
async function run() {
  if (!navigator.gpu) return {skip: "navigator.gpu is missing in this Chromium (WebGPU is off)"};
  const adapter = await navigator.gpu.requestAdapter({powerPreference: "high-performance"});
  if (!adapter) return {skip: "headless Chromium found no WebGPU adapter"};
  const i = adapter.info || {};
  const info = {vendor: i.vendor || "", architecture: i.architecture || "", device: i.device || "",
                description: i.description || "",
                isFallbackAdapter: Boolean(i.isFallbackAdapter || adapter.isFallbackAdapter),
                features: Array.from(adapter.features || []).sort(),
                maxBufferSize: adapter.limits ? adapter.limits.maxBufferSize : null};
  await post("adapter", info);
  if (CFG.precision === "fp16" && !adapter.features.has("shader-f16"))
    return {adapter: info, skip: "the WebGPU adapter has no shader-f16 feature, which fp16 needs"};
  const ort = await import("/ort/" + CFG.bundle);
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = CFG.wasm_threads;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = "error";
  ort.env.webgpu.adapter = adapter;
  const options = {executionProviders: ["webgpu"], graphOptimizationLevel: "all"};
  if (CFG.external.length) options.externalData = CFG.external.map((p) => ({path: p, data: "/model/" + p}));
  await post("progress", {stage: "creating the onnxruntime-web session (WebGPU provider)"});
  const t0 = performance.now();
  const session = await ort.InferenceSession.create("/model/" + CFG.model, options);
  const load_ms = performance.now() - t0;
  const feeds = {};
  for (const inp of CFG.inputs) {
    const buf = await (await fetch("/input/" + inp.index)).arrayBuffer();
    feeds[inp.name] = new ort.Tensor(inp.dtype === "bool" ? "bool" : inp.dtype, new TYPED[inp.dtype](buf), inp.shape);
  }
  const times = [];
  let out = null;
  for (let it = 0; it < CFG.warmup + CFG.iterations; it++) {
    post("progress", {stage: `run ${it + 1} of ${CFG.warmup + CFG.iterations} (${CFG.warmup} warm-up)`,
                      load_ms, times});
    const s = performance.now();
    out = await session.run(feeds);
    if (it >= CFG.warmup) times.push(performance.now() - s);
    if (it < CFG.warmup + CFG.iterations - 1) for (const k in out) if (out[k].dispose) out[k].dispose();
  }
  const outputs = [];
  for (const name of session.outputNames) {
    const t = out[name];
    if (t.type !== "float32" && t.type !== "float16") continue;
    let data = t.data;
    if (t.type === "float16" && !(data instanceof Float32Array)) data = Float32Array.from(data);
    outputs.push({name, type: t.type, dims: Array.from(t.dims), data: b64(data instanceof Float32Array ? data : Float32Array.from(data))});
  }
  const userAgent = navigator.userAgent;
  return {adapter: info, load_ms, times, outputs, ort_version: ort.env.versions ? ort.env.versions.web : null, userAgent};
}
let result;
try { result = await run(); } catch (e) { result = {error: String(e && e.stack ? e.stack : e)}; }
await post("result", result);
</script>"""

_TYPES = {
    ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
    ".onnx": "application/octet-stream", ".html": "text/html; charset=utf-8",
}


class _Server:
    """A loopback HTTP server: the page at /, onnxruntime-web under /ort/, the model and its
    external data under /model/, the inputs under /input/<i>; keeps what the page POSTs."""

    def __init__(self, dist: Path, model_dir: Path, config: dict[str, Any], inputs: list[bytes]) -> None:
        self.answers: dict[str, Any] = {}
        self.done = threading.Event()
        server_self = self
        page = PAGE.encode("utf-8")
        config_bytes = json.dumps(config).encode("utf-8")
        allowed_model = {config["model"], *config["external"]}

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                # cross-origin isolation: lets ort-web's wasm use threads (SharedArrayBuffer)
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _file(self, path: Path) -> None:
                try:
                    body = path.read_bytes()
                except OSError:
                    self._send(404, b"not found", "text/plain")
                    return
                self._send(200, body, _TYPES.get(path.suffix, "application/octet-stream"))

            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                url = self.path.split("?", 1)[0]
                if url in ("/", "/index.html"):
                    self._send(200, page, _TYPES[".html"])
                elif url == "/config.json":
                    self._send(200, config_bytes, _TYPES[".json"])
                elif url.startswith("/ort/"):
                    name = url[len("/ort/"):]
                    if "/" in name or name.startswith("."):
                        self._send(404, b"not found", "text/plain")
                    else:
                        self._file(dist / name)
                elif url.startswith("/model/") and url[len("/model/"):] in allowed_model:
                    self._file(model_dir / url[len("/model/"):])
                elif url.startswith("/input/") and url[len("/input/"):].isdigit() and int(url[7:]) < len(inputs):
                    self._send(200, inputs[int(url[7:])], "application/octet-stream")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                kind = self.path.strip("/")
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {"error": "the page posted something that is not JSON"}
                self.send_response(204)
                self.end_headers()
                server_self.answers[kind] = body
                if kind == "result":
                    server_self.done.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the browser and the renderer and GPU processes it started (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _flags(params: Mapping[str, Any]) -> list[str]:
    flags = list(CHROMIUM_FLAGS)
    if str(params.get("webgpu_adapter") or "auto") == "swiftshader":
        flags.extend(SWIFTSHADER_FLAGS)
    if os.geteuid() == 0 if hasattr(os, "geteuid") else False:
        flags.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
    flags.extend(str(f) for f in params.get("chromium_flags") or ())
    return flags


def _die_with_parent() -> Any:
    """A preexec_fn for the browser (Linux): SIGKILL it when the test process dies, so a test
    the runner kills at its timeout leaves no Chromium behind (it has its own session).
    prctl is looked up here, before the fork; the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG

    return preexec


def run_in_browser(browser: str, dist: Path, model_path: str, feeds: Mapping[str, np.ndarray], *, precision: str,
                   iterations: int, warmup: int, params: Mapping[str, Any],
                   deadline: float | None = None) -> dict[str, Any]:
    """Run the model in headless Chromium; the page's answer (adapter, timings, outputs)."""
    model_dir = Path(model_path).parent
    inputs_meta, blobs = [], []
    for index, (name, value) in enumerate(feeds.items()):
        a = np.ascontiguousarray(value)
        dtype = "bool" if a.dtype == np.bool_ else str(a.dtype)
        inputs_meta.append({"index": index, "name": name, "dtype": dtype, "shape": list(a.shape)})
        blobs.append(a.astype(np.uint8).tobytes() if a.dtype == np.bool_ else a.tobytes())
    config = {
        "model": Path(model_path).name, "external": _external_files(model_path), "inputs": inputs_meta,
        "iterations": iterations, "warmup": warmup, "precision": precision, "bundle": ORT_BUNDLE,
        "wasm_threads": int(params.get("wasm_threads", 1) or 1),
    }
    timeout = float(params.get("browser_timeout_s") or DEFAULT_BROWSER_TIMEOUT_S)
    if deadline is not None:  # leave the test time to report before the runner's own timeout
        timeout = max(1.0, min(timeout, deadline - time.monotonic()))
    server = _Server(dist, model_dir, config, blobs)
    with tempfile.TemporaryDirectory(prefix="dtf-chromium-") as profile:
        log_path = os.path.join(profile, "chromium.log")
        command = [browser, *_flags(params), f"--user-data-dir={profile}", server.url]
        started = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                    preexec_fn=_die_with_parent())
        try:
            while not server.done.wait(0.2):
                if proc.poll() is not None:
                    break
                if time.perf_counter() - started > timeout:
                    break
        finally:
            _stop(proc)
            server.close()
        answer = dict(server.answers.get("result") or {})
        if "adapter" not in answer and "adapter" in server.answers:
            answer["adapter"] = server.answers["adapter"]
        answer["browser_s"] = round(time.perf_counter() - started, 3)
        if not server.done.is_set():
            tail = Path(log_path).read_text(encoding="utf-8", errors="replace")[-1500:]
            why = (f"exited with status {proc.returncode}" if time.perf_counter() - started <= timeout
                   else f"did not answer within {timeout:g} s (params.browser_timeout_s)")
            stage = (server.answers.get("progress") or {}).get("stage") or (
                "the adapter was found" if "adapter" in server.answers else "the page had not reported yet")
            answer["error"] = f"Chromium {why}; last step: {stage}; its log ends: {tail.strip()[-600:]}"
    return answer


# -- the test --------------------------------------------------------------------------------


def _decode_outputs(items: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    import base64

    out = {}
    for item in items:
        data = np.frombuffer(base64.b64decode(item["data"]), dtype=np.float32)
        out[str(item["name"])] = data.reshape([int(d) for d in item["dims"]]).astype(np.float64)
    return out


def main(h: Any, cfg: Mapping[str, Any]) -> None:
    """Run one real-model test on WebGPU; `h` is the dtf harness, `cfg` what the template
    rendered (the same keys as dtf.models.runtime.main's)."""
    from ..stack import stack

    source = ModelSource.from_dict(cfg["source"])
    h.metric("source", source.source)
    h.metric("weights", "file" if source.source == "onnx" else source.weights)
    provenance = stack("webgpu", provider=PROVIDER)
    h.metric("provenance", provenance)
    try:
        _run(h, cfg, source, provenance)
    except PackageMissing as exc:
        h.skip(str(exc))
    except ModelMissing as exc:
        raise RuntimeError(str(exc)) from None


def _run(h: Any, cfg: Mapping[str, Any], source: ModelSource, provenance: dict[str, Any]) -> None:
    from .. import parity as parity_mod
    from ..stack import stack
    from . import onnx_source
    from .runtime import _finish, _named, _peak_rss_mb, require

    hardware, precision, batch = cfg["hardware"], cfg["precision"], int(cfg["batch_size"])
    params: Mapping[str, Any] = cfg.get("params") or {}
    seed, threads = int(params.get("seed", 0)), int(params.get("threads", 0))
    timeout_s = cfg.get("timeout_s")
    deadline = time.monotonic() + float(timeout_s) - min(15.0, 0.1 * float(timeout_s)) if timeout_s else None
    if precision not in ("fp32", "fp16"):
        raise PackageMissing(f"the webgpu runtime runs fp32 and fp16, not {precision} "
                             "(onnxruntime-web's WebGPU provider has no general int8/bf16 path)")
    browser = find_browser()
    if browser is None:
        raise PackageMissing("webgpu needs a Chromium or Chrome binary (apt-get install chromium, or set "
                             f"{BROWSER_ENV}); none found")
    dist = ort_web_dir()
    if dist is None:
        where = os.environ.get(ORT_WEB_DIR_ENV) or str(install_dir())
        raise PackageMissing(f"onnxruntime-web is not installed in {where}; run `python -m dtf.models.webgpu setup` "
                             f"(npm install onnxruntime-web@{ORT_WEB_VERSION}) on this worker")
    require("onnx")  # onnxruntime, for the CPU reference
    if source.source in ("hf", "timm"):
        require(source.source)
        try:
            import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) needs it
        except ImportError:
            raise PackageMissing("onnxscript is not installed on this worker; torch.onnx.export needs it "
                                 "(pip install 'dtf[models]')") from None
    elif source.source != "onnx":
        raise PackageMissing(f"the webgpu runtime runs real models (hf, timm, onnx), not {source.source}")
    if source.source == "onnx" and source.path is None:
        raise ModelMissing(f"{cfg['model']}: an onnx model needs path: to its .onnx file")

    with onnx_source.temp_dir() as workdir:
        start = time.perf_counter()
        facts: dict[str, Any] = {"task": "onnx", "unit": "items"}
        inputs: dict[str, np.ndarray] | None = None
        if source.source == "onnx":
            from .hub import folder_revision

            path = str(source.path)
            if not os.path.exists(path):
                raise ModelMissing(f"no such ONNX file {path}")
            facts["revision"] = folder_revision(path)
        else:
            path, inputs, more = _export(cfg, source, params, seed, batch, workdir)
            facts.update(more)
            h.metric("export_time_s", round(time.perf_counter() - start, 4))
        for key in ("param_count", "task", "model_class", "revision", "config_source"):
            if key in facts:
                h.metric(key, facts[key])
        h.metric("memory_estimate_gb", cfg.get("memory_gb"))

        # The reference: ONNX Runtime's CPU provider at fp32, same file, same inputs.
        ref_sess, _ = onnx_source.session(path, "cpu", threads)
        feeds = _ort_feeds(ref_sess, inputs) if inputs is not None else onnx_source.make_inputs(ref_sess, batch, params, seed)
        names = [o.name for o in ref_sess.get_outputs()]
        reference = parity_mod.fingerprint(_named(names, ref_sess.run(None, feeds))) if source.parity else None
        del ref_sess
        run_path = onnx_source.converted(path, precision, workdir)  # fp16: a converted copy, float32 I/O

        answer = run_in_browser(browser, dist, run_path, feeds, precision=precision,
                                iterations=int(cfg["iterations"]), warmup=int(cfg["warmup"]), params=params,
                                deadline=deadline)

    adapter = answer.get("adapter")
    if isinstance(adapter, dict):
        fallback = is_fallback(adapter)
        h.metric("webgpu_adapter", {**adapter, "fallback": fallback, "label": adapter_label(adapter)})
        h.metric("webgpu_fallback", fallback)
        provenance = {**stack("webgpu", provider=PROVIDER), "device_name": adapter_label(adapter),
                      "webgpu_fallback": fallback, "webgpu_vendor": adapter.get("vendor") or None,
                      "webgpu_architecture": adapter.get("architecture") or None}
    provenance["browser"] = browser_version(browser)
    provenance["onnxruntime_web"] = answer.get("ort_version") or ort_web_version(dist)
    h.metric("provenance", provenance)
    h.metric("onnx_provider", PROVIDER)
    h.metric("browser_s", answer.get("browser_s"))
    if "skip" in answer:
        h.skip(str(answer["skip"]))
    if "error" in answer:
        raise RuntimeError(f"the WebGPU page failed: {answer['error']}")

    h.metric("load_time_s", round(float(answer["load_ms"]) / 1000.0, 4))
    h.latencies_ms.extend(float(t) for t in answer["times"])
    h.metric("peak_rss_mb", _peak_rss_mb())
    h.report_latency(items_per_iteration=batch)
    h.metric("throughput_unit", f"{facts['unit']}/s")
    outputs = _decode_outputs(answer.get("outputs") or [])
    outputs = {k: outputs[k] for k in names if k in outputs}  # the graph's order, as the reference
    _finish(h, {**cfg, "hardware": hardware}, source, outputs, reference)


# -- setup from the command line -------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dtf.models.webgpu",
                                     description="onnxruntime-web for dtf's webgpu queue")
    sub = parser.add_subparsers(dest="command", required=True)
    p_setup = sub.add_parser("setup", help=f"npm install onnxruntime-web@{ORT_WEB_VERSION} into the dtf state dir")
    p_setup.add_argument("--prefix", default=None, help=f"npm prefix (default {install_dir()})")
    p_setup.add_argument("--version", default=ORT_WEB_VERSION)
    sub.add_parser("check", help="say whether Chromium and onnxruntime-web are there")
    args = parser.parse_args(argv)
    if args.command == "setup":
        try:
            dist = setup(args.prefix, args.version)
        except (PackageMissing, subprocess.CalledProcessError) as exc:
            print(f"dtf: {exc}", file=sys.stderr)
            return 2
        print(f"onnxruntime-web {ort_web_version(dist)} in {dist}")
        if args.prefix:
            print(f"point workers at it: export {ORT_WEB_DIR_ENV}={dist}")
        return 0
    browser, dist = find_browser(), ort_web_dir()
    print(f"browser: {browser or 'missing'}" + (f" ({browser_version(browser)})" if browser else ""))
    print(f"onnxruntime-web: {dist or 'missing'}" + (f" ({ort_web_version(dist)})" if dist else ""))
    return 0 if browser and dist else 1


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
