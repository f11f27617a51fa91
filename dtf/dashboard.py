"""`dtf dashboard`: a small read-only web page of test results, which Flower does not show.

Runs and their live progress, the pass/fail matrix (models x hardware, each model with its
source: hf, timm, onnx, or "synthetic" for a built-in workload) of the chosen run,
latency and throughput trends over runs per (model, hardware, batch size, precision), and
the workers' health. Served by the standard library's threading HTTP server: one page,
its script and style (inline here, no CDN, nothing to install) and a JSON API the page
polls. GET only.

Data comes from the leader coordinator over the broker (query ops run_progress,
run_matrix, metric_trends, workers), or from a DuckDB file opened read-only per request
(`--db`; DuckDB refuses while a coordinator holds the file, so that is for offline use).

Authentication follows Flower's rule (see dtf.flower): open on loopback, with a warning
and a Host-header check against DNS rebinding; anywhere else only with basic auth from
DTF_DASHBOARD_BASIC_AUTH(_FILE), falling back to DTF_FLOWER_BASIC_AUTH(_FILE).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import parse_qs, urlsplit

from .errors import DtfError
from .flower import WebAuth, basic_auth_from_env, is_loopback

__all__ = ["DashboardSource", "BrokerSource", "DbSource", "CachedSource", "DashboardServer",
           "dashboard_auth", "DASHBOARD_AUTH_ENV"]

log = logging.getLogger("dtf.dashboard")

DASHBOARD_AUTH_ENV = "DTF_DASHBOARD_BASIC_AUTH"


class DashboardSource(Protocol):
    """Where the dashboard reads from: four read-only queries."""

    def runs(self, limit: int) -> list[dict[str, Any]]: ...
    def matrix(self, run_id: str) -> list[dict[str, Any]]: ...
    def trends(self, runs: int, suite_name: str | None) -> list[dict[str, Any]]: ...
    def workers(self) -> list[dict[str, Any]]: ...
    def scale(self) -> list[dict[str, Any]]: ...


class BrokerSource:
    """Asks the leader coordinator through the broker (CoordinatorClient.call)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def runs(self, limit: int) -> list[dict[str, Any]]:
        return list(self.client.call("run_progress", limit=limit))

    def matrix(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.client.call("run_matrix", run_id=run_id))

    def trends(self, runs: int, suite_name: str | None) -> list[dict[str, Any]]:
        return list(self.client.call("metric_trends", runs=runs, suite_name=suite_name))

    def workers(self) -> list[dict[str, Any]]:
        return list(self.client.call("workers"))

    def scale(self) -> list[dict[str, Any]]:
        return list(self.client.call("scale"))


class DbSource:
    """Reads a DuckDB file, opened read-only for each request and closed after it, so a
    coordinator started later can still take the file."""

    def __init__(self, path: str, *, password: str | None = None) -> None:
        self.path = path
        self._password = password

    def _with_store(self, read: Callable[[Any], Any]) -> Any:
        from .store import open_store

        # locked down: a crafted file reads nothing else (a lake: its data and its catalog only)
        with open_store(self.path, reports=True, password=self._password) as store:
            return read(store)

    def runs(self, limit: int) -> list[dict[str, Any]]:
        return list(self._with_store(lambda s: s.run_progress(limit)))

    def matrix(self, run_id: str) -> list[dict[str, Any]]:
        return list(self._with_store(lambda s: s.run_matrix(run_id)))

    def trends(self, runs: int, suite_name: str | None) -> list[dict[str, Any]]:
        return list(self._with_store(lambda s: s.metric_trends(runs, suite_name=suite_name)))

    def workers(self) -> list[dict[str, Any]]:
        return list(self._with_store(lambda s: s.workers()))

    def scale(self) -> list[dict[str, Any]]:
        return list(self._with_store(lambda s: s.scale_advice(time.time())))


