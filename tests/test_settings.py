"""Settings from flags, then DTF_* variables, then defaults; secrets that never show."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dtf.errors import DtfError
from dtf.settings import EMBEDDED_BROKER, Settings, redact_url

SECRET = "s3cr3t-p@ss:word/with?odd#chars"


def test_with_no_environment_every_value_is_its_default() -> None:
    assert Settings.from_env({}) == Settings()
    s = Settings()
    assert (s.broker_url, s.db_path, s.embedded) == (EMBEDDED_BROKER, "dtf.duckdb", True)


def test_environment_variables_set_their_fields() -> None:
    s = Settings.from_env({
        "DTF_BROKER_URL": "redis://r:6379/0", "DTF_DB": "/var/lib/dtf.duckdb", "DTF_SENTINEL_MASTER": "m1",
        "DTF_REDIS_USERNAME": "dtf", "DTF_TLS_CA": "/ca.pem", "DTF_SPOOL_DIR": "/spool", "DTF_LOG_LEVEL": "INFO",
        "DTF_VISIBILITY_TIMEOUT": "7200", "DTF_RESULT_BATCH_SIZE": "100", "DTF_RESULT_BATCH_MS": "50",
        "DTF_MAX_PAYLOAD_BYTES": "2048",
    })
    assert (s.broker_url, s.db_path, s.sentinel_master, s.redis_username) == (
        "redis://r:6379/0", "/var/lib/dtf.duckdb", "m1", "dtf")
    assert (s.tls_ca, s.spool_dir, s.log_level) == ("/ca.pem", "/spool", "INFO")
    assert (s.visibility_timeout_s, s.result_batch_size, s.result_batch_ms, s.max_payload_bytes) == (7200, 100, 50, 2048)
    assert not s.embedded


def test_flags_win_over_environment_and_an_unset_flag_does_not() -> None:
    env = {"DTF_DB": "from-env.duckdb", "DTF_RESULT_BATCH_SIZE": "100"}
    s = Settings.from_env(env, db_path="from-flag.duckdb", result_batch_size=None)
    assert (s.db_path, s.result_batch_size) == ("from-flag.duckdb", 100)


def test_empty_environment_variables_count_as_unset() -> None:
    assert Settings.from_env({"DTF_DB": "", "DTF_VISIBILITY_TIMEOUT": "", "DTF_SENTINELS": ""}) == Settings()


def test_a_non_integer_where_an_integer_belongs_names_the_variable() -> None:
    with pytest.raises(DtfError, match="DTF_RESULT_BATCH_MS: expected an integer, got 'fast'"):
        Settings.from_env({"DTF_RESULT_BATCH_MS": "fast"})


def test_task_events_are_off_by_default_and_a_flag_variable_switches_them() -> None:
    assert Settings().task_events is False
    assert Settings.from_env({"DTF_TASK_EVENTS": "yes"}).task_events is True
    assert Settings.from_env({"DTF_TASK_EVENTS": "off"}, task_events=True).task_events is True
    with pytest.raises(DtfError, match="DTF_TASK_EVENTS: expected 1/0"):
        Settings.from_env({"DTF_TASK_EVENTS": "maybe"})


def test_sentinels_and_template_dirs_are_split_into_tuples() -> None:
    s = Settings.from_env({
        "DTF_SENTINELS": " s1:26379, s2:26379 ,,s3:26379",
        "DTF_TEMPLATES": os.pathsep.join(["/a", "/b"]) + ",/c",
    })
    assert s.sentinels == ("s1:26379", "s2:26379", "s3:26379")
    assert s.template_dirs == ("/a", "/b", "/c")
    assert not s.embedded
    assert s.safe_broker == "sentinel://s1:26379,s2:26379,s3:26379 (master mymaster)"


def test_an_explicit_environment_mapping_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTF_DB", "process.duckdb")
    assert Settings.from_env({}).db_path == "dtf.duckdb"
    assert Settings.from_env().db_path == "process.duckdb"


def test_with_overrides_ignores_none() -> None:
    s = Settings(db_path="a.duckdb").with_overrides(db_path=None, log_level="DEBUG")
    assert (s.db_path, s.log_level) == ("a.duckdb", "DEBUG")


# -- secrets -------------------------------------------------------------------------------------

def test_the_password_comes_from_dtf_redis_password() -> None:
    assert Settings.from_env({"DTF_REDIS_PASSWORD": SECRET}).redis_password == SECRET


def test_the_password_comes_from_a_file_without_its_trailing_newline(tmp_path: Path) -> None:
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(SECRET + "\n")
    assert Settings.from_env({"DTF_REDIS_PASSWORD_FILE": str(secret_file)}).redis_password == SECRET


def test_the_password_variable_wins_over_the_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "redis-password"
    secret_file.write_text("from-file")
    env = {"DTF_REDIS_PASSWORD": "from-env", "DTF_REDIS_PASSWORD_FILE": str(secret_file)}
    assert Settings.from_env(env).redis_password == "from-env"


def test_a_password_flag_wins_over_both() -> None:
    assert Settings.from_env({"DTF_REDIS_PASSWORD": "from-env"}, redis_password="from-flag").redis_password == "from-flag"


def test_an_unreadable_password_file_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DtfError) as info:
        Settings.from_env({"DTF_REDIS_PASSWORD_FILE": str(missing)})
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_the_password_is_never_in_repr_or_str() -> None:
    s = Settings.from_env({"DTF_REDIS_PASSWORD": SECRET, "DTF_SENTINELS": "s1:26379"})
    assert SECRET not in repr(s) and SECRET not in str(s)
    assert "redis_password" not in repr(s)


def test_a_password_written_into_the_broker_url_is_not_in_repr() -> None:
    s = Settings.from_env({"DTF_BROKER_URL": "redis://:hunter2@redis:6379/0"})
    assert "hunter2" not in repr(s)
    assert "redis://:***@redis:6379/0" in repr(s)
    assert s.safe_broker == "redis://:***@redis:6379/0"


# -- redact_url ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://dtf:pw@redis:6379/0", "redis://dtf:***@redis:6379/0"),
        ("rediss://:p%40ss@redis/0?ssl_cert_reqs=required", "rediss://:***@redis/0?ssl_cert_reqs=required"),
        ("redis://:p@ss@redis/0", "redis://:***@redis/0"),  # an unescaped @ in the password
        ("redis://user:pw@[::1]:6379/0", "redis://user:***@[::1]:6379/0"),
        ("redis://:pw@redis:notaport/0", "redis://:***@redis:notaport/0"),
        ("redis://redis:6379/0?password=pw&db=1", "redis://redis:6379/0?password=***&db=1"),
        ("sentinel://:pw@s1:26379;sentinel://:pw@s2:26379", "sentinel://:***@s1:26379;sentinel://:***@s2:26379"),
    ],
)
def test_redact_url_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "pw" not in redact_url(url) and "p%40ss" not in redact_url(url)


@pytest.mark.parametrize("url", ["redis://redis:6379/0", "redis://dtf@redis/0", "memory://", "sentinel://s1:26379"])
def test_redact_url_leaves_a_url_without_a_password_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_shows_nothing_of_a_url_it_cannot_parse() -> None:
    assert redact_url("redis://:pw@[::1/0") == "***"
