"""Small inline-SVG charts for the HTML report: a line chart with error bars over
categorical x values, a histogram, and a diverging bar chart of relative changes.

Plain strings, no dependencies; every label is escaped. Hovering a mark shows its exact
value (an SVG ``<title>``), so the page needs no script for tooltips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

__all__ = ["Point", "Series", "line_chart", "histogram", "change_bars", "nice_ticks", "PALETTE", "fmt_number"]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
_FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif"'


@dataclass(frozen=True)
class Point:
    x: int  # index into the chart's x labels
    y: float
    low: float | None = None  # error bar, e.g. p10 ... p90
    high: float | None = None
    label: str = ""  # tooltip


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    points: Sequence[Point] = field(default_factory=tuple)
    dashed: bool = False


def fmt_number(value: float) -> str:
    """Short human number: 0.0412, 3.21, 142, 12.3k."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else "-"
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value / 1000:.0f}k"
    if magnitude >= 1000:
        return f"{value / 1000:.1f}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 0.5 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _frame(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="img" aria-label="{escape(title)}" {_FONT} font-size="11">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _y_axis(ticks: list[float], y_of, left: int, right: int, label: str) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for tick in ticks:
        y = y_of(tick)
        out.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end" fill="#4b5563">{escape(fmt_number(tick))}</text>')
    mid = (y_of(ticks[0]) + y_of(ticks[-1])) / 2
    out.append(f'<text transform="translate(12 {mid:.1f}) rotate(-90)" text-anchor="middle" fill="#374151">{escape(label)}</text>')
    return out


def line_chart(
    series: Sequence[Series],
    x_labels: Sequence[str],
    *,
    title: str,
    y_label: str,
    x_label: str = "batch size",
    width: int = 270,
    height: int = 200,
) -> str:
    """Lines over categorical x positions, each point with an optional low-high bar."""
    legend = _legend_rows(series, 54, width - 6)
    height += 13 * max(0, len(legend) - 1)
    left, right, top, bottom = 54, width - 10, 26, height - 40 - 13 * len(legend)
    values = [v for s in series for p in s.points for v in (p.y, p.low, p.high) if v is not None and math.isfinite(v)]
    ticks = nice_ticks(0.0, max(values) if values else 1.0)
    y_max = ticks[-1] or 1.0
    step = (right - left) / max(1, len(x_labels))

    def x_of(i: int) -> float:
        return left + step * (i + 0.5)

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * (v / y_max)

    body = [f'<text x="{left}" y="15" font-weight="600" fill="#111827">{escape(title)}</text>']
    body += _y_axis(ticks, y_of, left, right, y_label)
    for i, label in enumerate(x_labels):
        body.append(f'<text x="{x_of(i):.1f}" y="{bottom + 14}" text-anchor="middle" fill="#4b5563">{escape(label)}</text>')
    body.append(f'<text x="{(left + right) / 2:.1f}" y="{bottom + 28}" text-anchor="middle" fill="#374151">{escape(x_label)}</text>')
    body.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#9ca3af"/>')
    for s in series:
        body += _series_marks(s, x_of, y_of)
    body += _legend(legend, bottom + 44)
    return _frame(width, height, title, body)


def _series_marks(s: Series, x_of, y_of) -> list[str]:  # type: ignore[no-untyped-def]
    pts = sorted((p for p in s.points if math.isfinite(p.y)), key=lambda p: p.x)
    out = []
    dash = ' stroke-dasharray="5 4"' if s.dashed else ""
    if len(pts) > 1:
        path = " ".join(f"{x_of(p.x):.1f},{y_of(p.y):.1f}" for p in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
    for p in pts:
        x = x_of(p.x)
        if p.low is not None and p.high is not None and math.isfinite(p.low) and math.isfinite(p.high):
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_of(p.low):.1f}" y2="{y_of(p.high):.1f}"'
                       f' stroke="{s.color}" stroke-opacity="0.55" stroke-width="5" stroke-linecap="round"/>')
        fill = "#fff" if s.dashed else s.color
        out.append(f'<circle cx="{x:.1f}" cy="{y_of(p.y):.1f}" r="3.5" fill="{fill}" stroke="{s.color}" stroke-width="1.5">'
                   f"<title>{escape(p.label or f'{s.name}: {fmt_number(p.y)}')}</title></circle>")
    return out


def _legend_rows(series: Sequence[Series], left: int, right: int) -> list[list[tuple[float, Series]]]:
    """Legend entries with their x positions, wrapped into rows that fit between left and right."""
    rows: list[list[tuple[float, Series]]] = [[]]
    x = float(left)
    for s in series:
        width = 28 + 6.2 * len(s.name)
        if rows[-1] and x + width > right:
            rows.append([])
            x = float(left)
        rows[-1].append((x, s))
        x += width
    return rows if rows[0] else []


def _legend(rows: list[list[tuple[float, Series]]], top: float) -> list[str]:
    out = []
    for r, row in enumerate(rows):
        y = top + 13 * r
        for x, s in row:
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            out.append(f'<line x1="{x:.1f}" x2="{x + 16:.1f}" y1="{y - 4}" y2="{y - 4}" stroke="{s.color}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{x + 20:.1f}" y="{y}" fill="#374151">{escape(s.name)}</text>')
    return out


