"""Where a run came from: git commit and branch, and the CI job when there is one."""

from __future__ import annotations

import os
import subprocess
from typing import Mapping

__all__ = ["provenance"]


def _git(args: list[str], cwd: str | None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _ci(env: Mapping[str, str]) -> dict[str, str | None]:
    if env.get("GITHUB_ACTIONS"):
        url = None
        if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
            url = f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return {"provider": "github", "sha": env.get("GITHUB_SHA"),
                "branch": env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME"), "url": url}
    if env.get("GITLAB_CI"):
        return {"provider": "gitlab", "sha": env.get("CI_COMMIT_SHA"),
                "branch": env.get("CI_COMMIT_REF_NAME"), "url": env.get("CI_JOB_URL")}
    if env.get("JENKINS_URL"):
        return {"provider": "jenkins", "sha": env.get("GIT_COMMIT"),
                "branch": env.get("BRANCH_NAME") or env.get("GIT_BRANCH"), "url": env.get("BUILD_URL")}
    if env.get("BUILDKITE"):
        return {"provider": "buildkite", "sha": env.get("BUILDKITE_COMMIT"),
                "branch": env.get("BUILDKITE_BRANCH"), "url": env.get("BUILDKITE_BUILD_URL")}
    return {"provider": None, "sha": None, "branch": None, "url": None}


def provenance(env: Mapping[str, str] | None = None, cwd: str | None = None) -> dict[str, str | None]:
    """{git_sha, branch, ci_provider, ci_url} from CI variables, else from the local git checkout."""
    env = os.environ if env is None else env
    ci = _ci(env)
    sha = ci["sha"] or _git(["rev-parse", "HEAD"], cwd)
    branch = ci["branch"] or _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
    return {"git_sha": sha, "branch": branch, "ci_provider": ci["provider"], "ci_url": ci["url"]}
