"""Markdown for ``$GITHUB_STEP_SUMMARY``, GitLab and PR comments: the verdict first, then
totals, the models x hardware matrix (each model with its source; built-in workloads say
"synthetic"), failures with reasons, the cross-hardware parity of real models against
cpu/fp32, the comparison with the baseline (naming a changed stack next to a slowdown),
the stacks the results ran on and the slowest tests. Kept under GitHub's 64 KiB comment
limit by capping lists.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .document import FAILING_STATUSES, FINAL_STATUSES, UNFINISHED_STATUSES, comparisons_of
from .parity import STACK_COLUMNS, sci

__all__ = ["render_markdown", "MAX_ROWS"]

MAX_ROWS = 25
STDERR_LINES = 15
_ICON = {"passed": "✅", "failed": "❌", "incomplete": "⏳", "skipped": "⏭️"}
_STATUS_ICON = {"passed": "✅", "flaky": "🔁", "cached": "♻️", "failed": "❌", "error": "💥", "timeout": "⌛",
                "quarantined": "🚧", "skipped": "⏭️",
                "pending": "⏳", "queued": "⏳", "running": "⏳"}


def _cell(text: Any) -> str:
    """Safe inside a table cell: no pipes or newlines break the row."""
    return str("" if text is None else text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _code(text: Any) -> str:
    return "`" + _cell(text).replace("`", "'") + "`"


def _num(value: Any, digits: int = 3) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _header(report: Mapping[str, Any]) -> list[str]:
    run, totals = report["run"], report["totals"]
    verdict = report["outcome"]
    regressed = f", {report['regressions']} performance regression(s)" if report.get("regressions") else ""
    lines = [f"## {_ICON.get(verdict, '')} dtf: {verdict}{regressed} — suite {_code(run['suite_name'])}, run {_code(run['run_id'])}", ""]
    parts = [f"**{totals['tests']} tests**"]
    parts += [f"{_STATUS_ICON[s]} {totals[s]} {s}" for s in FINAL_STATUSES if totals.get(s)]
    if totals.get("unfinished"):
        parts.append(f"⏳ {totals['unfinished']} never finished")
    sources = report.get("sources") or {}
    if sources:
        parts.append("sources: " + ", ".join(f"{n} {label}" for label, n in sorted(sources.items())))
    lines.append(" · ".join(parts))
    where = []
    if run.get("git_sha"):
        where.append(f"commit {_code(str(run['git_sha'])[:12])}" + (f" on {_code(run['branch'])}" if run.get("branch") else ""))
    if run.get("ci_url"):
        where.append(f"[CI job]({run['ci_url']})")
    if run.get("wall_time_s") is not None:
        where.append(f"wall time {run['wall_time_s']:.1f} s")
    if where:
        lines += ["", " · ".join(where)]
    return lines + [""]


def _matrix_cell(cell: Mapping[str, Any] | None) -> str:
    if cell is None:
        return "–"
    bad = sum(cell[s] for s in FAILING_STATUSES)
    ran = cell["tests"] - cell["skipped"] - cell["unfinished"]
    if cell["outcome"] == "incomplete":
        return f"⏳ {cell['unfinished']} of {cell['tests']} unfinished"
    if cell["outcome"] == "skipped":
        return f"⏭️ {cell['skipped']} skipped"
    text = f"❌ {bad} of {ran} failed" if bad else f"✅ {cell['passed']}/{ran}"
    return text + (f", {cell['skipped']} skipped" if cell["skipped"] else "")


def _matrix(report: Mapping[str, Any]) -> list[str]:
    matrix = report["matrix"]
    cells = {(c["model"], c["hardware"]): c for c in matrix["cells"]}
    lines = ["### Pass/fail matrix", "", "| model | " + " | ".join(_cell(hw) for hw in matrix["hardware"]) + " |",
             "|---|" + "---|" * len(matrix["hardware"])]
    sources = matrix.get("sources") or {}
    for model in matrix["models"][:MAX_ROWS * 4]:
        label = ", ".join(sources.get(model) or [])
        name = f"{_code(model)}{f' ({_cell(label)})' if label else ''}"
        lines.append(f"| {name} | " + " | ".join(_matrix_cell(cells.get((model, hw))) for hw in matrix["hardware"]) + " |")
    if len(matrix["models"]) > MAX_ROWS * 4:
        lines.append(f"\n… and {len(matrix['models']) - MAX_ROWS * 4} more models (see the JSON or HTML report)")
    return lines + [""]


def _failures(report: Mapping[str, Any]) -> list[str]:
    bad = [t for t in report["tests"] if t["status"] in FAILING_STATUSES or t["status"] in UNFINISHED_STATUSES]
    if not bad:
        return []
    lines = [f"### Failures ({len(bad)})", "", "| test | status | reason |", "|---|---|---|"]
    for t in bad[:MAX_ROWS]:
        reason = t.get("error") or t.get("reason") or ("never finished" if t["status"] in UNFINISHED_STATUSES else "")
        lines.append(f"| {_code(t['test_id'])} | {_STATUS_ICON.get(t['status'], '')} {t['status']} | {_cell(str(reason)[:300])} |")
    if len(bad) > MAX_ROWS:
        lines.append(f"\n… and {len(bad) - MAX_ROWS} more")
    for t in bad[:5]:
        tail = (t.get("stderr_tail") or "").strip().splitlines()[-STDERR_LINES:]
        if tail:
            body = "\n".join(tail).replace("```", "'''")
            lines += ["", f"<details><summary>stderr of {_code(t['test_id'])}</summary>", "", "```", body, "```", "", "</details>"]
    return lines + [""]


def _comparison_rows(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| test | baseline ms | now ms | change | noise band | p |", "|---|---:|---:|---:|---:|---:|"]
    for e in entries[:MAX_ROWS]:
        note = " (template changed)" if e.get("template_changed") else ""
        if e.get("stack_change"):
            note += f" ({_cell(e['stack_change'])})"
        lines.append(
            f"| {_code(e['test_id'])}{note} | {_num(e.get('baseline_fast_ms'))} | {_num(e.get('current_fast_ms'))} "
            f"| {e['change']:+.1%} | ±{(e.get('noise') or 0):.0%} | {e.get('p_value') or 0:.1g} |"
        )
    if len(entries) > MAX_ROWS:
        lines.append(f"\n… and {len(entries) - MAX_ROWS} more")
    return lines


def _comparison(report: Mapping[str, Any]) -> list[str]:
    comparison, baseline = report.get("comparison"), report.get("baseline")
    if not comparison or not baseline:
        return []
    runs = ", ".join(f"{_code(r['run_id'])} ({', '.join(r['hardware'])})" for r in baseline["runs"]) or "none found"
    counts = comparison["counts"]
    rule = comparison["rule"]
    lines = ["### Performance against the baseline", "",
             f"Baseline: {runs}; history of {baseline.get('history_runs', 0)} run(s). "
             f"Rule: fast-tail (p{rule['fast_quantile'] * 100:.0f}) latency moved ≥ {rule['threshold']:.0%} and beyond the noise band, "
             f"Mann-Whitney U p < {rule['alpha']:g}.", "",
             " · ".join(f"{n} {verdict}" for verdict, n in counts.items() if n) or "nothing to compare", ""]
    for verdict, heading in (("regression", "Regressions"), ("improvement", "Improvements"), ("noisy", "Changed, but within noise")):
        entries = comparisons_of(report, verdict)
        if entries:
            lines += [f"**{heading} ({len(entries)})**", "", *_comparison_rows(entries), ""]
    changes = comparison.get("status_changes") or []
    if changes:
        lines += ["**Status changes**", "", "| test | baseline | now |", "|---|---|---|"]
        lines += [f"| {_code(c['test_id'])} | {c['baseline_status']} | {c['status']} |" for c in changes[:MAX_ROWS]]
        lines.append("")
    return lines


def _slowest(report: Mapping[str, Any]) -> list[str]:
    by_id = {t["test_id"]: t for t in report["tests"]}
    slowest = [by_id[i] for i in report.get("slowest") or [] if i in by_id]
    if not slowest:
        return []
    lines = ["### Slowest tests", "", "| test | source | status | time s | p50 ms | items/s | peak MB |",
             "|---|---|---|---:|---:|---:|---:|"]
    for t in slowest:
        m = t.get("metrics") or {}
        lines.append(f"| {_code(t['test_id'])} | {_cell(t.get('source') or 'synthetic')} | {t['status']} "
                     f"| {_num(t.get('duration_s'))} | {_num(m.get('latency_p50_ms'))} "
                     f"| {_num(m.get('throughput_items_s'))} | {_num(t.get('peak_memory_mb'))} |")
    return lines + [""]


_VERDICT = {"pass": "✅ pass", "fail": "❌ FAIL", "reference": "reference", "off": "off", "n/a": "n/a"}



def _parity(report: Mapping[str, Any]) -> list[str]:
    groups = report.get("parity") or []
    if not groups:
        return []
    lines = ["### Parity against cpu/fp32", "",
             "Each backend and precision against the cpu/fp32 result of the same model and batch size in this run, "
             "from the output fingerprints the tests recorded; tolerance = atol + rtol × RMS of the reference "
             "(per precision, `dtf.parity.TOLERANCES`).", ""]
    for group in groups[:MAX_ROWS]:
        ref = f"reference {_code(group['reference_test_id'])}" if group.get("reference_test_id") else \
            f"no {group['reference']} result in this run"
        lines += [f"**{_code(group['model'])}** ({_cell(group['source'])}), batch {group['batch_size']}: {ref}", "",
                  "| backend/precision | max abs | max rel | tolerance | output | verdict |", "|---|---:|---:|---:|---|---|"]
        for c in group["cells"][:MAX_ROWS]:
            verdict = _VERDICT.get(c["verdict"], _cell(c["verdict"]))
            if c["verdict"] in ("fail", "n/a") and c.get("message"):
                verdict += f": {_cell(c['message'][:200])}"
            if c.get("basis") == "test" and c["verdict"] in ("pass", "fail"):
                verdict += " (the test's own check)"
            lines.append(f"| {_code(c['candidate'])} | {sci(c.get('max_abs'))} | {sci(c.get('max_rel'))} "
                         f"| {sci(c.get('tolerance'))} | {_cell(c.get('output') or '')} | {verdict} |")
        lines.append("")
    if len(groups) > MAX_ROWS:
        lines += [f"… and {len(groups) - MAX_ROWS} more models and batch sizes (see the JSON or HTML report)", ""]
    return lines


def _stacks(report: Mapping[str, Any]) -> list[str]:
    stacks = report.get("stacks") or []
    synthetic = (report.get("sources") or {}).get("synthetic", 0)
    if not stacks:
        return []
    columns = [(k, h) for k, h in STACK_COLUMNS if any(s["stack"].get(k) is not None for s in stacks)]
    lines = ["### Stack", "", "| hardware | tests | hosts | " + " | ".join(h for _, h in columns) + " |",
             "|---|---:|---|" + "---|" * len(columns)]
    for s in stacks[:MAX_ROWS]:
        values = " | ".join(_cell("–" if s["stack"].get(k) is None else s["stack"][k]) for k, _ in columns)
        lines.append(f"| {_cell(s['hardware'])} | {s['tests']} | {_cell(', '.join(s['hosts']))} | {values} |")
    if synthetic:
        lines += ["", f"{synthetic} synthetic test(s) (built-in workloads) record no stack."]
    return lines + [""]


def _skips(report: Mapping[str, Any]) -> list[str]:
    reasons: dict[str, int] = {}
    for t in report["tests"]:
        if t["status"] == "skipped":
            reason = (t.get("reason") or t.get("error") or "no reason given").strip()
            reasons[reason] = reasons.get(reason, 0) + 1
    if not reasons:
        return []
    lines = [f"<details><summary>Skipped ({sum(reasons.values())})</summary>", "", "| tests | reason |", "|---:|---|"]
    lines += [f"| {n} | {_cell(r[:300])} |" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:MAX_ROWS]]
    return lines + ["", "</details>", ""]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as GitHub-flavoured Markdown."""
    sections = [_header(report), _matrix(report), _failures(report), _parity(report), _comparison(report),
                _stacks(report), _slowest(report), _skips(report)]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"
