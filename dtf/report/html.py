"""A single-file HTML report: inline CSS, inline SVG charts and a few lines of inline
script (sortable tables), nothing fetched from anywhere; a Content-Security-Policy that
forbids every load makes sure of it.

Sections: verdict and totals, the pass/fail matrix (each model with its source; built-in
workloads say "synthetic"), the parity of real models against cpu/fp32, latency and
throughput against batch size per model and hardware (p10-p90 bars, the baseline dashed),
the distribution of test durations, the comparison with the baseline (with a changed stack
named next to a slowdown), the stacks results ran on, failures, and every test.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, Mapping, Sequence

from ..regression import quantile
from .document import FAILING_STATUSES, FINAL_STATUSES, UNFINISHED_STATUSES, comparisons_of
from .parity import STACK_COLUMNS, parity_label, sci
from .svg import PALETTE, Point, Series, change_bars, fmt_number, histogram, line_chart

__all__ = ["render_html", "CSP"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
STATUS_COLOR = {"passed": "#2e7d32", "flaky": "#8bc34a", "cached": "#43a047", "failed": "#c62828", "error": "#ad1457",
                "timeout": "#6a1b9a", "quarantined": "#ff8f00", "skipped": "#9e9e9e", "unfinished": "#f9a825"}
VERDICT_COLOR = {"regression": "#c62828", "improvement": "#2e7d32", "noisy": "#9e9e9e", "unchanged": "#90a4ae"}
MAX_CHANGE_ROWS = 80

_CSS = """
:root{color-scheme:light}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#111827;background:#f9fafb}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.banner{padding:14px 18px;border-radius:8px;color:#fff;margin-bottom:16px}
.meta{color:#e5e7eb;font-size:13px}.meta a{color:#fff}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:90px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;background:#fff;font-size:13px}th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;cursor:default}table.sortable th{cursor:pointer}td.num{text-align:right;font-variant-numeric:tabular-nums}
.matrix td{text-align:center;font-weight:600;color:#fff}.matrix td.model{text-align:left;color:#111827;font-weight:400;background:#fff}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chartcard{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px}
.chartcard h3{font-size:13px;margin:0 0 4px}
pre{background:#111827;color:#e5e7eb;padding:8px;border-radius:6px;overflow:auto;max-height:280px;font-size:12px}
code{font-size:12px}.muted{color:#6b7280}
.source{font-size:11px;padding:0 6px;border-radius:8px;background:#e0e7ff;color:#3730a3;margin-left:4px}
.source.synthetic{background:#f3f4f6;color:#6b7280}
.parity td.verdict{font-weight:600}.parity td.pass{color:#2e7d32}.parity td.fail{color:#c62828}
.parity td.ref,.parity td.na{color:#6b7280}
"""

_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute("data-order") !== "asc";
      th.setAttribute("data-order", asc ? "asc" : "desc");
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v") || a.cells[col].textContent;
        var y = b.cells[col].getAttribute("data-v") || b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _num_cell(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return '<td class="num" data-v="">–</td>'
    return f'<td class="num" data-v="{value!r}">{_e(fmt_number(value))}</td>'


def _banner(report: Mapping[str, Any]) -> str:
    run = report["run"]
    outcome = report["outcome"]
    color = {"passed": "#2e7d32", "failed": "#c62828", "incomplete": "#b26a00", "skipped": "#616161"}.get(outcome, "#374151")
    regressed = f" · {report['regressions']} performance regression(s)" if report.get("regressions") else ""
    bits = [f"run <code>{_e(run['run_id'])}</code>"]
    if run.get("git_sha"):
        bits.append(f"commit <code>{_e(str(run['git_sha'])[:12])}</code>" + (f" on <code>{_e(run['branch'])}</code>" if run.get("branch") else ""))
    if run.get("ci_url"):
        bits.append(f'<a href="{_e(run["ci_url"])}" rel="noreferrer">CI job</a>')
    bits.append(f"submitted {_e(run.get('submitted_at'))}")
    if run.get("wall_time_s") is not None:
        bits.append(f"wall time {run['wall_time_s']:.1f} s")
    return (f'<div class="banner" style="background:{color}"><h1>dtf: {_e(outcome)}{_e(regressed)} — {_e(run["suite_name"])}</h1>'
            f'<div class="meta">{" · ".join(bits)}</div></div>')


def _cards(report: Mapping[str, Any]) -> str:
    totals = report["totals"]
    cards = [("tests", totals["tests"], "#111827")]
    cards += [(s, totals[s], STATUS_COLOR[s]) for s in FINAL_STATUSES if totals.get(s)]
    if totals.get("unfinished"):
        cards.append(("never finished", totals["unfinished"], STATUS_COLOR["unfinished"]))
    if report.get("comparison"):
        cards.append(("regressions", report["regressions"], VERDICT_COLOR["regression"] if report["regressions"] else "#111827"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><b style="color:{c}">{n}</b>{_e(label)}</div>' for label, n, c in cards) + "</div>"


def _matrix(report: Mapping[str, Any]) -> str:
    matrix = report["matrix"]
    cells = {(c["model"], c["hardware"]): c for c in matrix["cells"]}
    head = "".join(f"<th>{_e(hw)}</th>" for hw in matrix["hardware"])
    rows = []
    for model in matrix["models"]:
        tds = []
        for hw in matrix["hardware"]:
            cell = cells.get((model, hw))
            if cell is None:
                tds.append('<td style="background:#f3f4f6;color:#9ca3af">–</td>')
                continue
            bad = sum(cell[s] for s in FAILING_STATUSES)
            key = "unfinished" if cell["outcome"] == "incomplete" else ("failed" if bad else cell["outcome"])
            text = {"unfinished": f"{cell['unfinished']} of {cell['tests']} unfinished",
                    "failed": f"{bad} of {cell['tests']} failed",
                    "skipped": f"{cell['skipped']} skipped"}.get(key, f"{cell['passed']}/{cell['tests']} passed")
            tip = ", ".join(f"{n} {s}" for s, n in cell.items() if s in STATUS_COLOR and isinstance(n, int) and n)
            tds.append(f'<td style="background:{STATUS_COLOR.get(key, "#616161")}" title="{_e(tip)}">{_e(text)}</td>')
        tags = "".join(_source_tag(src) for src in (matrix.get("sources") or {}).get(model) or [])
        rows.append(f'<tr><td class="model"><code>{_e(model)}</code>{tags}</td>{"".join(tds)}</tr>')
    return f'<table class="matrix"><thead><tr><th>model</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _source_tag(source: Any) -> str:
    source = source or "synthetic"
    if source == "synthetic":
        return '<span class="source synthetic" title="a built-in synthetic workload, not the real model">synthetic</span>'
    return f'<span class="source" title="real model from {_e(source)}">{_e(source)}</span>'



_VERDICT_CLASS = {"pass": "pass", "fail": "fail", "reference": "ref", "n/a": "na", "off": "na"}


def _parity(report: Mapping[str, Any]) -> str:
    groups = report.get("parity") or []
    if not groups:
        return '<p class="muted">No real-model results: synthetic workloads record no outputs to compare.</p>'
    parts = ['<p>Each backend and precision against the cpu/fp32 result of the same model and batch size in this run, '
             "from the output fingerprints the tests recorded. Tolerance = atol + rtol &times; RMS of the reference, "
             "per precision (<code>dtf.parity.TOLERANCES</code>).</p>"]
    for group in groups:
        ref = (f"reference <code>{_e(group['reference_test_id'])}</code>" if group.get("reference_test_id")
               else f"no {_e(group['reference'])} result in this run")
        rows = []
        for c in group["cells"]:
            verdict = {"fail": "FAIL"}.get(c["verdict"], c["verdict"])
            if c.get("basis") == "test" and c["verdict"] in ("pass", "fail"):
                verdict += " (test's own check)"
            rows.append(
                f'<tr><td><code>{_e(c["candidate"])}</code></td><td>{_e(c["status"])}</td>'
                f'<td class="num">{sci(c.get("max_abs"))}</td><td class="num">{sci(c.get("max_rel"))}</td>'
                f'<td class="num">{sci(c.get("tolerance"))}</td><td>{_e(c.get("output") or "")}</td>'
                f'<td class="verdict {_VERDICT_CLASS.get(c["verdict"], "na")}" title="{_e(c.get("message"))}">{_e(verdict)}</td>'
                f'<td class="muted">{_e(c.get("message") if c["verdict"] in ("fail", "n/a") else "")}</td></tr>')
        parts.append(
            f"<h3><code>{_e(group['model'])}</code>{_source_tag(group['source'])} batch {_e(group['batch_size'])}: {ref}</h3>"
            '<table class="parity"><thead><tr><th>backend/precision</th><th>status</th><th>max abs</th><th>max rel</th>'
            f'<th>tolerance</th><th>output</th><th>verdict</th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return "".join(parts)


def _stacks(report: Mapping[str, Any]) -> str:
    stacks = report.get("stacks") or []
    synthetic = (report.get("sources") or {}).get("synthetic", 0)
    note = (f'<p class="muted">{synthetic} synthetic test(s) (built-in workloads) record no stack.</p>'
            if synthetic else "")
    if not stacks:
        return '<p class="muted">No result recorded its stack.</p>' + note
    columns = [(k, h) for k, h in STACK_COLUMNS if any(s["stack"].get(k) is not None for s in stacks)]
    head = "".join(f"<th>{_e(h)}</th>" for _, h in columns)
    rows = "".join(
        f'<tr><td>{_e(s["hardware"])}</td><td class="num">{s["tests"]}</td><td>{_e(", ".join(s["hosts"]))}</td>'
        + "".join(f"<td>{_e('–' if s['stack'].get(k) is None else s['stack'][k])}</td>" for k, _ in columns) + "</tr>"
        for s in stacks)
    return (f'<table class="sortable"><thead><tr><th>hardware</th><th>tests</th><th>hosts</th>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table>{note}")


def _metric(test: Mapping[str, Any], name: str) -> float | None:
    value = (test.get("metrics") or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _perf_series(tests: Sequence[Mapping[str, Any]], batches: list[int], baseline: Mapping[str, Mapping[str, Any]]) -> tuple[list[Series], list[Series]]:
    latency, throughput = [], []
    precisions = list(dict.fromkeys(t["precision"] for t in tests))
    for i, precision in enumerate(precisions):
        color = PALETTE[i % len(PALETTE)]
        mine = [t for t in tests if t["precision"] == precision and t["status"] == "passed"]
        lat, thr, base_lat, base_thr = [], [], [], []
        for t in mine:
            x = batches.index(t["batch_size"])
            p50 = _metric(t, "latency_p50_ms")
            lats = [float(v) for v in (t.get("metrics") or {}).get("latencies_ms") or [] if isinstance(v, (int, float))]
            q1, q3 = (quantile(lats, 0.25), quantile(lats, 0.75)) if lats else (None, None)
            if p50 is not None:
                lat.append(Point(x, p50, q1, q3, f"{t['test_id']}: p50 {fmt_number(p50)} ms"
                                 + (f" (p25 {fmt_number(q1)}, p75 {fmt_number(q3)})" if q1 is not None and q3 is not None else "")))
            items = _metric(t, "throughput_items_s")
            if items is not None:
                thr.append(Point(x, items, label=f"{t['test_id']}: {fmt_number(items)} items/s"))
            base = baseline.get(t["test_id"])
            if base and base.get("baseline_median_ms"):
                base_lat.append(Point(x, base["baseline_median_ms"], label=f"baseline p50 {fmt_number(base['baseline_median_ms'])} ms"))
            if base and base.get("baseline_throughput"):
                base_thr.append(Point(x, base["baseline_throughput"], label=f"baseline {fmt_number(base['baseline_throughput'])} items/s"))
        latency.append(Series(precision, color, lat))
        throughput.append(Series(precision, color, thr))
        if base_lat:
            latency.append(Series(f"{precision} baseline", color, base_lat, dashed=True))
        if base_thr:
            throughput.append(Series(f"{precision} baseline", color, base_thr, dashed=True))
    return latency, throughput


def _perf_charts(report: Mapping[str, Any]) -> str:
    baseline = {e["test_id"]: e for e in (report.get("comparison") or {}).get("entries") or []}
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for t in report["tests"]:
        groups.setdefault((t["model"], t["hardware"]), []).append(t)
    cards = []
    for (model, hw), tests in groups.items():
        if not any(_metric(t, "latency_p50_ms") is not None for t in tests):
            continue
        batches = sorted({t["batch_size"] for t in tests})
        latency, throughput = _perf_series(tests, batches, baseline)
        labels = [str(b) for b in batches]
        cards.append(
            f'<div class="chartcard"><h3><code>{_e(model)}</code> on {_e(hw)}</h3>'
            + line_chart(latency, labels, title="latency p50 (bars p25–p75)", y_label="ms")
            + line_chart(throughput, labels, title="throughput", y_label="items/s")
            + "</div>"
        )
    if not cards:
        return '<p class="muted">No test reported latency metrics.</p>'
    return '<div class="charts">' + "".join(cards) + "</div>"


def _durations(report: Mapping[str, Any]) -> str:
    stacks = []
    for status in FINAL_STATUSES:
        values = [float(t["duration_s"]) for t in report["tests"] if t["status"] == status and t.get("duration_s")]
        if values:
            stacks.append((status, STATUS_COLOR[status], values))
    return histogram([], title="test durations (log scale)", x_label="seconds", stacks=stacks)


def _comparison(report: Mapping[str, Any]) -> str:
    comparison, baseline = report.get("comparison"), report.get("baseline")
    if not comparison or not baseline:
        return '<p class="muted">No baseline: run with <code>--baseline latest</code> or a run id to compare.</p>'
    runs = ", ".join(f"<code>{_e(r['run_id'])}</code> ({_e(', '.join(r['hardware']))})" for r in baseline["runs"]) or "none found"
    rule = comparison["rule"]
    intro = (f"<p>Baseline {runs}; history of {baseline.get('history_runs', 0)} run(s). A regression is a fast-tail "
             f"(p{rule['fast_quantile'] * 100:.0f}) latency at least {rule['threshold']:.0%} slower and beyond the noise band, "
             f"with a one-sided Mann-Whitney U p below {rule['alpha']:g}. "
             + ", ".join(f"{n} {_e(v)}" for v, n in comparison["counts"].items() if n) + ".</p>")
    entries = [e for e in comparison["entries"] if e.get("change") is not None]
    entries.sort(key=lambda e: -(e["change"] or 0))
    rows = [(e["test_id"], e["change"], e.get("noise") or 0.0, VERDICT_COLOR.get(e["verdict"], "#90a4ae"),
             f"{e['verdict']}: {e['change']:+.1%} (p10 {fmt_number(e.get('baseline_fast_ms') or 0)} → "
             f"{fmt_number(e.get('current_fast_ms') or 0)} ms, p={e.get('p_value') or 0:.2g})"
             + (f"; {e['stack_change']}" if e.get("stack_change") else ""))
            for e in entries[:MAX_CHANGE_ROWS]]
    chart = change_bars(rows, title="change against the baseline, per test") if rows else ""
    more = f'<p class="muted">{len(entries) - MAX_CHANGE_ROWS} more in the JSON report.</p>' if len(entries) > MAX_CHANGE_ROWS else ""
    return intro + chart + more + _flagged_table(report) + _status_changes(comparison)


def _flagged_table(report: Mapping[str, Any]) -> str:
    flagged = comparisons_of(report, "regression") + comparisons_of(report, "improvement") + comparisons_of(report, "noisy")
    if not flagged:
        return ""
    rows = "".join(
        f'<tr><td><code>{_e(e["test_id"])}</code></td><td style="color:{VERDICT_COLOR[e["verdict"]]}">{_e(e["verdict"])}</td>'
        f'{_num_cell(e.get("baseline_fast_ms"))}{_num_cell(e.get("current_fast_ms"))}'
        f'<td class="num" data-v="{e["change"]!r}">{e["change"]:+.1%}</td><td class="num">±{(e.get("noise") or 0):.0%}</td>'
        f'<td class="num">{e.get("p_value") or 0:.2g}</td>'
        f'<td>{_e("; ".join(x for x in ("template changed" if e.get("template_changed") else "", e.get("stack_change") or "") if x))}</td></tr>'
        for e in flagged)
    return ('<table class="sortable"><thead><tr><th>test</th><th>verdict</th><th>baseline p10 ms</th><th>now p10 ms</th>'
            f'<th>change</th><th>noise</th><th>p</th><th></th></tr></thead><tbody>{rows}</tbody></table>')


def _status_changes(comparison: Mapping[str, Any]) -> str:
    changes = comparison.get("status_changes") or []
    if not changes:
        return ""
    rows = "".join(f"<tr><td><code>{_e(c['test_id'])}</code></td><td>{_e(c['baseline_status'])}</td><td>{_e(c['status'])}</td></tr>"
                   for c in changes)
    return f"<h3>Status changes</h3><table><thead><tr><th>test</th><th>baseline</th><th>now</th></tr></thead><tbody>{rows}</tbody></table>"


def _failures(report: Mapping[str, Any]) -> str:
    bad = [t for t in report["tests"] if t["status"] in FAILING_STATUSES or t["status"] in UNFINISHED_STATUSES]
    if not bad:
        return '<p class="muted">No failures.</p>'
    items = []
    for t in bad:
        reason = t.get("error") or t.get("reason") or "never finished"
        tail = f"<details><summary>stderr tail</summary><pre>{_e(t['stderr_tail'])}</pre></details>" if t.get("stderr_tail") else ""
        items.append(f'<li><code>{_e(t["test_id"])}</code> <b style="color:{STATUS_COLOR.get(t["status"], "#b26a00")}">'
                     f"{_e(t['status'])}</b>: {_e(reason)}{tail}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _tests_table(report: Mapping[str, Any]) -> str:
    verdicts = {e["test_id"]: e["verdict"] for e in (report.get("comparison") or {}).get("entries") or []}
    rows = []
    for t in report["tests"]:
        m = t.get("metrics") or {}
        color = STATUS_COLOR.get(t["status"], STATUS_COLOR["unfinished"])
        rows.append(
            f'<tr><td><code>{_e(t["test_id"])}</code></td><td>{_source_tag(t.get("source"))}</td>'
            f'<td style="color:{color}">{_e(t["status"])}</td><td>{_e(parity_label(t.get("parity")))}</td>'
            f'{_num_cell(t.get("duration_s"))}{_num_cell(m.get("latency_p50_ms"))}{_num_cell(m.get("latency_p99_ms"))}'
            f'{_num_cell(m.get("throughput_items_s"))}{_num_cell(t.get("peak_memory_mb"))}'
            f'<td>{_e(verdicts.get(t["test_id"], ""))}</td><td>{_e(t.get("worker_id"))}</td></tr>'
        )
    return ('<table class="sortable"><thead><tr><th>test</th><th>source</th><th>status</th><th>parity</th><th>time s</th><th>p50 ms</th><th>p99 ms</th>'
            f'<th>items/s</th><th>peak MB</th><th>vs baseline</th><th>worker</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    run = report["run"]
    sections = [
        ("Pass/fail matrix", _matrix(report)),
        ("Parity against cpu/fp32", _parity(report)),
        ("Latency and throughput against batch size", _perf_charts(report)),
        ("Duration distribution", _durations(report)),
        ("Comparison with the baseline", _comparison(report)),
        ("Stack", _stacks(report)),
        ("Failures", _failures(report)),
        ("All tests", _tests_table(report)),
    ]
    body = "".join(f"<h2>{_e(title)}</h2>{content}" for title, content in sections)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>dtf report: {_e(run['suite_name'])} {_e(run['run_id'])}</title><style>{_CSS}</style></head>"
        f"<body><main>{_banner(report)}{_cards(report)}{body}"
        f'<p class="muted">Generated {_e(report.get("generated_at"))} by dtf {_e(report.get("dtf_version"))}; '
        f"report schema {_e(report.get('schema_version'))}.</p></main><script>{_SCRIPT}</script></body></html>\n"
    )
