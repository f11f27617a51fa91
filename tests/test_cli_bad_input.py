"""Bad input through the real CLI: one clear line naming the file and field, exit 2,
no traceback, and nothing published."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, dtf_cmd, dtf_env

GOOD = "name: s\nmodels: [gpt2]\nhardware: [cpu]\nbatch_sizes: [1]\n"

CASES = {
    "missing_models": ("name: s\nhardware: [cpu]\nbatch_sizes: [1]\n", "models"),
    "zero_batch": ("name: s\nmodels: [gpt2]\nhardware: [cpu]\nbatch_sizes: [0]\n", "batch_sizes[0]"),
    "word_batch": ("name: s\nmodels: [gpt2]\nhardware: [cpu]\nbatch_sizes: [four]\n", "batch_sizes[0]"),
    "unknown_hardware": ("name: s\nmodels: [gpt2]\nhardware: [cpu, tpu]\nbatch_sizes: [1]\n", "tpu"),
    "yaml_syntax": ("name: s\nmodels: [gpt2\nhardware: [cpu]\n", "line"),
    "empty_file": ("", "empty"),
    "unknown_template": ("name: s\nmodels: [{name: gpt2, template: nope/none}]\nhardware: [cpu]\nbatch_sizes: [1]\n",
                         "nope/none"),
}


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dtf_cmd(*args), env=dtf_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_suite_is_one_line_naming_file_and_field_with_exit_2(tmp_path: Path, case: str) -> None:
    text, expected = CASES[case]
    suite = tmp_path / f"{case}.yaml"
    suite.write_text(text)
    proc = run_cli(tmp_path, "run", str(suite), "--db", str(tmp_path / "x.duckdb"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(suite.name) in lines[0] or case == "unknown_template"
    assert expected in lines[0]
    assert not (tmp_path / "x.duckdb").exists(), "bad input must fail before anything runs"


def test_a_10_mb_suite_is_refused_without_parsing(tmp_path: Path) -> None:
    suite = tmp_path / "huge.yaml"
    suite.write_text(GOOD + "# " + "x" * (10 * 1024 * 1024) + "\n")
    proc = run_cli(tmp_path, "run", str(suite))
    assert proc.returncode == 2
    assert "huge.yaml" in proc.stderr and "cap" in proc.stderr


def test_missing_suite_file_is_exit_2(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr


def test_submit_without_a_broker_says_how_to_configure_one(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(GOOD)
    proc = run_cli(tmp_path, "submit", str(suite))
    assert proc.returncode == 2
    assert "DTF_BROKER_URL" in proc.stderr


def test_templates_list_names_every_builtin_family(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "templates", "list")
    assert proc.returncode == 0, proc.stderr
    for family in ("text_embedding", "text_generation", "vision", "audio", "multimodal", "generic"):
        assert f"{family}/" in proc.stdout


def test_templates_render_prints_python_that_compiles(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "templates", "render", "text_embedding/cpu", "--model", "bert-base-uncased",
                   "--hardware", "cpu", "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    compile(proc.stdout, "rendered.py", "exec")
    assert "'bert-base-uncased'" in proc.stdout


def test_templates_render_of_a_traversal_name_is_not_found(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "templates", "render", "../../etc/passwd")
    assert proc.returncode == 2
    assert "template not found" in proc.stderr


def test_every_command_has_a_docstring_with_an_example() -> None:
    from dtf.cli import app, templates_app

    commands = [*app.registered_commands, *templates_app.registered_commands]
    assert len(commands) >= 10
    for command in commands:
        doc = command.callback.__doc__ or ""
        name = command.name or command.callback.__name__
        if name == "version":
            continue
        assert "Example:" in doc, name
    readme = (REPO / "README.md").read_text()
    for command in app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        assert f"dtf {name}" in readme, f"README does not document dtf {name}"
