"""Runs: ``dtf run`` (embedded), ``submit``, ``status``, ``results``, ``report``, ``runs``.

Suites are prepared by dtf.submission; the exit code and its explanation come from
dtf.outcome; this module parses options, prints, and exits.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .. import __version__
from ..errors import DtfError
from ..model import RunStatus
from ..outcome import cancelled_outcome, run_outcome, results_code, status_outcome
from ..settings import EMBEDDED_BROKER, redact_db
from ..submission import (baseline_choice, check_baseline, collect, prepare_suite, run_meta, specs_of, unserved,
                          unserved_routes)
from . import common, progress
from .common import (BaselineOpt, BrokerOpt, DataPathOpt, DbOpt, FailOnRegressionOpt, FormatOpt, OutputDirOpt, ReadDbOpt, TemplatesOpt,
                     conclude, errors_to_exit, fmt_value, info, open_store, table_or_json)

_STATUS_STYLE = {"passed": "green", "flaky": "green", "cached": "green", "failed": "red", "error": "red",
                 "timeout": "magenta", "quarantined": "yellow", "skipped": "yellow"}
_REPORT_FORMATS = ("json", "md", "html", "junit")


# -- printing results and reports ----------------------------------------------------------------
def print_results(data: dict[str, Any]) -> None:
    from ..report.parity import parity_label, source_label

    table = Table(title=f"run {data['run']['run_id']} ({data['run']['suite_name']})")
    for col in ("test", "source", "status", "parity", "time s", "peak MB", "p50 ms", "items/s", "reason"):
        table.add_column(col, overflow="fold")
    for row in data["tests"]:
        m = row.get("metrics") or {}
        style = _STATUS_STYLE.get(row["status"], "")
        parity = parity_label(row)
        table.add_row(
            row["test_id"], source_label(row), f"[{style}]{row['status']}[/{style}]" if style else row["status"],
            f"[red]{parity}[/red]" if parity.startswith("FAIL") else parity,
            fmt_value(row.get("duration_s")), fmt_value(row.get("peak_memory_mb"), 1), fmt_value(m.get("latency_p50_ms")),
            fmt_value(m.get("throughput_items_s"), 1), (row.get("reason") or "")[:120],
        )
    common.out.print(table)
    totals: dict[str, int] = {}
    for row in data["tests"]:
        totals[row["status"]] = totals.get(row["status"], 0) + 1
    common.out.print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    saved = [float((row.get("metrics") or {}).get("saved_s") or 0.0) for row in data["tests"] if row["status"] == "cached"]
    if saved:
        common.out.print(f"reused {len(saved)} cached result(s): {sum(saved):.1f} s of test time saved")


def emit(data: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        from ..report.parity import lift

        # source, provenance and parity at each result's top level (dtf.report.parity.lift).
        data = {**data, "tests": [lift(row) for row in data["tests"]]}
        # Plain, not rich's print_json: highlighting a large run's JSON took seconds.
        sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
        sys.stdout.flush()
    else:
        print_results(data)


def build_report(report_data: dict[str, Any]) -> dict[str, Any]:
    from ..report import build_report as build

    return build(report_data["run"], report_data["tests"], baseline=report_data.get("baseline"), dtf_version=__version__)


def write_reports(doc: dict[str, Any], output_dir: Path, fail_on_regression: bool) -> None:
    from ..report import write_reports as write

    try:
        written = write(doc, output_dir, regressions_fail=fail_on_regression)
    except OSError as exc:
        raise DtfError(f"--output-dir {output_dir}: cannot write reports: {exc.strerror or exc}") from None
    info("reports: " + ", ".join(str(p) for p in written.values()))


def finish(data: dict[str, Any], report_data: Optional[dict[str, Any]], status_now: dict[str, Any],
           timeout_s: Optional[float], output_dir: Optional[Path], fail_on_regression: bool) -> None:
    """Write the reports, then say what happened and exit with dtf.outcome's verdict."""
    doc = build_report(report_data) if report_data is not None else None
    if doc is not None and output_dir is not None:
        write_reports(doc, output_dir, fail_on_regression)
    if data["run"].get("status") == RunStatus.CANCELLED.value:
        conclude(cancelled_outcome(data["run"]["run_id"], data["tests"]))
    conclude(run_outcome(data["run"]["run_id"], data["tests"], finished=status_now["finished"], timeout_s=timeout_s,
                         report=doc, fail_on_regression=fail_on_regression))


ReuseOpt = Annotated[Optional[str], typer.Option(
    "--reuse", metavar="[=MAX_AGE]",
    help="Reuse a passing result of an earlier run for every test whose cache key (source, parameters, model revision, "
         "hardware, stack) is unchanged: --reuse (any age) or --reuse=7d.")]
