"""`dtf dashboard`: its queries over a real DuckDB file, its HTTP server (read-only, auth
rule, Host check, JSON the browser can parse), and the real page in headless Chromium on a
real cluster: no console errors, a running run's progress updates live, the trend chart
renders (a screenshot that is not blank)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from dtf.dashboard import CachedSource, DashboardServer, DbSource, dashboard_auth
from dtf.errors import DtfError
from dtf.flower import WebAuth
from dtf.model import RenderedTest, TestResult, TestSpec
from dtf.store import Store

from .conftest import Processes, RedisServer, free_port, need_binary, wait_for_port
from .dtf_cluster import Cluster, Gates, gated_suite, wait_for
from .png import png_pixels


# -- the queries --------------------------------------------------------------------------------
def _spec(model: str, hardware: str, bs: int) -> TestSpec:
    return TestSpec(f"{model}/{hardware}/bs{bs}/fp32", model, "generic", hardware, bs, "fp32", "generic/x")


def _store_with_runs(path: Path) -> Store:
    store = Store(path)
    specs = [_spec("bert", "cpu", 1), _spec("bert", "cuda", 1), _spec("gpt2", "cpu", 1)]
    for i in range(3):
        run_id = f"run-{i}"
        store.insert_run({"run_id": run_id, "suite_name": "s", "submitted_at": 1000.0 + i},
                         [RenderedTest(s, "", "h") for s in specs])
        results = [TestResult(run_id, specs[0].test_id, 1, "passed",
                              metrics={"latency_p50_ms": 10.0 + i, "throughput_items_s": 100.0 - i}),
                   TestResult(run_id, specs[1].test_id, 1, "failed", error="wrong output\ntraceback...",
                              metrics={"latency_p50_ms": float("nan")})]
        updates = [{"run_id": run_id, "test_id": r.test_id, "status": r.status, "attempts": 1} for r in results]
        store.ingest_batch(results, updates)
    return store


def test_run_progress_counts_each_runs_tests_by_status(tmp_path: Path) -> None:
    with _store_with_runs(tmp_path / "r.duckdb") as store:
        runs = store.run_progress(2)
    assert [r["run_id"] for r in runs] == ["run-2", "run-1"]
    assert runs[0]["counts"] == {"passed": 1, "failed": 1, "pending": 1}


def test_the_matrix_has_one_cell_per_model_and_hardware_with_its_failures(tmp_path: Path) -> None:
    with _store_with_runs(tmp_path / "r.duckdb") as store:
        cells = {(c["model"], c["hardware"]): c for c in store.run_matrix("run-0")}
    assert set(cells) == {("bert", "cpu"), ("bert", "cuda"), ("gpt2", "cpu")}
    assert cells[("bert", "cpu")]["counts"] == {"passed": 1} and cells[("bert", "cpu")]["failures"] == []
    assert cells[("bert", "cuda")]["failures"] == [{"test_id": "bert/cuda/bs1/fp32", "status": "failed",
                                                    "reason": "wrong output"}]


def test_trends_follow_passed_tests_over_runs_oldest_first(tmp_path: Path) -> None:
    with _store_with_runs(tmp_path / "r.duckdb") as store:
        [series] = store.metric_trends(30)
        assert len(store.metric_trends(2)[0]["points"]) == 2
    assert (series["model"], series["hardware"], series["batch_size"], series["precision"]) == ("bert", "cpu", 1, "fp32")
    assert [p["latency_p50_ms"] for p in series["points"]] == [10.0, 11.0, 12.0]
    assert [p["throughput_items_s"] for p in series["points"]] == [100.0, 99.0, 98.0]


# -- the HTTP server ----------------------------------------------------------------------------
class FakeSource:
    """Pure data; counts calls so the cache can be checked."""

    def __init__(self) -> None:
        self.calls = 0

    def runs(self, limit: int) -> list[dict[str, Any]]:
        self.calls += 1
        return [{"run_id": "r1", "counts": {"passed": 1}, "score": float("nan")}]

    def matrix(self, run_id: str) -> list[dict[str, Any]]:
        if run_id == "missing":
            raise DtfError("unknown run 'missing'")
        return [{"model": "m", "hardware": "cpu", "counts": {"passed": 1}, "failures": []}]

    def trends(self, runs: int, suite_name: str | None) -> list[dict[str, Any]]:
        return []

    def workers(self) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def serve(request: pytest.FixtureRequest) -> Iterator[Any]:
    servers: list[DashboardServer] = []

    def start(auth: WebAuth = WebAuth(), source: Any = None) -> str:
        server = DashboardServer(source or FakeSource(), "127.0.0.1", 0, auth)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _http(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def test_the_api_serves_json_a_browser_can_parse(serve: Any) -> None:
    url = serve()
    status, body, headers = _http(url + "api/runs")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == [{"run_id": "r1", "counts": {"passed": 1}, "score": None}]  # NaN -> null
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    status, body, _ = _http(url + "api/run?run_id=missing")
    assert status == 503 and json.loads(body) == {"error": "unknown run 'missing'"}
    assert _http(url + "api/run")[0] == 503  # run_id is required
    assert _http(url + "nope")[0] == 404
    status, body, _ = _http(url)
    assert status == 200 and b'<script src="/app.js"' in body


def test_the_dashboard_is_read_only(serve: Any) -> None:
    url = serve()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert _http(url + "api/runs", method=method)[0] == 405
    assert _http(url + "api/runs", method="HEAD")[0] == 200


def test_open_on_loopback_it_serves_only_loopback_host_names(serve: Any) -> None:
    url = serve()
    assert _http(url + "api/runs", headers={"Host": "localhost:8765"})[0] == 200
    assert _http(url + "api/runs", headers={"Host": "attacker.example:8765"})[0] == 421  # DNS rebinding


def test_with_basic_auth_it_refuses_requests_without_the_credentials(serve: Any) -> None:
    url = serve(WebAuth(basic=("ops:pw",)))
    status, _, headers = _http(url + "api/runs")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    bad = "Basic " + base64.b64encode(b"ops:nope").decode()
    good = "Basic " + base64.b64encode(b"ops:pw").decode()
    assert _http(url + "api/runs", headers={"Authorization": bad})[0] == 401
    assert _http(url + "api/runs", headers={"Authorization": good, "Host": "dtf.example"})[0] == 200


def test_dashboard_credentials_fall_back_to_flowers() -> None:
    assert dashboard_auth({"DTF_DASHBOARD_BASIC_AUTH": "a:1", "DTF_FLOWER_BASIC_AUTH": "b:2"}).basic == ("a:1",)
    assert dashboard_auth({"DTF_FLOWER_BASIC_AUTH": "b:2"}).basic == ("b:2",)
    assert not dashboard_auth({}).enabled


def test_repeated_questions_within_the_ttl_are_answered_from_memory() -> None:
    source = FakeSource()
    cached = CachedSource(source, ttl_s=3600)
    assert cached.runs(20) == cached.runs(20)
    assert source.calls == 1


def test_a_db_source_reads_the_file_and_lets_go_of_it(tmp_path: Path) -> None:
    _store_with_runs(tmp_path / "r.duckdb").close()
    source = DbSource(str(tmp_path / "r.duckdb"))
    assert len(source.runs(10)) == 3 and len(source.matrix("run-1")) == 3
    Store(tmp_path / "r.duckdb").close()  # a coordinator could open it read-write now


# -- headless Chromium on a real cluster --------------------------------------------------------
class DevTools:
    """A tiny Chrome DevTools Protocol client over tornado's websocket (tornado comes with Flower)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str) -> "DevTools":
        from tornado.websocket import websocket_connect

        return cls(await websocket_connect(url, max_message_size=64 << 20))

    async def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.write_message(json.dumps(message))
        while True:
            raw = await asyncio.wait_for(self.ws.read_message(), 30)
            if raw is None:
                raise ConnectionError("DevTools connection closed")
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result") or {})
            self.events.append(reply)

    async def evaluate(self, session: str, expression: str) -> Any:
        reply = await self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return reply.get("result", {}).get("value")

    def errors(self) -> list[str]:
        found = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(p.get("exceptionDetails", {}))[:400])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append(json.dumps(p.get("args", []))[:400])
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                found.append(p["entry"].get("text", "")[:400])
        return found


