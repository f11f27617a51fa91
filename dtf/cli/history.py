"""``dtf predict``, ``dtf quarantine add|remove|list`` and ``dtf scale``: what the results
history says (logic in dtf/predict.py, dtf/flaky.py, dtf/scale.py; the rows from
dtf/store/history.py). Registered on the main typer app by ``register``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from . import common
from .common import BrokerOpt, DbOpt, JsonOpt, ReadDbOpt, TemplatesOpt

__all__ = ["register", "quarantine_app", "parse_duration"]

quarantine_app = typer.Typer(help="Quarantined tests: they run and are reported, but do not fail a run.",
                             no_args_is_help=True)


def parse_duration(text: Optional[str]) -> Optional[float]:
    """"7d", "12h", "90m", "3600": seconds; None or "never": no limit."""
    from ..cache import parse_max_age
    from ..errors import DtfError

    if text is None or text.strip().lower() == "never":
        return None
    try:
        return parse_max_age(text)
    except ValueError as exc:
        raise DtfError(str(exc).replace("--reuse", "--expires")) from None


def _db(db: Optional[str]) -> str:
    return db or common.settings().db_path


def _predict(suite: Path, db: Optional[str], templates: Optional[list[Path]], as_json: bool) -> None:
    from ..coordinator.history import DEFAULT_TIMEOUT_S, _static_memory
    from ..predict import observations, predict
    from ..submission import prepare_suite

    built = common.settings()
    _, tests = prepare_suite(suite, common.template_registry(built, templates))
    specs = [t.spec for t in tests]
    with common.open_store(_db(db)) as store:
        history = observations(store.history_rows(sorted({s.hardware for s in specs})))
    predictions = predict(specs, history, _static_memory)
    rows = []
    for spec, p in zip(specs, predictions):
        timeout = p.timeout_s(DEFAULT_TIMEOUT_S) if spec.timeout_s == DEFAULT_TIMEOUT_S else spec.timeout_s
        rows.append({**p.to_dict(), "static_memory_gb": round(spec.memory_gb, 4), "timeout_s": timeout})
    if as_json:
        common.out.print_json(json.dumps(rows))
        return
    from rich.table import Table

    table = Table("test", "basis", "median s", "p95 s", "memory GB", "timeout s", "why")
    for r in rows:
        table.add_row(str(r["test_id"]), str(r["basis"]), common.fmt_value(r["duration_s"]),
                      common.fmt_value(r["duration_p95_s"]), common.fmt_value(r["memory_gb"]),
                      common.fmt_value(r["timeout_s"], 1), str(r["detail"]))
    common.out.print(table)


def _scale_rows(db: Optional[str], broker: Optional[str]) -> list[dict[str, Any]]:
    if db is None:
        return list(common.coordinator_client(broker, db_too=True).call("scale"))
    with common.open_store(db) as store:
        return list(store.scale_advice(time.time()))


def register(app: typer.Typer, errors: Callable[[Any], Any]) -> None:
    """Add ``predict``, ``scale`` and the ``quarantine`` group to ``app``."""

    @app.command("predict")
    @errors
    def predict_cmd(
        suite: Annotated[Path, typer.Argument(help="Suite YAML file.")],
        db: DbOpt = None,
        templates: TemplatesOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Per test: predicted duration (median, p95), peak memory and the timeout it would get, with the basis.

        Example: dtf predict examples/smoke.yaml --db results.duckdb --json
        """
        _predict(suite, db, templates, as_json)

    @app.command("scale")
    @errors
    def scale_cmd(db: ReadDbOpt = None, broker: BrokerOpt = None, as_json: JsonOpt = False) -> None:
        """Per queue: backlog (tests, predicted seconds), live workers, utilisation and add/remove/hold advice.

        The rule (dtf/scale.py): add workers when the backlog would take longer than 600 s
        x 1.25 on the live slots (or tests wait and no worker serves the queue); remove
        some when utilisation is under 50% and the backlog drains in under 150 s; else hold.

        Example: dtf scale --db results.duckdb --json
        """
        rows = _scale_rows(db, broker)
        if as_json:
            common.out.print_json(json.dumps(rows))
            return
        from rich.table import Table

        table = Table("queue", "advice", "backlog", "backlog s", "workers", "slots", "running", "utilisation", "why")
        for r in rows:
            util = "-" if r["utilisation"] is None else f"{float(r['utilisation']):.0%}"
            advice = "hold" if r["action"] == "hold" else f"{r['action']} {r['count']}"
            table.add_row(str(r["queue"]), advice, str(r["backlog_tests"]), common.fmt_value(r["backlog_s"], 0),
                          str(r["workers"]), str(r["slots"]), str(r["running"]), util, str(r["reason"]))
        common.out.print(table if rows else "nothing waits and no worker is live")

    @quarantine_app.command("add")
    @errors
    def quarantine_add(
        test_id: Annotated[str, typer.Argument(help="Test id, as `dtf results` shows it.")],
        reason: Annotated[str, typer.Option("--reason", help="Why (shown with every result of the test).")],
        hardware: Annotated[str, typer.Option("--hardware", help="Only on this hardware kind ('*': every kind).")] = "*",
        expires: Annotated[Optional[str], typer.Option("--expires", help="Lift it after this long: 7d, 12h, 90m, or 'never'.")] = "30d",
        db: DbOpt = None,
    ) -> None:
        """Quarantine a test: it still runs and is reported, but does not fail the run.

        Example: dtf quarantine add bert-tiny-cpu-bs1-fp32 --reason "issue 42" --expires 7d --db results.duckdb
        """
        age = parse_duration(expires)
        until = None if age is None else time.time() + age
        with common.writable_store(common.settings(db_path=db)) as store:
            store.quarantine_add(test_id, hardware, reason, added_by="user", expires_at=until, token=store.max_token())
        common.info(f"quarantined {test_id} on {hardware}" + ("" if until is None else f" for {expires}"))

    @quarantine_app.command("remove")
    @errors
    def quarantine_remove(
        test_id: Annotated[str, typer.Argument(help="Test id.")],
        hardware: Annotated[str, typer.Option("--hardware", help="The entry's hardware kind ('*': the every-kind one).")] = "*",
        db: DbOpt = None,
    ) -> None:
        """Take a test off quarantine.

        Example: dtf quarantine remove bert-tiny-cpu-bs1-fp32 --db results.duckdb
        """
        from ..errors import DtfError

        with common.writable_store(common.settings(db_path=db)) as store:
            removed = store.quarantine_remove(test_id, hardware, token=store.max_token())
        if not removed:
            raise DtfError(f"{test_id} is not quarantined on {hardware}")
        common.info(f"{test_id} is no longer quarantined on {hardware}")

    @quarantine_app.command("list")
    @errors
    def quarantine_list(db: DbOpt = None, as_json: JsonOpt = False) -> None:
        """The quarantined tests in force, with reason, who added them and the expiry.

        Example: dtf quarantine list --db results.duckdb
        """
        with common.open_store(_db(db)) as store:
            rows = store.quarantined()
        if as_json:
            common.out.print_json(json.dumps(rows))
            return
        from rich.table import Table

        table = Table("test", "hardware", "reason", "by", "expires (UTC)")
        for r in rows:
            expires = r.get("expires_at")
            table.add_row(str(r["test_id"]), str(r["hardware"]), str(r.get("reason") or ""), str(r.get("added_by") or ""),
                          time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(expires))) if expires else "never")
        common.out.print(table if rows else "no test is quarantined")

    @quarantine_app.command("rates")
    @errors
    def quarantine_rates(
        db: DbOpt = None,
        threshold: Annotated[float, typer.Option("--threshold", help="Flake rate automatic quarantine would act from.")] = 0.2,
        window: Annotated[int, typer.Option("--window", help="Runs per (test, hardware) the rate is read over.")] = 20,
        as_json: JsonOpt = False,
    ) -> None:
        """Flake rates per (test, hardware) over history, and which pairs automatic quarantine would take.

        Example: dtf quarantine rates --db results.duckdb --threshold 0.2
        """
        from ..flaky import DEFAULT_MIN_RUNS, Attempt, flake_rates, to_quarantine

        with common.open_store(_db(db)) as store:
            rows = store.attempt_rows()
        attempts = [Attempt(str(r["run_id"]), str(r["test_id"]), str(r["hardware"]), int(r["attempt"]), str(r["status"]),
                            float(r["finished_at"] or 0.0)) for r in rows]
        rates = sorted(flake_rates(attempts, window=window).values(), key=lambda r: (-r.rate, r.test_id, r.hardware))
        taken = {(r.test_id, r.hardware) for r in to_quarantine(rates, threshold=threshold)}
        out = [{**r.to_dict(), "would_quarantine": (r.test_id, r.hardware) in taken} for r in rates if r.flaky_runs]
        if as_json:
            common.out.print_json(json.dumps(out))
            return
        from rich.table import Table

        table = Table("test", "hardware", "flake rate", "flaky runs", "runs", "failed runs", "auto quarantine")
        for r in out:
            table.add_row(str(r["test_id"]), str(r["hardware"]), f"{float(r['flake_rate']):.0%}", str(r["flaky_runs"]),
                          str(r["runs"]), str(r["failed_runs"]), "yes" if r["would_quarantine"] else "")
        common.out.print(table if out else "no test was flaky in its last runs")
        common.info(f"automatic quarantine (DTF_AUTO_QUARANTINE={threshold:g}) takes pairs at or over the rate "
                    f"with at least {DEFAULT_MIN_RUNS} runs")

    app.add_typer(quarantine_app, name="quarantine")
