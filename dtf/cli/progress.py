"""Following a run to its end: a live bar per hardware kind on a terminal, plain lines
otherwise (no terminal, or ``CI`` set), nothing with --quiet but warnings."""

from __future__ import annotations

import os
import time
from typing import Any, Optional, Protocol

from ..model import FINAL_ORDER
from . import common
from .common import Verbosity

FINAL = tuple(s.value for s in FINAL_ORDER)
PLAIN_EVERY_S = 5.0  # at most one plain progress line this often while it changes
PLAIN_HEARTBEAT_S = 30.0  # and one anyway this often, so CI logs show the wait is alive


class View(Protocol):
    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...

    def show(self, status: dict[str, Any]) -> None: ...


def totals(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for per in counts.values():
        for status, n in per.items():
            summed[status] = summed.get(status, 0) + n
    return summed


def progress_line(status: dict[str, Any]) -> str:
    """One plain line: overall counts, then per hardware kind."""
    summed = totals(status["counts"])
    total = sum(summed.values())
    done = sum(summed.get(k, 0) for k in FINAL)
    parts = [f"{k} {summed[k]}" for k in (*FINAL, "running", "queued", "pending") if summed.get(k)]
    per_hw = "; ".join(
        f"{hw}: " + " ".join(f"{k}={v}" for k, v in sorted(per.items())) for hw, per in sorted(status["counts"].items())
    )
    refused = f"; {status['refused_messages']} hostile or broken messages refused (see dtf.dead)" \
        if status.get("refused_messages") else ""
    return f"{status['run']['run_id']}: {done}/{total} done, {', '.join(parts)}  [{per_hw}]{refused}"


def interactive() -> bool:
    """A live progress bar only on a terminal outside CI; plain lines otherwise."""
    return common.err.is_terminal and not os.environ.get("CI")


class QuietProgress:
    """--quiet: no progress at all."""

    def __enter__(self) -> "QuietProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def show(self, status: dict[str, Any]) -> None:
        pass


class PlainProgress:
    """Progress as plain lines on stderr: when it changes (at most every few seconds), as
    a heartbeat when it does not, and always the last one."""

    def __init__(self) -> None:
        self.last_line, self.last_print = "", 0.0

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def show(self, status: dict[str, Any]) -> None:
        line, now = progress_line(status), time.monotonic()
        due = now - self.last_print >= (PLAIN_EVERY_S if line != self.last_line else PLAIN_HEARTBEAT_S)
        if due or (status["finished"] and line != self.last_line):
            common.err.print(line, markup=False)
            self.last_line, self.last_print = line, now


class LiveProgress:
    """A rich progress bar per hardware kind: done of total, and passed, failed, running,
    queued counts."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description:>7}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[summary]}"), TimeElapsedColumn(), console=common.err, transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "LiveProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def show(self, status: dict[str, Any]) -> None:
        for hw, per in sorted(status["counts"].items()):
            total, done = sum(per.values()), sum(per.get(k, 0) for k in FINAL)
            failed = sum(per.get(k, 0) for k in ("failed", "error", "timeout"))
            summary = (f"[green]{per.get('passed', 0)} passed[/] [red]{failed} failed[/] "
                       f"[cyan]{per.get('running', 0)} running[/] {per.get('queued', 0) + per.get('pending', 0)} queued"
                       + (f" [yellow]{per['skipped']} skipped[/]" if per.get("skipped") else ""))
            if hw not in self.tasks:
                self.tasks[hw] = self.progress.add_task(hw, total=total, summary=summary)
            self.progress.update(self.tasks[hw], total=total, completed=done, summary=summary)


def view() -> View:
    if Verbosity.quiet:
        return QuietProgress()
    return LiveProgress() if interactive() else PlainProgress()


def follow(client: Any, run_id: str, timeout_s: Optional[float], *, interval_s: float = 0.5) -> dict[str, Any]:
    """Follow the run until it finishes or ``timeout_s`` passes. Returns the last status;
    ``status["finished"]`` says which it was.

    Each status query asks the coordinator to hold its answer until the run finishes or
    ``interval_s`` passes: progress refreshes every interval, and the end is seen at once."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    warned: set[str] = set()
    with view() as shown:
        while True:
            asked = time.monotonic()
            wait_s = interval_s if deadline is None else max(0.0, min(interval_s, deadline - asked))
            status = client.call("status", run_id=run_id, wait_s=wait_s)
            shown.show(status)
            for queue in status.get("idle_queues", []):
                if queue not in warned:
                    warned.add(queue)
                    common.err.print(f"warning: no worker consumes {queue}; its tests wait until one starts")
            if status["finished"] or (deadline is not None and time.monotonic() >= deadline):
                return status
            time.sleep(max(0.0, interval_s - (time.monotonic() - asked)))  # a coordinator that did not hold it