OrderOpt = Annotated[str, typer.Option("--order", help="Dispatch order within a priority: lpt (longest predicted first), priority, fifo.")]


def history_meta(meta: dict[str, Any], reuse: Optional[str], order: str) -> dict[str, Any]:
    """The run info the coordinator reads at start (dtf/coordinator/history.py): reuse and ordering."""
    from ..cache import parse_max_age
    from ..schedule import ORDERINGS

    if order not in ORDERINGS:
        raise DtfError(f"--order: expected one of {', '.join(ORDERINGS)}, got {order!r}")
    meta["info"]["ordering"] = order
    if reuse is not None:
        try:
            meta["info"]["reuse"] = parse_max_age(reuse)  # None: any age
        except ValueError as exc:
            raise DtfError(str(exc)) from None
    return meta


# -- commands --------------------------------------------------------------------------------
@errors_to_exit
def run(
    suite: Annotated[Path, typer.Argument(help="Suite YAML file.")],
    db: DbOpt = None,
    data_path: DataPathOpt = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Tests run at the same time.")] = 2,
    templates: TemplatesOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    timeout: Annotated[Optional[float], typer.Option(help="Give up after this many seconds (exit 2).")] = None,
    output_dir: OutputDirOpt = None,
    baseline: BaselineOpt = None,
    fail_on_regression: FailOnRegressionOpt = False,
    reuse: ReuseOpt = None,
    order: OrderOpt = "lpt",
) -> None:
    """Run a suite here, embedded: in-process broker, coordinator and worker, local DuckDB.

    Example: dtf run examples/smoke.yaml --db results.duckdb --output-dir reports --baseline latest
    """
    table_or_json(fmt)
    from ..app import make_app
    from ..client import CoordinatorClient
    from ..embedded import EmbeddedCluster
    from ..hardware import detect, select_queues

    if workers < 1:
        raise DtfError(f"--workers: expected at least 1, got {workers}")
    baseline = baseline_choice(baseline, fail_on_regression)
    settings = common.settings(broker_url=EMBEDDED_BROKER, db_path=db, data_path=data_path)
    settings = settings.with_overrides(broker_url=EMBEDDED_BROKER, sentinels=())
    parsed, tests = prepare_suite(suite, common.template_registry(settings, templates))
    for _ in tests:  # every test renders (bad input is an error now, before the cluster starts); none is kept
        pass
    profile = detect()
    queues = select_queues(profile)
    celery_app = make_app(settings)
    started = time.perf_counter()
    with EmbeddedCluster(celery_app, queues=queues, workers=workers, profile=profile) as cluster:
        client = CoordinatorClient(celery_app)
        check_baseline(client, baseline)
        meta = history_meta(run_meta(parsed), reuse, order)
        local = {"worker_id": "this machine", "queues": queues, "hardware": profile.to_dict(), "state": "online"}
        lacking = unserved_routes([local], tests)
        if lacking:  # nobody else will come: what this machine lacks is skipped, with the reason
            meta["info"]["skip_routes"] = sorted(lacking)
            for queue, entry in sorted(lacking.items()):
                common.err.print(f"warning: this machine does not offer {entry['label']} on {entry['hardware']}: "
                                 f"its {entry['tests']} tests are skipped", markup=False)
        run_id = client.submit(meta, tests)
        info(f"run {run_id}: {len(tests)} tests, {workers} workers, queues {', '.join(queues)}, db {settings.safe_db}")
        status_now = progress.follow(client, run_id, timeout)
        data, report_data = collect(client, run_id, baseline, output_dir is not None)
        if cluster.error is not None:
            raise DtfError(f"embedded coordinator failed: {cluster.error}")
    emit(data, fmt)
    info(f"wall time {time.perf_counter() - started:.1f} s; results in {settings.safe_db} (run {run_id})")
    finish(data, report_data, status_now, timeout, output_dir, fail_on_regression)


