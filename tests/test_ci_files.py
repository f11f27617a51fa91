"""The CI files in ci/: they parse, call only commands and options the dtf CLI really
has, pass shellcheck, and ci/submit-and-wait.sh works for real against a local Redis,
coordinator and worker (exit 0 for a passing suite, 1 and a JUnit failure for a failing one)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import junitparser
import pytest
import typer.main
import yaml

from dtf.cli import app

from .conftest import REPO, RedisServer, coordinator_and_worker, dtf_env, need_binary

CI = REPO / "ci"
GITHUB = CI / "github" / "dtf.yml"
GITLAB = CI / "gitlab" / ".gitlab-ci.yml"
BUILDKITE = CI / "buildkite" / "pipeline.yml"
JENKINS = CI / "jenkins" / "Jenkinsfile"
SCRIPT = CI / "submit-and-wait.sh"
PROBE_TEMPLATES = REPO / "tests" / "fixtures" / "pipeline_templates"


def cli_options() -> dict[str, set[str]]:
    """{command: its option spellings}, from the typer app itself."""
    group = typer.main.get_command(app)
    assert hasattr(group, "commands")
    return {name: {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
            for name, cmd in group.commands.items()}


def test_the_introspection_sees_the_real_commands() -> None:
    options = cli_options()
    registered = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    assert {"submit", "coordinator", "worker", "report"} <= set(options) and "submit" in registered
    assert {"--wait", "--timeout", "--output-dir", "--baseline", "--fail-on-regression"} <= options["submit"]


def github() -> dict[str, Any]:
    return yaml.safe_load(GITHUB.read_text())


def gitlab() -> dict[str, Any]:
    return yaml.safe_load(GITLAB.read_text())


def github_scripts() -> list[str]:
    return [step["run"] for step in github()["jobs"]["dtf"]["steps"] if "run" in step]


def gitlab_script() -> str:
    return "\n".join(gitlab()["dtf"]["script"])


def buildkite_scripts() -> list[str]:
    return [step["command"] for step in yaml.safe_load(BUILDKITE.read_text())["steps"]]


def jenkins_scripts() -> list[str]:
    """The shell blocks (sh '''...''') of the Jenkinsfile."""
    return re.findall(r"sh '''(.*?)'''", JENKINS.read_text(), flags=re.S)


def scripts_of(source: str) -> list[str]:
    return {"github": github_scripts, "gitlab": lambda: [gitlab_script()], "buildkite": buildkite_scripts,
            "jenkins": jenkins_scripts}[source]()


def dtf_calls(script: str) -> Iterator[list[str]]:
    """Every `dtf ...` command line in a shell script, as words."""
    text = script.replace("\\\n", " ")
    for line in text.splitlines():
        for match in re.finditer(r"(?:^|[;&|(]\s*|nohup\s+)dtf\s+([^;&|>]*)", line.strip()):
            yield shlex.split(match.group(1), comments=True)


def script_submit_options() -> set[str]:
    """The options ci/submit-and-wait.sh passes to `dtf submit`."""
    text = SCRIPT.read_text()
    return set(re.findall(r"(--[a-z][a-z-]+)", " ".join(re.findall(r"args\+?=\((.*)\)", text))))


@pytest.mark.parametrize(("schema", "path"), [("vendor.github-workflows", GITHUB), ("vendor.gitlab-ci", GITLAB),
                                              ("vendor.buildkite", BUILDKITE)])
def test_the_pipelines_pass_their_platforms_schema(schema: str, path: Path) -> None:
    """GitHub's workflow schema and GitLab's CI schema, as check-jsonschema ships them (offline)."""
    check = REPO / ".venv" / "bin" / "check-jsonschema"
    command = [str(check)] if check.exists() else [sys.executable, "-m", "check_jsonschema"]
    pytest.importorskip("check_jsonschema")
    proc = subprocess.run([*command, "--builtin-schema", schema, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_github_workflow_runs_redis_a_coordinator_workers_and_submit_and_wait() -> None:
    doc = github()
    triggers = doc.get("on", doc.get(True))
    assert {"push", "pull_request"} <= set(triggers)
    job = doc["jobs"]["dtf"]
    assert job["services"]["redis"]["image"].startswith("redis:")
    assert "matrix" in job["strategy"] and job["runs-on"] == "${{ matrix.runner }}"
    default_matrix = re.search(r"'(\{.*\})'", job["strategy"]["matrix"]).group(1)
    import json

    legs = json.loads(default_matrix)["include"]
    assert legs and all({"hardware", "runner", "queues", "suite"} <= set(leg) for leg in legs)
    assert all((REPO / leg["suite"]).is_file() for leg in legs)
    runs = "\n".join(github_scripts())
    assert "dtf coordinator" in runs and "dtf worker" in runs and "ci/submit-and-wait.sh" in runs
    uses = {step.get("uses", "").split("@")[0]: step for step in job["steps"]}
    assert uses["actions/upload-artifact"]["if"] == "always()"
    assert "dtf-reports/" in uses["actions/upload-artifact"]["with"]["path"]
    assert "GITHUB_STEP_SUMMARY" in SCRIPT.read_text()


def test_the_gitlab_pipeline_runs_redis_a_coordinator_workers_and_keeps_junit() -> None:
    job = gitlab()["dtf"]
    assert job["services"][0]["name"].startswith("redis:") and job["services"][0]["alias"] == "redis"
    assert job["parallel"]["matrix"] and job["tags"] == ["$DTF_RUNNER_TAG"]
    assert all((REPO / leg["DTF_SUITE"]).is_file() for leg in job["parallel"]["matrix"])
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["reports"]["junit"] == "dtf-reports/junit.xml"
    script = gitlab_script()
    assert "dtf coordinator" in script and "dtf worker" in script and "ci/submit-and-wait.sh" in script
    assert script.strip().endswith('exit "$status"')


SOURCES = ["github", "gitlab", "buildkite", "jenkins"]


@pytest.mark.parametrize("source", SOURCES)
def test_ci_files_use_only_commands_and_options_the_cli_has(source: str) -> None:
    options = cli_options()
    scripts = scripts_of(source)
    calls = [words for s in scripts for words in dtf_calls(s)]
    assert len(calls) >= 2
    for words in calls:
        command, rest = words[0], words[1:]
        assert command in options, f"{source}: unknown command dtf {command}"
        for word in rest:
            if word.startswith("-"):
                assert word.split("=")[0] in options[command], f"{source}: dtf {command} has no option {word}"


def test_the_script_passes_only_options_dtf_submit_has() -> None:
    used = script_submit_options()
    assert {"--wait", "--timeout", "--output-dir", "--baseline", "--fail-on-regression"} == used
    assert used <= cli_options()["submit"]


def shellcheck(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need_binary("shellcheck"), "--shell=bash", str(path)], capture_output=True, text=True)


def test_the_script_passes_shellcheck() -> None:
    proc = shellcheck(SCRIPT)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("source", SOURCES)
def test_the_pipelines_shell_steps_pass_shellcheck(source: str, tmp_path: Path) -> None:
    scripts = scripts_of(source)
    for i, script in enumerate(scripts):
        # CI expressions are substituted before the shell sees the text.
        text = re.sub(r"\$\{\{[^}]*\}\}", "x", script)
        path = tmp_path / f"step{i}.sh"
        path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + text + "\n")
        proc = shellcheck(path)
        assert proc.returncode == 0, f"{source} step {i}:\n{text}\n{proc.stdout}"


# -- the script, for real ------------------------------------------------------------------------------
PASSING = "name: ci-pass\nsource: synthetic\ndefaults: {iterations: 10, warmup: 1, retries: 0}\nmodels: [mlp-ci]\nhardware: [cpu]\nbatch_sizes: [1]\n"
FAILING = ("name: ci-fail\nsource: synthetic\ndefaults: {iterations: 10, warmup: 1, retries: 0}\nmodels:\n  - mlp-ci\n"
           "  - {name: broken-model, family: probe, template: probe/fail}\nhardware: [cpu]\nbatch_sizes: [1]\n")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    """One redis-server, coordinator and worker for the script runs of this module."""
    root = tmp_path_factory.mktemp("ci-cluster")
    with coordinator_and_worker(root, "ci@test") as redis:
        yield redis, root


def run_script(cluster: tuple[RedisServer, Path], tmp_path: Path, suite_text: str, *args: str,
               env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    redis, _ = cluster
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text)
    reports = tmp_path / "reports"
    env_ = dtf_env(DTF_BROKER_URL=redis.url, DTF_REPORT_DIR=str(reports), DTF_WAIT_TIMEOUT="240",
                  DTF_CMD=f"{shlex.quote(sys.executable)} -m dtf.cli", GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"))
    proc = subprocess.run(["bash", str(SCRIPT), str(suite), *args], env={**env_, **(env or {})}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    return proc, reports


@pytest.mark.slow
@pytest.mark.redis
def test_the_script_exits_0_for_a_passing_suite_and_leaves_reports(cluster: tuple[RedisServer, Path], tmp_path: Path) -> None:
    proc, reports = run_script(cluster, tmp_path, PASSING)
    assert proc.returncode == 0, proc.stderr + (cluster[1] / "logs" / "coordinator.log").read_text()
    assert sorted(p.name for p in reports.iterdir()) == ["comment.md", "junit.xml", "report.html", "report.json", "report.md"]
    xml = junitparser.JUnitXml.fromfile(str(reports / "junit.xml"))
    assert [(c.name, c.is_passed) for s in xml for c in s] == [("bs1 fp32", True)]
    assert (tmp_path / "summary.md").read_text().startswith("## ✅ dtf: passed")
    comment = (reports / "comment.md").read_text()
    assert comment.startswith("<!-- dtf-report -->\n## ✅ dtf: passed") and comment.endswith((reports / "report.md").read_text())
    assert "1/1 done, passed 1" in proc.stderr  # plain progress lines, as CI logs want


@pytest.mark.slow
@pytest.mark.redis
def test_the_script_exits_1_for_a_failing_suite_and_junit_shows_the_failure(cluster: tuple[RedisServer, Path], tmp_path: Path) -> None:
    proc, reports = run_script(cluster, tmp_path, FAILING, "--templates", str(PROBE_TEMPLATES))
    assert proc.returncode == 1, proc.stderr
    xml = junitparser.JUnitXml.fromfile(str(reports / "junit.xml"))
    results = {c.classname: c for s in xml for c in s}
    assert results["unknown.mlp-ci"].is_passed
    (failure,) = results["probe.broken-model"].result
    assert isinstance(failure, junitparser.Failure) and "fails by design" in failure.message
    assert "AssertionError" in failure.text
    assert "❌ 1 failed" in (reports / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.redis
def test_the_comment_body_is_cut_at_its_limit_with_a_note(cluster: tuple[RedisServer, Path], tmp_path: Path) -> None:
    proc, reports = run_script(cluster, tmp_path, PASSING, env={"DTF_COMMENT_MAX": "120"})
    assert proc.returncode == 0, proc.stderr
    comment = (reports / "comment.md").read_text()
    assert len((reports / "report.md").read_text()) > 120
    assert comment.endswith("_Cut at 120 characters: the full report is in the build artifacts._\n")
    assert len(comment) < 120 + 120


@pytest.mark.redis
def test_the_script_without_a_broker_says_so_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in dtf_env().items() if k != "DTF_BROKER_URL"}
    proc = subprocess.run(["bash", str(SCRIPT), "suite.yaml"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "DTF_BROKER_URL" in proc.stderr