class CachedSource:
    """Answers repeated questions from memory for ``ttl_s``: many open tabs, one query."""

    def __init__(self, source: DashboardSource, ttl_s: float = 1.0) -> None:
        self.source = source
        self.ttl_s = ttl_s
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _get(self, key: tuple[Any, ...], fetch: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        value = fetch()
        with self._lock:
            self._cache[key] = (now, value)
            if len(self._cache) > 256:  # run ids come from clients: bound the memory
                self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self.ttl_s}
        return value

    def runs(self, limit: int) -> list[dict[str, Any]]:
        return list(self._get(("runs", limit), lambda: self.source.runs(limit)))

    def matrix(self, run_id: str) -> list[dict[str, Any]]:
        return list(self._get(("matrix", run_id), lambda: self.source.matrix(run_id)))

    def trends(self, runs: int, suite_name: str | None) -> list[dict[str, Any]]:
        return list(self._get(("trends", runs, suite_name), lambda: self.source.trends(runs, suite_name)))

    def workers(self) -> list[dict[str, Any]]:
        return list(self._get(("workers",), self.source.workers))

    def scale(self) -> list[dict[str, Any]]:
        return list(self._get(("scale",), self.source.scale))


def dashboard_auth(env: Mapping[str, str]) -> WebAuth:
    """Basic-auth credentials for the dashboard: its own variables, else Flower's."""
    creds = basic_auth_from_env(env, DASHBOARD_AUTH_ENV) or basic_auth_from_env(env)
    return WebAuth(basic=creds)


# -- HTTP ----------------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    """JSON the browser can parse: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _int_arg(query: Mapping[str, list[str]], name: str, default: int, most: int) -> int:
    try:
        return max(1, min(most, int(query.get(name, [str(default)])[0])))
    except ValueError:
        return default


