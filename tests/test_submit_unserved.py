"""A cpu + cuda suite (like the README's distributed example) on a CPU-only cluster: `dtf
submit --wait` names the hardware no worker serves, skips its tests and finishes; a run left
waiting for such hardware does not keep `--baseline latest` from finding its cpu half.
The tests are trivial ones, so the check does not depend on how heavy the examples are."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import REPO, Processes, RedisServer, dtf_cmd
from .dtf_cluster import Cluster

QUICK = REPO / "tests" / "ha" / "templates" / "ha" / "quick.py.j2"


def _suite(tmp_path: Path) -> tuple[Path, Path]:
    """(suite, templates folder): 5 models x bs 1, 2 on cpu and cuda, a trivial passing test."""
    folder = tmp_path / "tpl" / "unserved"
    folder.mkdir(parents=True)
    (folder / "quick.py.j2").write_text(QUICK.read_text())
    (folder / "template.yaml").write_text(
        "variants:\n  quick:\n    description: passes\n    families: [ha]\n    hardware: [cpu, cuda]\n"
        "    parameters:\n      sleep_s: {default: 0.0, description: seconds}\n")
    suite = tmp_path / "mixed.yaml"
    suite.write_text(
        "name: mixed\ndefaults: {timeout_s: 60, iterations: 1, warmup: 0, retries: 0}\nmodels:\n"
        + "".join(f"  - {{name: m{i}, family: ha, template: unserved/quick}}\n" for i in range(5))
        + "hardware: [cpu, cuda]\nbatch_sizes: [1, 2]\nprecisions: [fp32]\n")
    return suite, tmp_path / "tpl"


def _submit(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    suite, templates = _suite(cluster.tmp) if not (cluster.tmp / "mixed.yaml").exists() else (
        cluster.tmp / "mixed.yaml", cluster.tmp / "tpl")
    return subprocess.run(dtf_cmd("submit", str(suite), "--templates", str(templates), *args), env=cluster.env,
                          cwd=cluster.tmp, capture_output=True, text=True, timeout=600)


def test_submit_wait_skips_unserved_hardware_and_finishes(tmp_path: Path, redis_server: RedisServer,
                                                          processes: Processes) -> None:
    cluster = Cluster(tmp_path, redis_server, processes)
    cluster.start_coordinator()
    cluster.start_worker("cpu-only@test")

    # Left waiting for cuda: submitted without --wait, it stays running with its cpu half done.
    waiting = _submit(cluster)
    assert waiting.returncode == 0, waiting.stderr
    waiting_id = waiting.stdout.strip().splitlines()[0]
    assert "no live worker serves cuda: its 10 tests wait until one starts" in waiting.stderr

    done = _submit(cluster, "--wait", "--timeout", "300", "--format", "json", "--output-dir", str(tmp_path / "r"),
                   "--baseline", "latest")
    assert done.returncode == 0, done.stderr
    assert "warning: no live worker serves cuda: its 10 tests are skipped (--wait-unserved waits for one)" in done.stderr
    data = json.loads(done.stdout[done.stdout.index("{"):])
    by_hw: dict[str, set[str]] = {}
    for t in data["tests"]:
        by_hw.setdefault(t["hardware"], set()).add(t["status"])
    assert by_hw == {"cpu": {"passed"}, "cuda": {"skipped"}}
    assert all("no live worker served cuda" in (t.get("reason") or "") for t in data["tests"] if t["hardware"] == "cuda")
    assert data["run"]["status"] == "passed"

    # The run still waiting for cuda is the cpu baseline: its cpu tests are all final.
    assert cluster.client.call("status", run_id=waiting_id)["run"]["status"] == "running"
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [r["run_id"] for r in report["baseline"]["runs"]] == [waiting_id]
