"""Every DuckDB file a user names with --db is opened locked down (issue 14, item 4): a
crafted file whose `runs` view reads a local file gets `dtf results --db`, `dtf report --db`
and `dtf runs --db` to exit 2 with one line, and the dashboard's file source to an error,
never the file's content nor a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import pytest

from dtf.dashboard import DbSource

from ..conftest import dtf_cmd, dtf_env

PLANTED = "planted-local-file-content-7f3a"


def crafted(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text(PLANTED)
    db = tmp_path / "crafted.duckdb"
    con = duckdb.connect(str(db))
    con.execute(f"CREATE VIEW runs AS SELECT 'r1' AS run_id, content AS suite_name, 0.0 AS submitted_at, "
                f"'passed' AS status FROM read_text('{secret}')")
    con.close()
    return db


@pytest.mark.parametrize("command", [["results", "r1", "--format", "json"], ["report", "r1", "--format", "json"],
                                     ["runs", "--format", "json"]])
def test_a_crafted_file_reads_no_local_file_and_fails_in_one_line(tmp_path: Path, command: list[str]) -> None:
    db = crafted(tmp_path)
    proc = subprocess.run(dtf_cmd(*command, "--db", str(db)), env=dtf_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert PLANTED not in proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_the_dashboard_file_source_is_locked_down(tmp_path: Path) -> None:
    source = DbSource(str(crafted(tmp_path)))
    with pytest.raises(duckdb.Error, match="disabled"):
        source._with_store(lambda store: store.query("SELECT * FROM runs"))