_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                                " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class _Handler(BaseHTTPRequestHandler):
    server: "DashboardServer"
    server_version = "dtf-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # Everything but GET and HEAD is refused: the dashboard changes nothing.
    def do_POST(self) -> None:
        self._send(405, b"read-only\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._allowed():
            return
        url = urlsplit(self.path)
        static = _STATIC.get(url.path)
        if static is not None:
            self._send(200, static[1].encode("utf-8"), static[0], {"Cache-Control": "no-cache"})
            return
        api = self.server.api.get(url.path)
        if api is None:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")
            return
        self._api(api, parse_qs(url.query))

    def _api(self, api: Callable[[Mapping[str, list[str]]], Any], query: Mapping[str, list[str]]) -> None:
        try:
            status, data = 200, api(query)
        except DtfError as exc:
            status, data = 503, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the page shows the error; the server goes on
            log.warning("dashboard query failed: %s", exc)
            status, data = 500, {"error": f"{type(exc).__name__}: {exc}"}
        body = json.dumps(_finite(data), default=str, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json", {"Cache-Control": "no-store"})

    def _allowed(self) -> bool:
        auth = self.server.auth
        if auth.enabled:
            if _basic_ok(self.headers.get("Authorization", ""), auth.basic):
                return True
            self._send(401, b"authentication required\n", "text/plain; charset=utf-8",
                       {"WWW-Authenticate": 'Basic realm="dtf dashboard", charset="UTF-8"'})
            return False
        # Open on loopback: a page elsewhere could still reach it by DNS rebinding, so only
        # loopback Host names are served.
        if is_loopback(_host_name(self.headers.get("Host") or "")):
            return True
        self._send(421, b"loopback host names only\n", "text/plain; charset=utf-8")
        return False

    def _send(self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**_SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _host_name(host_header: str) -> str:
    """"127.0.0.1:8000" -> "127.0.0.1", "[::1]:8000" -> "::1", "localhost" -> "localhost"."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if ":" in host_header else host_header


def _basic_ok(header: str, credentials: tuple[str, ...]) -> bool:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    # Compare against every credential, so timing does not tell which user exists.
    return sum(hmac.compare_digest(given.encode(), c.encode()) for c in credentials) > 0


class DashboardServer(ThreadingHTTPServer):
    """The dashboard's HTTP server; ``serve_forever()`` until ``shutdown()``."""

    daemon_threads = True

    def __init__(self, source: DashboardSource, address: str, port: int, auth: WebAuth) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.source = source
        self.auth = auth
        self.api: dict[str, Callable[[Mapping[str, list[str]]], Any]] = {
            "/api/runs": lambda q: source.runs(_int_arg(q, "limit", 20, 200)),
            "/api/run": lambda q: {"run_id": _run_id(q), "matrix": source.matrix(_run_id(q))},
            "/api/trends": lambda q: source.trends(_int_arg(q, "runs", 30, 500), (q.get("suite") or [""])[0] or None),
            "/api/workers": lambda q: source.workers(),
            "/api/scale": lambda q: source.scale(),
            "/healthz": lambda q: {"ok": True},
        }
        super().__init__((address, port), _Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _run_id(query: Mapping[str, list[str]]) -> str:
    run_id = (query.get("run_id") or [""])[0]
    if not run_id:
        raise DtfError("run_id is required")
    return run_id


# -- the page ------------------------------------------------------------------------------
_INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dtf dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head><body>
<header><h1>dtf</h1><span id="updated">loading&hellip;</span></header>
<div id="error" hidden></div>
<main>
<section><h2>Runs</h2>
<table id="runs"><thead><tr><th>run</th><th>suite</th><th>status</th><th>submitted</th>
<th>progress</th><th>passed</th><th>failing</th><th>skipped</th></tr></thead><tbody></tbody></table></section>
<section><h2>Pass/fail matrix <span id="matrix-run" class="muted"></span></h2>
<table id="matrix"><thead></thead><tbody></tbody></table>
<p class="muted">cell: passed/total; red: something failed, amber: not finished, grey: only skipped</p></section>
<section><h2>Trends</h2>
<label>series <select id="series"></select></label>
<div class="charts"><figure><figcaption>latency p50 (ms)</figcaption><svg id="chart-latency" viewBox="0 0 480 200"></svg></figure>
<figure><figcaption>throughput (items/s)</figcaption><svg id="chart-throughput" viewBox="0 0 480 200"></svg></figure></div></section>
<section><h2>Workers</h2>
<table id="workers"><thead><tr><th>worker</th><th>state</th><th>cpu %</th><th>mem %</th><th>load</th>
<th>gpu mem %</th><th>running</th><th>last seen</th></tr></thead><tbody></tbody></table></section>
<section><h2>Scaling</h2>
<table id="scale"><thead><tr><th>queue</th><th>advice</th><th>backlog</th><th>backlog s</th><th>workers</th>
<th>slots</th><th>running</th><th>utilisation</th><th>why</th></tr></thead><tbody></tbody></table>
<p class="muted">dtf scale: add when the backlog takes over 750 s on the live slots, remove under 50% utilisation</p></section>
</main></body></html>
"""

_APP_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:1em;align-items:baseline;padding:.6em 1.2em;background:#1d2330;color:#fff}
header h1{margin:0;font-size:1.3em} #updated{opacity:.7;font-size:.9em}
main{padding:0 1.2em 2em} h2{font-size:1.05em;margin:1.4em 0 .5em}
table{border-collapse:collapse;background:#fff;min-width:40%} th,td{padding:.3em .6em;border-bottom:1px solid #e3e6eb;text-align:left}
#runs tbody tr{cursor:pointer} #runs tr.selected{background:#e8f0ff}
.bar{display:inline-flex;width:160px;height:10px;background:#e3e6eb;border-radius:5px;overflow:hidden;vertical-align:middle}
.bar span{display:block;height:100%} .bar .passed{background:#2e9d57} .bar .failing{background:#d64541} .bar .skipped{background:#a0a7b4}
.cell-pass{background:#dff3e6} .cell-fail{background:#fbe0df} .cell-wait{background:#fdf1d6} .cell-skip{background:#eceef1}
.muted{color:#6b7280;font-weight:normal;font-size:.9em}
#error{background:#fbe0df;color:#8a1c17;padding:.5em 1.2em}
.charts{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0;background:#fff;padding:.5em}
svg{width:480px;height:200px} .axis{stroke:#a0a7b4} .grid{stroke:#eceef1}
.line{fill:none;stroke:#2f6fdb;stroke-width:2} .dot{fill:#2f6fdb} svg text{font-size:11px;fill:#6b7280}
.source{font-size:.75em;font-weight:normal;padding:0 .4em;border-radius:.6em;background:#e8f0ff;color:#2f6fdb}
.source-synthetic{background:#eceef1;color:#6b7280}
.state-online{color:#2e9d57} .state-constrained{color:#b7791f} .state-offline{color:#d64541}
"""

_APP_JS = r"""
'use strict';
const FAILING = ['failed', 'error', 'timeout'];
const PASSING = ['passed', 'flaky', 'cached'];
const UNFINISHED = ['pending', 'queued', 'running'];
let selected = decodeURIComponent(location.hash.slice(1)) || null;
let trends = [];

function el(tag, attrs, ...children) {
  const node = tag.startsWith('svg:') ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
                                      : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
const sum = (counts, keys) => keys.reduce((n, k) => n + (counts[k] || 0), 0);
const total = counts => Object.values(counts).reduce((a, b) => a + b, 0);
const fmtTime = t => t ? new Date(t * 1000).toLocaleString() : '-';
const fmt = (v, d = 1) => (v === null || v === undefined) ? '-' : Number(v).toFixed(d);

async function getJson(path) {
  const response = await fetch(path, {cache: 'no-store'});
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}
function showError(err) {
  const box = document.getElementById('error');
  box.hidden = !err;
  box.textContent = err ? 'cannot load: ' + err.message : '';
}

function renderRuns(runs) {
  const body = document.querySelector('#runs tbody');
  body.replaceChildren();
  if (!selected && runs.length) selected = (runs.find(r => r.status === 'running') || runs[0]).run_id;
  for (const run of runs) {
    const c = run.counts || {};
    const n = total(c) || 1, passed = sum(c, PASSING), failing = sum(c, FAILING), skipped = (c.skipped || 0) + (c.quarantined || 0);
    const done = passed + failing + skipped;
    const bar = el('span', {class: 'bar'});
    for (const [cls, k] of [['passed', passed], ['failing', failing], ['skipped', skipped]]) {
      const part = el('span', {class: cls});
      part.style.width = `${100 * k / n}%`;  // CSSOM, not a style attribute: the CSP allows it
      bar.append(part);
    }
    const row = el('tr', {'data-run-id': run.run_id, class: run.run_id === selected ? 'selected' : ''},
      el('td', {}, run.run_id), el('td', {}, run.suite_name || ''), el('td', {class: 'run-status'}, run.status),
      el('td', {}, fmtTime(run.submitted_at)),
      el('td', {}, bar, ' ', el('span', {class: 'progress-text'}, `${done}/${total(c)}`)),
      el('td', {}, passed), el('td', {}, failing), el('td', {}, skipped));
    row.addEventListener('click', () => { selected = run.run_id; location.hash = encodeURIComponent(selected); refresh(); });
    body.append(row);
  }
}

function renderMatrix(data) {
  document.getElementById('matrix-run').textContent = data ? data.run_id : '';
  const head = document.querySelector('#matrix thead'), body = document.querySelector('#matrix tbody');
  head.replaceChildren(); body.replaceChildren();
  if (!data) return;
  const hardware = [...new Set(data.matrix.map(c => c.hardware))].sort();
  const models = [...new Set(data.matrix.map(c => c.model))].sort();
  head.append(el('tr', {}, el('th', {}, 'model'), ...hardware.map(h => el('th', {}, h))));
  for (const model of models) {
    const sources = [...new Set(data.matrix.filter(c => c.model === model).flatMap(c => c.sources || []))];
    const label = el('th', {}, model);
    for (const source of sources) {
      label.append(' ', el('span', {class: 'source source-' + (source === 'synthetic' ? 'synthetic' : 'real'),
        title: source === 'synthetic' ? 'a built-in synthetic workload, not the real model' : 'real model from ' + source}, source));
    }
    const cells = hardware.map(hw => {
      const cell = data.matrix.find(c => c.model === model && c.hardware === hw);
      if (!cell) return el('td', {}, '');
      const c = cell.counts, cls = sum(c, FAILING) ? 'cell-fail' : sum(c, UNFINISHED) ? 'cell-wait'
        : (sum(c, PASSING) ? 'cell-pass' : 'cell-skip');
      const why = cell.failures.map(f => `${f.test_id}: ${f.status} ${f.reason}`).join('\n');
      return el('td', {class: cls, title: why}, `${sum(c, PASSING)}/${total(c)}`);
    });
    body.append(el('tr', {}, label, ...cells));
  }
}

function drawChart(svg, points, field) {
  svg.replaceChildren();
  const pts = points.map((p, i) => [i, p[field], p]).filter(p => p[1] !== null && p[1] !== undefined);
  const W = 480, H = 200, L = 56, R = 12, T = 12, B = 28;
  svg.append(el('svg:line', {class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B}),
             el('svg:line', {class: 'axis', x1: L, y1: T, x2: L, y2: H - B}));
  if (!pts.length) { svg.append(el('svg:text', {x: L + 10, y: H / 2}, 'no data yet')); return; }
  let lo = Math.min(...pts.map(p => p[1])), hi = Math.max(...pts.map(p => p[1]));
  if (hi === lo) { hi += Math.abs(hi) * 0.1 || 1; lo -= Math.abs(lo) * 0.1 || 1; }
  const n = Math.max(points.length - 1, 1);
  const x = i => L + (W - L - R) * i / n, y = v => H - B - (H - T - B) * (v - lo) / (hi - lo);
  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.append(el('svg:line', {class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v)}),
               el('svg:text', {x: 4, y: y(v) + 4}, fmt(v, v < 10 ? 2 : 0)));
  }
  svg.append(el('svg:path', {class: 'line', d: pts.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ')}));
  for (const [i, v, p] of pts) {
    svg.append(el('svg:circle', {class: 'dot', cx: x(i), cy: y(v), r: 3.5}, el('svg:title', {}, `${p.run_id}: ${fmt(v, 2)}`)));
  }
  svg.append(el('svg:text', {x: L, y: H - 8}, 'older'), el('svg:text', {x: W - R - 36, y: H - 8}, 'newer'));
}

function seriesKey(s) {
  const sources = (s.sources || []).join('+');
  return `${s.model} · ${s.hardware} · bs${s.batch_size} · ${s.precision}${sources ? " · " + sources : ""}`;
}
function renderTrends() {
  const select = document.getElementById('series');
  const keep = select.value;
  select.replaceChildren(...trends.map((s, i) => el('option', {value: String(i)}, `${seriesKey(s)} (${s.points.length} runs)`)));
  const best = trends.reduce((b, s, i) => (s.points.length > (trends[b] ? trends[b].points.length : -1) ? i : b), 0);
  select.value = keep && Number(keep) < trends.length ? keep : String(best);
  const series = trends[Number(select.value)];
  drawChart(document.getElementById('chart-latency'), series ? series.points : [], 'latency_p50_ms');
  drawChart(document.getElementById('chart-throughput'), series ? series.points : [], 'throughput_items_s');
}

function renderWorkers(workers) {
  const body = document.querySelector('#workers tbody');
  body.replaceChildren(...workers.map(w => {
    const h = w.health || {};
    return el('tr', {}, el('td', {}, w.worker_id), el('td', {class: 'state-' + w.state}, w.state || ''),
      el('td', {}, fmt(h.cpu_percent)), el('td', {}, fmt(h.memory_percent)), el('td', {}, h.load ? h.load.join(' ') : '-'),
      el('td', {}, fmt(h.gpu_memory_percent)), el('td', {}, h.running ?? '-'), el('td', {}, fmtTime(w.last_seen)));
  }));
}

function renderScale(rows) {
  const body = document.querySelector('#scale tbody');
  body.replaceChildren(...rows.map(r => el('tr', {}, el('td', {}, r.queue),
    el('td', {class: 'advice-' + r.action}, r.action === 'hold' ? 'hold' : `${r.action} ${r.count}`),
    el('td', {}, r.backlog_tests), el('td', {}, fmt(r.backlog_s, 0)), el('td', {}, r.workers), el('td', {}, r.slots),
    el('td', {}, r.running), el('td', {}, r.utilisation === null ? '-' : fmt(100 * r.utilisation, 0) + '%'),
    el('td', {}, r.reason))));
}

let tick = 0;
async function refresh() {
  try {
    renderRuns(await getJson('/api/runs?limit=20'));
    renderMatrix(selected ? await getJson('/api/run?run_id=' + encodeURIComponent(selected)) : null);
    if (tick % 5 === 0) { trends = await getJson('/api/trends?runs=30'); renderTrends(); }
    if (tick % 3 === 0) renderWorkers(await getJson('/api/workers'));
    if (tick % 3 === 0) renderScale(await getJson('/api/scale'));
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    showError(null);
  } catch (err) {
    showError(err);
  }
  tick += 1;
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('series').addEventListener('change', renderTrends);
  refresh();
  setInterval(refresh, 2000);
});
"""

_STATIC: dict[str, tuple[str, str]] = {
    "/": ("text/html; charset=utf-8", _INDEX_HTML),
    "/index.html": ("text/html; charset=utf-8", _INDEX_HTML),
    "/app.js": ("text/javascript; charset=utf-8", _APP_JS),
    "/app.css": ("text/css; charset=utf-8", _APP_CSS),
}
