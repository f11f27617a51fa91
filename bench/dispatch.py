"""Dispatch: a 10,000-test suite through dtf (expansion, rendering, storing, publishing)
against raw Celery ``send_task`` of the same messages, on the same private redis-server.

dtf's side is the coordinator's own code path: the run's submit chunks (dtf.bus.submit_bodies)
go through its control handler, which stages each chunk in DuckDB and starts the run after
the last; then ``_dispatch`` marks the ready tests queued and publishes one
``dtf.run_test`` task each (the window is opened to N so that every test is published).
Two baselines publish the very same payloads: ``app.send_task`` with one shared producer,
the usual fastest plain Celery way, and the same inside kombu's ``Producer.batch`` (kombu
>= 5.7: the Redis transport pipelines up to 1,000 LPUSHes per round trip), which any Celery
user can call and which dtf's coordinator uses itself. Every repeat starts from an empty Redis and a
fresh DuckDB file, and checks that N messages arrived.

    python bench/dispatch.py            # N=10,000, 3 repeats
    python bench/dispatch.py --quick    # N=200, 1 repeat
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TEMPLATES, add_common_args, emit, ratio, redis_server, repeats_of, summary, trivial_suite, workdir  # noqa: E402

from dtf.app import make_app  # noqa: E402
from dtf.bus import RUN_TEST, KombuPort, MemoryMessage, submit_bodies, task_id_for, task_payload  # noqa: E402
from dtf.coordinator import Coordinator  # noqa: E402
from dtf.model import queue_for  # noqa: E402
from dtf.settings import Settings  # noqa: E402
from dtf.store import Store  # noqa: E402
from dtf.suite import expand_suite, load_suite  # noqa: E402
from dtf.templates import TemplateRegistry  # noqa: E402


class _Timed:
    """Wraps a bound method and adds up the time spent in it."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def _queue_length(app: Any, queue: str) -> int:
    with app.connection_for_write() as conn:
        return int(conn.default_channel.client.llen(queue))


def _flush(app: Any) -> None:
    with app.connection_for_write() as conn:
        conn.default_channel.client.flushdb()


def dtf_once(app: Any, suite_path: Path, db: Path, n: int) -> dict[str, float]:
    _flush(app)
    t0 = time.perf_counter()
    registry = TemplateRegistry([TEMPLATES])
    specs = expand_suite(load_suite(suite_path), resolve_template=registry.resolve)
    t1 = time.perf_counter()
    tests = [registry.render(spec) for spec in specs]
    t2 = time.perf_counter()
    with Store(db) as store, app.connection_for_write() as conn:
        coordinator = Coordinator(app, store, window=n, port=KombuPort(app, conn.Producer(serializer="json")))
        stage, finish = _Timed(store.stage_submit_chunk), _Timed(store.finish_submit)
        dispatch = _Timed(coordinator._dispatch)
        store.stage_submit_chunk, store.finish_submit = stage, finish  # type: ignore[method-assign]
        coordinator._dispatch = dispatch  # type: ignore[method-assign]
        t3 = time.perf_counter()
        run = {"run_id": f"dispatch-{time.monotonic_ns()}", "suite_name": "bench"}
        for body in submit_bodies(uuid.uuid4().hex, run, [t.to_dict() for t in tests]):
            coordinator.on_control(body, MemoryMessage())
        t4 = time.perf_counter()
    published = _queue_length(app, queue_for("cpu"))
    if published != n:
        raise RuntimeError(f"dtf published {published} of {n} tests")
    return {"expand_s": t1 - t0, "render_s": t2 - t1, "store_s": stage.seconds + finish.seconds, "dispatch_s": dispatch.seconds,
            "submit_s": t4 - t3, "total_s": t4 - t0}


def raw_once(app: Any, payloads: list[dict[str, Any]], *, batch: bool = False) -> float:
    _flush(app)
    queue = queue_for("cpu")
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer, (producer.batch(1000) if batch else contextlib.nullcontext()):
        for p in payloads:
            app.send_task(RUN_TEST, args=[p], queue=queue,
                          task_id=task_id_for(p["run_id"], p["test"]["spec"]["test_id"], 1), producer=producer)
    wall = time.perf_counter() - t0
    published = _queue_length(app, queue)
    if published != len(payloads):
        raise RuntimeError(f"raw send_task published {published} of {len(payloads)}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("-n", "--tests", type=int, default=None, help="tests in the suite (default 10,000; 200 with --quick)")
    args = parser.parse_args()
    n = args.tests or (200 if args.quick else 10_000)
    reps = repeats_of(args)
    with workdir("dtf-bench-dispatch-") as tmp, redis_server(tmp / "redis") as url:
        app = make_app(Settings.from_env({}, broker_url=url))
        suite = trivial_suite(tmp / "suite.yaml", n)
        registry = TemplateRegistry([TEMPLATES])
        rendered = [registry.render(s) for s in expand_suite(load_suite(suite), resolve_template=registry.resolve)]
        payloads = [task_payload("raw-run", 1, t) for t in rendered]
        runs_dtf, runs_raw, runs_batch = [], [], []
        for i in range(reps):  # interleaved, so drift in the machine hits all alike
            runs_dtf.append(dtf_once(app, suite, tmp / f"dispatch-{i}.duckdb", n))
            runs_raw.append(raw_once(app, payloads))
            runs_batch.append(raw_once(app, payloads, batch=True))
    phases = {k: summary([r[k] for r in runs_dtf]) for k in runs_dtf[0]}
    raw = summary(runs_raw)
    batched = summary(runs_batch)
    batch_rate = n / batched["median"]
    dtf_publish_rate = n / phases["dispatch_s"]["median"]
    dtf_total_rate = n / phases["total_s"]["median"]
    raw_rate = n / raw["median"]
    emit("dispatch", args, {
        "tests": n,
        "dtf": {"phases_s": phases, "publish_msgs_per_s": round(dtf_publish_rate), "end_to_end_tests_per_s": round(dtf_total_rate)},
        "celery_send_task": {"wall_s": raw, "msgs_per_s": round(raw_rate)},
        "celery_send_task_in_producer_batch": {"wall_s": batched, "msgs_per_s": round(batch_rate)},
        "ratios": {
            "dtf_publish_vs_raw_send_task": ratio(dtf_publish_rate, raw_rate),
            "dtf_publish_vs_producer_batch": ratio(dtf_publish_rate, batch_rate),
            "dtf_end_to_end_vs_raw_send_task": ratio(dtf_total_rate, raw_rate),
            "dtf_end_to_end_vs_producer_batch": ratio(dtf_total_rate, batch_rate),
        },
    }, notes=[
        "publish = Coordinator._dispatch: mark N tests queued in DuckDB, read their sources back, publish N tasks",
        "end_to_end = expand + render + store + dispatch, from the suite file to N messages in Redis",
        "raw = N x app.send_task with one shared producer and the same payloads; higher rates are better",
        "producer_batch = the same inside kombu's Producer.batch(1000): pipelined LPUSHes",
    ])


if __name__ == "__main__":
    main()
