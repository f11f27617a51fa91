"""What the store answers about the past: the rows predictions, flake rates and the result
cache are computed from, the quarantine list, and the backlog scaling advice reads.

A mixin of `Store` (dtf/store/base.py), so both backends (the local file and DuckLake)
answer it with the same SQL; the logic over the rows lives in the pure modules
(dtf/predict.py, dtf/flaky.py, dtf/cache.py, dtf/scale.py).
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

__all__ = ["HistoryQueries", "HISTORY_ROWS"]

HISTORY_ROWS = 200_000  # the newest passed attempts a prediction reads, at most


class HistoryQueries:
    """Mixed into `Store`: uses its ``query``, ``_transaction``, ``_fence`` and ``_upsert``."""

    def history_rows(self, hardware: Sequence[str] | None = None, *, limit: int = HISTORY_ROWS) -> list[dict[str, Any]]:
        """Passed attempts joined with their test rows, newest first: what dtf.predict.observations reads."""
        kinds = list(hardware) if hardware else None  # None: every hardware kind
        return self.query(  # type: ignore[attr-defined, no-any-return]
            """SELECT t.test_id, t.model, t.family, t.hardware, t.batch_size, t.precision,
                      r.duration_s, r.peak_memory_mb
               FROM results r JOIN tests t ON t.run_id = r.run_id AND t.test_id = r.test_id
               WHERE r.status = 'passed' AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], t.hardware))
               ORDER BY r.finished_at DESC LIMIT ?""", [kinds, kinds, limit])

    def attempt_rows(self, *, limit: int = 500_000) -> list[dict[str, Any]]:
        """Every attempt's (run, test, hardware, attempt, status, finished_at): what flake rates read."""
        return self.query(  # type: ignore[attr-defined, no-any-return]
            """SELECT r.run_id, r.test_id, t.hardware, r.attempt, r.status, r.finished_at
               FROM results r JOIN tests t ON t.run_id = r.run_id AND t.test_id = r.test_id
               ORDER BY r.finished_at DESC LIMIT ?""", [limit])

    def cache_candidates(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """Passed attempts of tests whose stored spec carries one of these cache keys."""
        if not keys:
            return []
        return self.query(  # type: ignore[attr-defined, no-any-return]
            """SELECT json_extract_string(t.spec, '$.cache_key') AS key, r.run_id, r.test_id, r.attempt,
                      t.hardware, r.duration_s, r.finished_at, r.metrics
               FROM results r JOIN tests t ON t.run_id = r.run_id AND t.test_id = r.test_id
               WHERE r.status = 'passed' AND list_contains(?, json_extract_string(t.spec, '$.cache_key'))""",
            [list(dict.fromkeys(keys))])

    # -- quarantine -------------------------------------------------------------------------
    def quarantine_add(self, test_id: str, hardware: str, reason: str, *, added_by: str = "user",
                       expires_at: float | None = None, token: int = 0) -> None:
        with self._transaction() as con:  # type: ignore[attr-defined]
            self._fence(con, token)  # type: ignore[attr-defined]
            self._upsert(  # type: ignore[attr-defined]
                con, "quarantine",
                "SELECT ? AS test_id, ? AS hardware, ? AS reason, ? AS added_by, ? AS added_at, ? AS expires_at",
                [test_id, hardware, reason, added_by, time.time(), expires_at],
                ["reason", "added_by", "added_at", "expires_at"])

    def quarantine_remove(self, test_id: str, hardware: str = "*", *, token: int = 0) -> int:
        """Take a test off quarantine (``hardware`` '*': the every-kind entry; None: all of its entries)."""
        with self._transaction() as con:  # type: ignore[attr-defined]
            self._fence(con, token)  # type: ignore[attr-defined]
            before = con.execute("SELECT count(*) FROM quarantine WHERE test_id = ?", [test_id]).fetchone()[0]
            con.execute("DELETE FROM quarantine WHERE test_id = ? AND hardware = ?", [test_id, hardware])
            after = con.execute("SELECT count(*) FROM quarantine WHERE test_id = ?", [test_id]).fetchone()[0]
        return int(before) - int(after)

    def quarantined(self, now: float | None = None) -> list[dict[str, Any]]:
        """The entries in force (not expired), by test and hardware."""
        now = time.time() if now is None else now
        return self.query(  # type: ignore[attr-defined, no-any-return]
            "SELECT * FROM quarantine WHERE expires_at IS NULL OR expires_at > ? ORDER BY test_id, hardware", [now])

    def scale_advice(self, now: float) -> list[dict[str, Any]]:
        """dtf/scale.py's advice per queue, from the backlog and the live workers (``dtf scale``)."""
        from ..scale import advise, loads_from_rows

        loads = loads_from_rows(self.backlog_rows(), self.workers(), now=now)  # type: ignore[attr-defined]
        return [a.to_dict() for a in advise(loads)]

    # -- scaling ------------------------------------------------------------------------------
    def backlog_rows(self) -> list[dict[str, Any]]:
        """Tests of running runs that wait or run: hardware, status and predicted seconds."""
        rows = self.query(  # type: ignore[attr-defined]
            """SELECT t.hardware, t.status, json_extract(t.spec, '$.predicted_s') AS predicted_s
               FROM tests t JOIN runs r ON r.run_id = t.run_id
               WHERE r.status = 'running' AND t.status IN ('pending', 'queued', 'running')""")
        for row in rows:
            value = row.get("predicted_s")
            try:
                row["predicted_s"] = float(json.loads(value)) if value not in (None, "null") else None
            except (TypeError, ValueError):
                row["predicted_s"] = None
        return rows  # type: ignore[no-any-return]
