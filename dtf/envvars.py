"""Every DTF_* environment variable, in one registry.

`Settings.from_env` reads the operator's variables, the secret scrub (`settings.SECRET_ENV_VARS`)
and the deploy scripts' variable lists (`deploy.ENV_VARS`) are derived from here, and
docs/environment.md is generated from it (`python -m dtf.envvars`). A test fails when a
`DTF_*` name appears in the package but not here. Pure: standard library only.

Two scopes: variables an operator sets for dtf's own processes (`OPERATOR_VARS`), and
variables the worker sets for the test process it starts (`TEST_VARS`), which a test reads.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["EnvVar", "OPERATOR_VARS", "TEST_VARS", "ALL_VARS", "SECRET_NAMES", "markdown"]


@dataclass(frozen=True)
class EnvVar:
    """One environment variable; `secret` ones are never logged, written to files or passed to tests."""

    name: str
    description: str
    secret: bool = False


OPERATOR_VARS: tuple[EnvVar, ...] = (
    EnvVar("DTF_BROKER_URL", "Broker URL without credentials, e.g. redis://host:6379/0 (rediss:// for TLS)."),
    EnvVar("DTF_SENTINELS", "Comma list of Redis Sentinel host:port; used instead of DTF_BROKER_URL."),
    EnvVar("DTF_SENTINEL_MASTER", "Sentinel master name (default mymaster)."),
    EnvVar("DTF_REDIS_PASSWORD", "Redis password; prefer DTF_REDIS_PASSWORD_FILE.", secret=True),
    EnvVar("DTF_REDIS_PASSWORD_FILE", "File holding the Redis password (read at start)."),
    EnvVar("DTF_REDIS_USERNAME", "Redis ACL user name."),
    EnvVar("DTF_DB", "Results store: a DuckDB file on local disk, or ducklake:<catalog> (docs/ha.md)."),
    EnvVar("DTF_DATA_PATH", "Where a DuckLake store keeps its Parquet files (shared by every host)."),
    EnvVar("DTF_DB_PASSWORD", "PostgreSQL password of a DuckLake catalog; prefer the _FILE form or PGPASSFILE.", secret=True),
    EnvVar("DTF_DB_PASSWORD_FILE", "File holding the DuckLake catalog's PostgreSQL password."),
    EnvVar("DTF_WORKER_NAME", "Worker name (default: the host name)."),
    EnvVar("DTF_TAGS", "Comma list of tags a worker offers to suites' requires: {tags: [...]}, e.g. a100,nvlink."),
    EnvVar("DTF_QUEUES", "Comma list of queues to consume (default: from detected hardware)."),
    EnvVar("DTF_CONCURRENCY", "Tests a worker runs at once."),
    EnvVar("DTF_PROFILE", "Run profile: benchmark, test or light."),
    EnvVar("DTF_LOG_LEVEL", "Log level: DEBUG, INFO, WARNING, ERROR."),
    EnvVar("DTF_SPOOL_DIR", "Directory where a worker keeps results until they are published."),
    EnvVar("DTF_STATE_DIR", "Local state of dtf processes (default $XDG_STATE_HOME/dtf or ~/.local/state/dtf)."),
    EnvVar("DTF_HEALTH_TIMEOUT", "Seconds `dtf worker-health` waits for the worker's answer (default 10)."),
    EnvVar("DTF_FLOWER_BASIC_AUTH", "Flower basic auth user:password; prefer the _FILE form.", secret=True),
    EnvVar("DTF_FLOWER_BASIC_AUTH_FILE", "File holding Flower basic auth user:password."),
    EnvVar("DTF_TLS_CA", "CA bundle that verifies the Redis server (rediss://)."),
    EnvVar("DTF_TLS_CERT", "Client certificate for Redis TLS."),
    EnvVar("DTF_TLS_KEY", "Client key for Redis TLS (a path, not the key)."),
    EnvVar("DTF_TEMPLATES", "Extra test template folders (comma or path-separator list)."),
    EnvVar("DTF_VISIBILITY_TIMEOUT", "Seconds before an unacknowledged test is redelivered."),
    EnvVar("DTF_SIGNING_KEY", "Shared HMAC key(s) that sign every message, one per line.", secret=True),
    EnvVar("DTF_SIGNING_KEY_FILE", "File holding the signing key(s)."),
    EnvVar("DTF_SIGNING_MAX_AGE", "Seconds a signed message stays valid."),
    EnvVar("DTF_RESULT_BATCH_SIZE", "Results the coordinator writes per batch at most."),
    EnvVar("DTF_RESULT_BATCH_MS", "Milliseconds the coordinator lets a batch fill while results keep arriving; idle, it writes at once."),
    EnvVar("DTF_MAX_PAYLOAD_BYTES", "Largest message dtf publishes."),
    EnvVar("DTF_SENTINEL_PASSWORD", "Password of the Sentinels themselves; prefer the _FILE form.", secret=True),
    EnvVar("DTF_SENTINEL_PASSWORD_FILE", "File holding the Sentinel password."),
    EnvVar("DTF_REDIS_SOCKET_TIMEOUT", "Seconds a Redis call may block before it fails."),
    EnvVar("DTF_LEADER_TTL_MS", "Lease of the leader coordinator, in milliseconds."),
    EnvVar("DTF_CONTROL_VISIBILITY_TIMEOUT", "Seconds before an unacknowledged coordinator request is redelivered."),
    EnvVar("DTF_RECONCILE_GRACE", "Seconds past its timeout before a silent test is published again."),
    EnvVar("DTF_AUTO_QUARANTINE", "Flake rate (0-1) from which the coordinator quarantines a test on a hardware kind; unset: off."),
    EnvVar("DTF_MAX_CPU_PERCENT", "Resource guard: a worker takes no new tests while CPU use is above this."),
    EnvVar("DTF_MAX_MEMORY_PERCENT", "Resource guard: a worker takes no new tests while memory use is above this."),
    EnvVar("DTF_MAX_GPU_MEMORY_PERCENT", "Resource guard: no new tests while any GPU's memory use is above this."),
    EnvVar("DTF_GUARD_COOLDOWN", "Seconds below every guard limit before a worker takes tests again."),
    EnvVar("DTF_MAX_REJECTIONS", "Hand-backs of a test too big for the workers that took it before it fails."),
    EnvVar("DTF_HEARTBEAT_INTERVAL", "Seconds between a worker's heartbeats to the coordinator."),
    EnvVar("DTF_HEALTHCHECK_INTERVAL", "Seconds between a worker's known-answer health checks per hardware kind (default 600)."),
    EnvVar("DTF_HEALTHCHECK_FAIL", "Test hook: a comma list of hardware kinds (or all) whose health check fails; never set in production."),
    EnvVar("DTF_TASK_EVENTS", "1: workers send Celery task events from the start (Flower turns them on itself)."),
    EnvVar("DTF_DASHBOARD_BASIC_AUTH", "Dashboard basic auth user:password; prefer the _FILE form.", secret=True),
    EnvVar("DTF_DASHBOARD_BASIC_AUTH_FILE", "File holding dashboard basic auth user:password."),
    EnvVar("DTF_INSECURE_NO_SIGNING", "1: run unsigned (anyone who can write to the queues runs code on the workers)."),
    EnvVar("DTF_ORT_WEB_DIR", "Where onnxruntime-web is installed for webgpu model tests (default under the state directory)."),
    EnvVar("DTF_CHROMIUM", "The Chromium binary for webgpu tests (default: the first chromium on PATH)."),
    EnvVar("DTF_FORK_SERVER", "0: start every test with a fresh interpreter instead of forking from the fork server."),
)

TEST_VARS: tuple[EnvVar, ...] = (
    EnvVar("DTF_RESULT_FILE", "Set for a test process: where the harness writes the test's outcome."),
    EnvVar("DTF_HARDWARE", "Set for a test task: the hardware kind it runs on (cpu, cuda, ...)."),
    EnvVar("DTF_DEVICE", "Set for a test task: the torch device string for that hardware."),
    EnvVar("DTF_PYTEST_CASES", "Set for a test task: where the pytest plugin writes one record per case."),
)
ALL_VARS: tuple[EnvVar, ...] = OPERATOR_VARS + TEST_VARS
SECRET_NAMES: tuple[str, ...] = tuple(var.name for var in ALL_VARS if var.secret)


def markdown() -> str:
    """docs/environment.md: one table per scope."""
    lines = ["# Environment variables", "",
             "Generated from `dtf/envvars.py` by `python -m dtf.envvars > docs/environment.md`; a test keeps them equal.",
             "Secret values are never logged, written into generated files or passed to tests; each has a `_FILE` form.",
             "", "## Set by an operator", "", "| variable | secret | meaning |", "|---|---|---|"]
    lines += [f"| `{v.name}` | {'yes' if v.secret else ''} | {v.description} |" for v in OPERATOR_VARS]
    lines += ["", "## Set by dtf for a test process", "", "| variable | meaning |", "|---|---|"]
    lines += [f"| `{v.name}` | {v.description} |" for v in TEST_VARS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
