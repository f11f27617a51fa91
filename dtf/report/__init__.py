"""Reports of a run for people and tools: JSON (everything, versioned), Markdown (for CI
summaries and PR comments), a single-file HTML page with charts, and JUnit XML.

Pure: every format is rendered from one document that ``build_report`` makes out of the
rows the store returns, so the CLI can build it from the coordinator's answer or from a
DuckDB file alike.

    doc = build_report(data["run"], data["tests"], baseline=data["baseline"])
    text = render(doc, "md")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from .document import SCHEMA, SCHEMA_VERSION, build_report, exit_code
from .html import render_html
from .junit import render_junit
from .markdown import render_markdown

__all__ = [
    "FORMATS",
    "FILE_NAMES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "build_report",
    "exit_code",
    "render",
    "render_html",
    "render_json",
    "render_junit",
    "render_markdown",
    "write_reports",
]


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False) + "\n"


FORMATS: dict[str, Callable[..., str]] = {
    "json": render_json,
    "md": render_markdown,
    "html": render_html,
    "junit": render_junit,
}
FILE_NAMES: dict[str, str] = {"json": "report.json", "md": "report.md", "html": "report.html", "junit": "junit.xml"}


def render(report: Mapping[str, Any], fmt: str, *, regressions_fail: bool = False) -> str:
    """The report in one format: json, md, html or junit."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt == "junit":
        return render_junit(report, regressions_fail=regressions_fail)
    return FORMATS[fmt](report)


def write_reports(report: Mapping[str, Any], directory: Path, *, regressions_fail: bool = False) -> dict[str, Path]:
    """Every format into ``directory`` (created), as report.json, report.md, report.html
    and junit.xml; returns {format: path}."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt, name in FILE_NAMES.items():
        path = directory / name
        path.write_text(render(report, fmt, regressions_fail=regressions_fail), encoding="utf-8")
        written[fmt] = path
    return written
