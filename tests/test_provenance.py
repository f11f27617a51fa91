"""Where a run came from: CI variables of each provider, else the local git checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dtf.provenance import provenance

SHA = "0123456789abcdef0123456789abcdef01234567"


def need_binary(name: str) -> str:
    """The path of a binary; skip locally when missing, fail under CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required under CI but is not installed")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture
def not_a_checkout(tmp_path: Path) -> str:
    """A directory no git repository contains, so the git fallback finds nothing."""
    path = tmp_path / "plain"
    path.mkdir()
    return str(path)


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[str, str]:
    """A real git repository with one commit on branch 'feature/x'; returns (path, sha)."""
    git = need_binary("git")
    repo = tmp_path / "repo"
    repo.mkdir()
    ident = ["-c", "user.name=dtf", "-c", "user.email=dtf@example.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run([git, "init", "-q", "-b", "feature/x"], cwd=repo, check=True)
    (repo / "suite.yaml").write_text("name: smoke\n")
    subprocess.run([git, "add", "suite.yaml"], cwd=repo, check=True)
    subprocess.run([git, *ident, "commit", "-q", "-m", "init"], cwd=repo, check=True)
    sha = subprocess.run([git, "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()
    return str(repo), sha


def test_github_actions_push_names_the_ref_and_the_run_url(not_a_checkout: str) -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": SHA, "GITHUB_REF_NAME": "main", "GITHUB_HEAD_REF": "",
           "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "org/models", "GITHUB_RUN_ID": "42"}
    assert provenance(env, not_a_checkout) == {
        "git_sha": SHA, "branch": "main", "ci_provider": "github",
        "ci_url": "https://github.com/org/models/actions/runs/42",
    }


def test_github_actions_pull_request_names_the_head_branch(not_a_checkout: str) -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": SHA, "GITHUB_REF_NAME": "17/merge", "GITHUB_HEAD_REF": "feature/y"}
    p = provenance(env, not_a_checkout)
    assert (p["branch"], p["ci_url"]) == ("feature/y", None)  # no URL without server, repo and run id


def test_gitlab_ci(not_a_checkout: str) -> None:
    env = {"GITLAB_CI": "true", "CI_COMMIT_SHA": SHA, "CI_COMMIT_REF_NAME": "main",
           "CI_JOB_URL": "https://gitlab.example/org/models/-/jobs/7"}
    assert provenance(env, not_a_checkout) == {
        "git_sha": SHA, "branch": "main", "ci_provider": "gitlab", "ci_url": "https://gitlab.example/org/models/-/jobs/7",
    }


def test_jenkins_prefers_branch_name_over_git_branch(not_a_checkout: str) -> None:
    env = {"JENKINS_URL": "https://ci.example/", "GIT_COMMIT": SHA, "BRANCH_NAME": "main",
           "GIT_BRANCH": "origin/main", "BUILD_URL": "https://ci.example/job/models/3/"}
    assert provenance(env, not_a_checkout) == {
        "git_sha": SHA, "branch": "main", "ci_provider": "jenkins", "ci_url": "https://ci.example/job/models/3/",
    }
    del env["BRANCH_NAME"]
    assert provenance(env, not_a_checkout)["branch"] == "origin/main"


def test_buildkite(not_a_checkout: str) -> None:
    env = {"BUILDKITE": "true", "BUILDKITE_COMMIT": SHA, "BUILDKITE_BRANCH": "release",
           "BUILDKITE_BUILD_URL": "https://buildkite.com/org/models/builds/9"}
    assert provenance(env, not_a_checkout) == {
        "git_sha": SHA, "branch": "release", "ci_provider": "buildkite",
        "ci_url": "https://buildkite.com/org/models/builds/9",
    }


def test_outside_ci_the_local_checkout_gives_sha_and_branch(checkout: tuple[str, str]) -> None:
    path, sha = checkout
    assert provenance({}, path) == {"git_sha": sha, "branch": "feature/x", "ci_provider": None, "ci_url": None}


def test_ci_values_win_over_the_local_checkout(checkout: tuple[str, str]) -> None:
    path, _ = checkout
    p = provenance({"GITLAB_CI": "true", "CI_COMMIT_SHA": SHA, "CI_COMMIT_REF_NAME": "main"}, path)
    assert (p["git_sha"], p["branch"]) == (SHA, "main")


def test_ci_without_a_sha_falls_back_to_the_checkout(checkout: tuple[str, str]) -> None:
    path, sha = checkout
    p = provenance({"BUILDKITE": "true"}, path)
    assert (p["git_sha"], p["branch"], p["ci_provider"]) == (sha, "feature/x", "buildkite")


def test_outside_ci_and_outside_a_checkout_everything_is_none(not_a_checkout: str) -> None:
    assert provenance({}, not_a_checkout) == {"git_sha": None, "branch": None, "ci_provider": None, "ci_url": None}


def test_a_missing_directory_is_not_an_error(tmp_path: Path) -> None:
    assert provenance({}, str(tmp_path / "does-not-exist"))["git_sha"] is None


def test_a_repository_without_commits_has_no_sha(tmp_path: Path) -> None:
    git = need_binary("git")
    subprocess.run([git, "init", "-q", str(tmp_path / "empty")], check=True)
    assert provenance({}, str(tmp_path / "empty"))["git_sha"] is None