def histogram(
    values: Sequence[float],
    *,
    title: str,
    x_label: str,
    stacks: Sequence[tuple[str, str, Sequence[float]]] = (),
    bins: int = 12,
    width: int = 520,
    height: int = 220,
) -> str:
    """Counts of ``values`` in log-spaced bins; ``stacks`` (name, colour, values) split
    each bar by category (e.g. test status) instead."""
    groups = list(stacks) or [("tests", PALETTE[0], values)]
    all_values = [v for _, _, vs in groups for v in vs if v > 0 and math.isfinite(v)]
    left, right, top, bottom = 46, width - 10, 26, height - 52
    body = [f'<text x="{left}" y="15" font-weight="600" fill="#111827">{escape(title)}</text>']
    if not all_values:
        body.append(f'<text x="{left}" y="{(top + bottom) / 2:.0f}" fill="#6b7280">no timed tests</text>')
        return _frame(width, height, title, body)
    lo, hi = math.log10(min(all_values)), math.log10(max(all_values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    counts = [[0] * bins for _ in groups]
    for g, (_, _, vs) in enumerate(groups):
        for v in vs:
            if v > 0 and math.isfinite(v):
                counts[g][min(bins - 1, int((math.log10(v) - lo) / (hi - lo) * bins))] += 1
    totals = [sum(c[i] for c in counts) for i in range(bins)]
    ticks = nice_ticks(0, max(totals), 4)
    y_max = ticks[-1] or 1

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * (v / y_max)

    body += _y_axis([t for t in ticks if t == int(t)] or [0, 1], y_of, left, right, "tests")
    bar = (right - left) / bins
    for i in range(bins):
        base = 0
        for g, (name, color, _) in enumerate(groups):
            n = counts[g][i]
            if not n:
                continue
            x0, y1, y0 = left + bar * i + 1, y_of(base + n), y_of(base)
            tip = f"{name}: {n} test(s) taking {fmt_number(10 ** edges[i])}-{fmt_number(10 ** edges[i + 1])} s"
            body.append(f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{bar - 2:.1f}" height="{y0 - y1:.1f}" fill="{color}">'
                        f"<title>{escape(tip)}</title></rect>")
            base += n
    for i in range(0, bins + 1, max(1, bins // 6)):
        x = left + bar * i
        body.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#4b5563">{escape(fmt_number(10 ** edges[i]))}</text>')
    body.append(f'<text x="{(left + right) / 2:.1f}" y="{bottom + 28}" text-anchor="middle" fill="#374151">{escape(x_label)}</text>')
    body += _legend(_legend_rows([Series(name, color) for name, color, vs in groups if any(v > 0 for v in vs)], left, right), height - 10)
    return _frame(width, height, title, body)


def change_bars(
    rows: Sequence[tuple[str, float, float, str, str]],
    *,
    title: str,
    width: int = 760,
) -> str:
    """One horizontal bar per (label, change, noise band, colour, tooltip): the relative
    change from the baseline, with the noise band drawn as a grey box around it."""
    row_h, left, right, top = 18, 280, width - 60, 34
    height = top + row_h * len(rows) + 30
    extent = max([0.25] + [abs(c) for _, c, _, _, _ in rows] + [n for _, _, n, _, _ in rows if math.isfinite(n)])
    extent = min(extent * 1.1, 5.0)
    mid = (left + right) / 2

    def x_of(v: float) -> float:
        return mid + (right - left) / 2 * max(-1.0, min(1.0, v / extent))

    body = [f'<text x="8" y="15" font-weight="600" fill="#111827">{escape(title)}</text>']
    for tick in (-extent, -extent / 2, 0.0, extent / 2, extent):
        x = x_of(tick)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - 24}" stroke="#e5e7eb"/>')
        body.append(f'<text x="{x:.1f}" y="{top - 10}" text-anchor="middle" fill="#4b5563">{tick:+.0%}</text>')
    for i, (label, change, noise, color, tip) in enumerate(rows):
        y = top + row_h * i
        if math.isfinite(noise) and noise > 0:
            body.append(f'<rect x="{x_of(-noise):.1f}" y="{y + 2}" width="{x_of(noise) - x_of(-noise):.1f}"'
                        f' height="{row_h - 4}" fill="#f3f4f6"/>')
        x0, x1 = sorted((x_of(0.0), x_of(change)))
        body.append(f'<rect x="{x0:.1f}" y="{y + 5}" width="{max(1.0, x1 - x0):.1f}" height="{row_h - 10}" fill="{color}">'
                    f"<title>{escape(tip)}</title></rect>")
        body.append(f'<text x="{left - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end" fill="#111827">{escape(label)}</text>')
        body.append(f'<text x="{right + 6}" y="{y + row_h / 2 + 4:.1f}" fill="#374151">{change:+.1%}</text>')
    body.append(f'<line x1="{mid:.1f}" x2="{mid:.1f}" y1="{top - 6}" y2="{height - 24}" stroke="#6b7280"/>')
    body.append(f'<text x="{mid:.1f}" y="{height - 8}" text-anchor="middle" fill="#374151">'
                "change of fast-tail latency from the baseline (grey: noise band)</text>")
    return _frame(width, height, title, body)
