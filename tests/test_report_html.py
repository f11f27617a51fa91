"""The single-file HTML report: self-contained, escaped, with the charts, and loading in
headless Chromium with no console errors and a screenshot that shows something."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dtf.report import build_report, render
from dtf.report.html import CSP

from .conftest import need_binary
from .png import png_pixels
from .test_report_rows import BASE_ID, mixed_tests, row_for, run_row


def rich_report() -> dict[str, Any]:
    """Failures, skips, two precisions over three batch sizes, and a baseline with one
    regression and one improvement."""
    tests = [t for t in mixed_tests() if t["model"] != "bert-base-uncased"]
    for precision, scale in (("fp32", 1.0), ("fp16", 0.6)):
        for i, batch in enumerate((1, 4, 16)):
            tests.append(row_for("bert-base-uncased", batch_size=batch, precision=precision,
                                 center_ms=1.0 * scale, seed=i))
    base_tests = []
    for t in tests:
        if t["status"] != "passed":
            continue
        factor = {"bert-base-uncased/cpu/bs4/fp32": 1 / 1.3, "bert-base-uncased/cpu/bs16/fp16": 1.3}.get(t["test_id"], 1.0)
        base_tests.append(dict(t, run_id=BASE_ID, metrics=dict(
            t["metrics"], latencies_ms=[x * factor for x in t["metrics"]["latencies_ms"]],
            throughput_items_s=t["metrics"]["throughput_items_s"] / factor)))
    baseline = {"requested": "latest", "runs": [run_row(BASE_ID, hardware=["cpu"])], "tests": base_tests, "history": []}
    return build_report(run_row(), tests, baseline=baseline, dtf_version="0.1.0")


@pytest.fixture(scope="module")
def html() -> str:
    return render(rich_report(), "html")


def test_the_page_fetches_nothing_from_anywhere(html: str) -> None:
    assert f'content="{CSP}"' in html and "default-src 'none'" in CSP
    assert not re.search(r"""\b(?:src|srcset|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"<(?:link|iframe|object|embed|img|base)\b", html, re.I)
    assert "@import" not in html and "url(" not in html
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == ["https://ci.example.invalid/job/1"]  # the one link is a link to the CI job


def test_the_page_has_every_section_and_its_charts(html: str) -> None:
    for heading in ("Pass/fail matrix", "Latency and throughput against batch size", "Duration distribution",
                    "Comparison with the baseline", "Failures", "All tests"):
        assert f"<h2>{heading}</h2>" in html
    charts = html.count("<svg ")
    # latency + throughput for bert and gpt2 on cpu, the duration histogram, the change bars
    assert charts == 2 * 2 + 1 + 1
    assert "fp16 baseline" in html and "stroke-dasharray" in html
    assert "regression" in html and "improvement" in html


def test_names_and_errors_are_escaped(tmp_path: Path) -> None:
    tests = [row_for("<script>alert(1)</script>", status="failed", error="<img src=x onerror=alert(1)>")]
    page = render(build_report(run_row(), tests), "html")
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page


# -- in a real browser ------------------------------------------------------------------------------
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                  "--enable-logging=stderr", "--v=0")


def chromium_screenshot(page: Path, shot: Path, profile: Path) -> str:
    """Load the page in headless Chromium, save a screenshot, return its log (stderr),
    where Chromium writes every console message as ``CONSOLE``."""
    binary = need_binary("chromium")
    proc = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,2400",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def console_messages(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Refused to" in line]


@pytest.mark.slow
def test_the_report_loads_in_headless_chromium_without_console_errors_and_draws(html: str, tmp_path: Path) -> None:
    page, shot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(html, encoding="utf-8")
    log = chromium_screenshot(page, shot, tmp_path / "profile")
    assert console_messages(log) == []
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 2400)
    colours = {row[i:i + 3] for row in rows[::7] for i in range(0, len(row), 3 * 5)}
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    # The charts are drawn: the pass/fail green and the first series' blue are on screen.
    flat = b"".join(rows[::3])
    assert bytes.fromhex("2e7d32") in flat and bytes.fromhex("0072b2") in flat


@pytest.mark.slow
def test_the_console_check_does_catch_a_page_that_logs_an_error(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><p>x</p><script>console.error('boom'); missingFunction();</script>")
    log = chromium_screenshot(page, tmp_path / "bad.png", tmp_path / "profile")
    messages = console_messages(log)
    assert any("boom" in m for m in messages) and any("missingFunction" in m for m in messages)