@errors_to_exit
def submit(
    suite: Annotated[Path, typer.Argument(help="Suite YAML file.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish; exit 1 on failures.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="With --wait: give up after S seconds (exit 2).")] = None,
    broker: BrokerOpt = None,
    templates: TemplatesOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json (with --wait)")] = "table",
    output_dir: OutputDirOpt = None,
    baseline: BaselineOpt = None,
    fail_on_regression: FailOnRegressionOpt = False,
    wait_unserved: Annotated[bool, typer.Option("--wait-unserved", help="With --wait: also wait for hardware no live worker serves (default: its tests are skipped, and named).")] = False,
    skip_unserved: Annotated[bool, typer.Option("--skip-unserved", help="Skip tests whose requirement set (requires:) or hardware no live worker offers, with that reason, instead of waiting.")] = False,
    reuse: ReuseOpt = None,
    order: OrderOpt = "lpt",
) -> None:
    """Submit a suite to the coordinator through the broker; --wait watches it to the end.

    With --wait, tests for hardware that no live worker serves (say cuda on a CPU-only
    cluster) are skipped with the reason, so the run finishes; --wait-unserved waits for
    a worker instead. Requirement sets (requires: in the suite) that no live worker
    offers are named, with what each worker lacks, and waited for (workers may still be
    starting); --skip-unserved skips them (and unserved hardware) with that reason.

    With --wait it writes the reports (--output-dir) and exits 0 when all passed, 1 on
    failures (or regressions with --fail-on-regression), 2 on bad input, an
    infrastructure failure or a timeout (naming the tests that never ran).

    Example: DTF_BROKER_URL=redis://127.0.0.1:6379/0 dtf submit examples/smoke.yaml --wait --output-dir reports --baseline latest
    """
    table_or_json(fmt)
    from ..client import CoordinatorClient

    if not wait and (output_dir or baseline or fail_on_regression or timeout is not None):
        raise DtfError("--timeout, --output-dir, --baseline and --fail-on-regression need --wait")
    baseline = baseline_choice(baseline, fail_on_regression)
    settings = common.broker_settings(broker, hint=" (or use `dtf run` for the embedded mode)")
    parsed, tests = prepare_suite(suite, common.template_registry(settings, templates))
    client = CoordinatorClient.for_settings(settings)
    check_baseline(client, baseline)
    meta = history_meta(run_meta(parsed), reuse, order)
    client.check_payloads(meta, tests)  # an oversized test is refused before any broker call
    if wait_unserved and skip_unserved:
        raise DtfError("--wait-unserved and --skip-unserved contradict each other; give one")
    kinds_unserved = unserved(client, tests)
    _report_unserved_routes(client, tests, meta, skip_unserved)
    if kinds_unserved:
        count = sum(1 for s in specs_of(tests) if s.hardware in kinds_unserved)
        kinds = ", ".join(kinds_unserved)
        if (wait and not wait_unserved) or skip_unserved:
            meta["info"]["skip_hardware"] = kinds_unserved
            common.err.print(f"warning: no live worker serves {kinds}: its {count} tests are skipped (--wait-unserved waits for one)")
        else:
            common.err.print(f"warning: no live worker serves {kinds}: its {count} tests wait until one starts")
    run_id = client.submit(meta, tests)
    common.out.print(run_id)
    if not wait:
        return
    try:
        status_now = progress.follow(client, run_id, timeout)
    except KeyboardInterrupt:
        common.err.print(f"stopped watching; the run goes on. Resume with: dtf status {run_id} --wait")
        raise typer.Exit(130) from None
    data, report_data = collect(client, run_id, baseline, output_dir is not None)
    emit(data, fmt)
    finish(data, report_data, status_now, timeout, output_dir, fail_on_regression)


def _report_unserved_routes(client: Any, tests: Any, meta: dict[str, Any], skip: bool) -> None:
    """Name the requirement sets no live worker offers (and what each live worker lacks);
    with ``skip`` the coordinator skips their tests with that reason."""
    if not any(t.spec.requires for t in tests):
        return
    workers = client.call("workers")
    if not any(w.get("state") != "offline" for w in workers):
        return  # no live worker at all (a cluster starting up): nothing to judge by
    lacking = unserved_routes(workers, tests)
    for queue, entry in sorted(lacking.items()):
        what = "are skipped (--skip-unserved)" if skip else "wait until one starts (--skip-unserved skips them)"
        common.err.print(f"warning: no live worker offers {entry['label']} on {entry['hardware']} ({queue}): "
                         f"its {entry['tests']} tests {what}", markup=False)
        for worker_id, missing in list(entry["lacking"].items())[:5]:
            common.err.print(f"  {worker_id} lacks {'; '.join(missing)}", markup=False)
    if skip and lacking:
        meta["info"]["skip_routes"] = sorted(lacking)


@errors_to_exit
def cancel(
    run_id: Annotated[str, typer.Argument(help="Run id printed by submit.")],
    broker: BrokerOpt = None,
) -> None:
    """Cancel a run: queued tests are dropped, running ones stopped (their process groups
    killed), and the run ends `cancelled` keeping the results that had finished.

    The tests that did not finish are recorded skipped with the reason "cancelled". Exit 0:
    the run is cancelled (or had already ended: said on stderr); 2: unknown run, no
    broker or no coordinator answered.

    Example: dtf cancel smoke-20261129-180000-abc123
    """
    client = common.coordinator_client(broker)
    data = client.call("cancel", run_id=run_id)
    if data.get("already_over"):
        common.err.print(f"run {run_id} had already ended ({data['status']}); nothing to cancel", markup=False)
        return
    common.out.print(f"run {run_id} cancelled: {data['kept']} tests had finished and are kept, "
                     f"{data['dropped']} queued dropped, {data['stopped']} running stopped", markup=False)


@errors_to_exit
def status(
    run_id: Annotated[str, typer.Argument(help="Run id printed by submit.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run finishes.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="With --wait: give up after S seconds (exit 2).")] = None,
    broker: BrokerOpt = None,
) -> None:
    """Show a run's progress per hardware; with --wait, watch it until it finishes.

    Example: dtf status smoke-20261129-180000-abc123 --wait
    """
    client = common.coordinator_client(broker)
    st = progress.follow(client, run_id, timeout) if wait else client.call("status", run_id=run_id)
    common.out.print(progress.progress_line(st), markup=False)
    common.out.print(f"state: {st['run']['status']}")
    tests = client.call("results", run_id=run_id)["tests"] if wait and not st["finished"] else ()
    conclude(status_outcome(st["run"], finished=st["finished"], waited=wait, timeout_s=timeout, tests=tests))


@errors_to_exit
def results(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    broker: BrokerOpt = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Read this DuckDB file directly instead of asking the coordinator.")] = None,
) -> None:
    """Show one row per test of a run, from the coordinator or straight from a DuckDB file.

    Example: dtf results RUN_ID --format json
    """
    table_or_json(fmt)
    if db:
        with open_store(db) as store:
            run_row = store.run(run_id)
            if run_row is None:
                raise DtfError(f"unknown run {run_id!r} in {redact_db(db)}")
            data = {"run": run_row, "tests": store.final_results(run_id)}
    else:
        data = common.coordinator_client(broker, db_too=True).call("results", run_id=run_id)
    emit(data, fmt)
    raise typer.Exit(results_code(data["tests"]))


@errors_to_exit
def report(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    fmt: Annotated[str, typer.Option("--format", help="json, md, html or junit.")] = "md",
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Write the report to this file instead of stdout.")] = None,
    output_dir: OutputDirOpt = None,
    baseline: BaselineOpt = None,
    fail_on_regression: FailOnRegressionOpt = False,
    broker: BrokerOpt = None,
    db: ReadDbOpt = None,
) -> None:
    """Render a run's report as JSON, Markdown, HTML with charts or JUnit XML.

    JSON has everything; Markdown suits CI summaries; the HTML is one self-contained
    file; --output-dir writes all four. Exits with the run's verdict: 0 passed, 1
    failures (or regressions with --fail-on-regression), 2 unfinished.

    Example: dtf report RUN_ID --format html --out report.html --baseline latest
    """
    from ..outcome import report_code
    from ..report import render

    if fmt not in _REPORT_FORMATS:
        raise DtfError(f"--format: unknown report format {fmt!r} (expected one of {', '.join(_REPORT_FORMATS)})")
    baseline = baseline_choice(baseline, fail_on_regression)
    if db:
        with open_store(db) as store:
            report_data = store.report_data(run_id, baseline=baseline)
    else:
        client = common.coordinator_client(broker, db_too=True)
        report_data = client.call("report", run_id=run_id, baseline=baseline, timeout_s=120)
    doc = build_report(report_data)
    if output_dir is not None:
        write_reports(doc, output_dir, fail_on_regression)
    if out_path is not None:
        try:
            out_path.write_text(render(doc, fmt, regressions_fail=fail_on_regression), encoding="utf-8")
        except OSError as exc:
            raise DtfError(f"--out {out_path}: {exc.strerror or exc}") from None
    elif output_dir is None:
        sys.stdout.write(render(doc, fmt, regressions_fail=fail_on_regression))
    raise typer.Exit(report_code(doc, fail_on_regression=fail_on_regression))


@errors_to_exit
def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.")] = 20,
    fmt: FormatOpt = "table",
    broker: BrokerOpt = None,
    db: ReadDbOpt = None,
) -> None:
    """List recent runs, newest first: the ids to pass to report, status or --baseline.

    Example: dtf runs --limit 5
    """
    table_or_json(fmt)
    if db:
        with open_store(db) as store:
            rows = store.runs(limit)
    else:
        rows = common.coordinator_client(broker, db_too=True).call("runs", limit=limit)
    if fmt == "json":
        common.out.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="runs")
    for col in ("run", "suite", "status", "tests", "submitted", "commit", "branch"):
        table.add_column(col, overflow="fold")
    for r in rows:
        when = datetime.fromtimestamp(r["submitted_at"]).strftime("%Y-%m-%d %H:%M:%S") if r.get("submitted_at") else "-"
        table.add_row(r["run_id"], r.get("suite_name") or "", r.get("status") or "", str(r.get("total") or ""),
                      when, (r.get("git_sha") or "")[:10], r.get("branch") or "")
    common.out.print(table)
