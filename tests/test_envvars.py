"""The one registry of DTF_* environment variables: every name the package uses is in it,
the secret scrub and the deploy lists come from it, and docs/environment.md is its output."""

from __future__ import annotations

import re
import subprocess
import sys

from dtf import deploy, envvars, settings

from .conftest import REPO


def test_every_dtf_variable_named_in_the_package_is_registered() -> None:
    used = {name for path in (REPO / "dtf").rglob("*.py") if "_templates" not in path.parts
            for name in re.findall(r"\bDTF_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8"))}
    registered = {var.name for var in envvars.ALL_VARS}
    assert used - registered == set(), "add these to dtf/envvars.py"
    assert registered - used == set(), "these are registered but nothing reads them"


def test_names_are_unique_and_every_secret_has_a_file_form() -> None:
    names = [var.name for var in envvars.ALL_VARS]
    assert len(names) == len(set(names))
    assert all(f"{name}_FILE" in names for name in envvars.SECRET_NAMES)


def test_the_scrub_and_the_deploy_lists_come_from_the_registry() -> None:
    assert set(settings.SECRET_ENV_VARS) == set(envvars.SECRET_NAMES)
    assert deploy.ENV_VARS == envvars.OPERATOR_VARS
    assert not {v.name for v in envvars.TEST_VARS} & deploy.ENV_VAR_NAMES  # never written into deploy files


def test_the_docs_table_is_the_registry() -> None:
    generated = subprocess.run([sys.executable, "-m", "dtf.envvars"], capture_output=True, text=True, check=True,
                               cwd=REPO).stdout
    assert (REPO / "docs" / "environment.md").read_text(encoding="utf-8") == generated