def _chromium(profile: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = need_binary("chromium")
    proc = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,1400", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    active = profile / "DevToolsActivePort"
    wait_for(lambda: active.exists() and len(active.read_text().split()) >= 2, "Chromium's DevTools port", 60)
    port, path = active.read_text().split()[:2]
    return proc, f"ws://127.0.0.1:{port}{path}"


def _ink(png: bytes) -> float:
    """The share of pixels that are not the background (the top-left pixel's colour)."""
    width, height, rows = png_pixels(png)
    bpp = len(rows[0]) // width
    background = rows[0][:3]
    inked = sum(1 for row in rows for x in range(0, len(row), bpp) if row[x:x + 3] != background)
    return inked / (width * height)


async def _browse(ws_url: str, page: str, run_id: str, finish: Any, shots: Path) -> dict[str, Any]:
    tools = await DevTools.connect(ws_url)
    target = (await tools.send("Target.createTarget", url="about:blank"))["targetId"]
    session = (await tools.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
    for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
        await tools.send(domain, session)
    await tools.send("Page.navigate", session, url=f"{page}#{run_id}")
    progress = f"document.querySelector('[data-run-id=\"{run_id}\"] .progress-text')?.textContent"

    async def until(expression: str, what: str) -> Any:
        for _ in range(600):
            value = await tools.evaluate(session, expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"the page never showed {what}")

    before = await until(progress, "the running run")
    shot = await tools.send("Page.captureScreenshot", session, format="png")
    (shots / "dashboard-running.png").write_bytes(base64.b64decode(shot["data"]))
    finish()  # the running test may end now
    after = await until(f"({progress}) !== {json.dumps(before)} && ({progress})", "the progress change")
    await until("document.querySelectorAll('#chart-latency circle').length >= 2", "the trend points")
    box = await tools.evaluate(session, "JSON.stringify(document.getElementById('chart-latency').getBoundingClientRect())")
    rect = json.loads(box)
    clip = {"x": rect["x"], "y": rect["y"], "width": rect["width"], "height": rect["height"], "scale": 1}
    chart = base64.b64decode((await tools.send("Page.captureScreenshot", session, format="png", clip=clip))["data"])
    (shots / "dashboard-trend-chart.png").write_bytes(chart)
    full = await tools.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
    (shots / "dashboard-full.png").write_bytes(base64.b64decode(full["data"]))
    state = {
        "before": before, "after": after, "chart": chart, "errors": tools.errors(),
        "matrix": await tools.evaluate(session, "document.querySelector('#matrix tbody').innerText"),
        "series": await tools.evaluate(session, "document.getElementById('series').selectedOptions[0]?.textContent"),
        "path": await tools.evaluate(session, "document.querySelector('#chart-latency path.line')?.getAttribute('d')"),
        "error_banner": await tools.evaluate(session, "document.getElementById('error').hidden"),
    }
    tools.ws.close()
    return state


@pytest.mark.slow
@pytest.mark.redis
def test_the_page_shows_live_progress_and_a_trend_chart_without_console_errors(
    tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    need_binary("chromium")
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.start_coordinator()
    cluster.start_worker("dash@test", "--concurrency", "1")
    gates = Gates(tmp_path / "gates")
    for i in range(2):  # two finished runs of the same test: a trend with two points
        gates_i = Gates(tmp_path / f"done{i}")
        gates_i.open("gated/cpu/bs2/fp32")
        cluster.submit(gated_suite(tmp_path / f"done{i}.yaml", "trend", gates_i, [2], latency_ms=12.5 - 4 * i), wait=True)
    run_id = cluster.submit(gated_suite(tmp_path / "live.yaml", "live", gates, [1, 4]))
    live = ["gated/cpu/bs1/fp32", "gated/cpu/bs4/fp32"]
    running = wait_for(lambda: next((t for t in live if gates.started(t)), None), "a test of the live run to start")
    port = free_port()
    processes.start("dashboard", ["dashboard", "--port", str(port)], cluster.env, tmp_path)
    wait_for_port(port, 30)
    shots = Path(os.environ.get("DTF_TEST_ARTIFACTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="dtf-chromium-"))
    browser, ws_url = _chromium(profile)
    try:
        state = asyncio.run(_browse(ws_url, f"http://127.0.0.1:{port}/", run_id, lambda: gates.open(running), shots))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- dashboard\n{processes.log('dashboard')[-3000:]}"
                             f"\n--- worker\n{processes.log('dash@test')[-3000:]}") from None
    finally:
        browser.terminate()
        browser.wait(30)
        shutil.rmtree(profile, ignore_errors=True)
        for test_id in live:
            gates.open(test_id)
    assert state["errors"] == [], state["errors"]
    assert state["error_banner"] is True
    assert state["before"] == "0/2" and state["after"] == "1/2"
    assert state["matrix"].startswith("gated") and "/2" in state["matrix"]
    assert state["series"].startswith("gated · cpu · bs2 · fp32")
    assert state["path"] and state["path"].count("L") == 1  # two points, the newer one lower (faster)
    start, end = (float(p.split(",")[1]) for p in state["path"].replace("M", "").split(" L"))
    assert end > start  # SVG y grows downwards
    assert _ink(state["chart"]) > 0.02  # axes, grid, line and dots: not a blank image
