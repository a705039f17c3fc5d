"""Settings from WORKER_* variables: database URLs as operators write them, URLs that must be http(s)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from worker.domain.cpus import format_cpu_list, parse_cpu_list
from worker.errors import SettingsError
from worker.settings import KNOWN_VARIABLES, Settings


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://worker:p%40ss@db:5432/incidents", "postgresql+psycopg://worker:p%40ss@db:5432/incidents"),
        ("postgres://worker@db/incidents", "postgresql+psycopg://worker@db/incidents"),  # Heroku's spelling
        ("postgresql+psycopg://db/incidents", "postgresql+psycopg://db/incidents"),
        ("sqlite:///var/incident-worker.db", "sqlite:///var/incident-worker.db"),
        ("sqlite:////data/incident-worker.db", "sqlite:////data/incident-worker.db"),
    ],
)
def test_database_urls_as_operators_write_them(given: str, used: str) -> None:
    assert Settings.from_env({"WORKER_DATABASE_URL": given}).database_url == used


@pytest.mark.parametrize("url", ["postgresql+psycopg2://db/x", "postgresql+asyncpg://db/x", "mysql://db/x", "db"])
def test_other_databases_and_drivers_are_named_and_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="^WORKER_DATABASE_URL: ") as refused:
        Settings.from_env({"WORKER_DATABASE_URL": url})
    assert "Traceback" not in str(refused.value)


def test_a_refused_database_url_does_not_echo_its_password() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"WORKER_DATABASE_URL": "mysql://worker:pw-s3cret@db/x"})
    assert "pw-s3cret" not in str(refused.value)


@pytest.mark.parametrize("variable", ["PUBLIC_URL", "PAGERDUTY_API_URL", "OPSGENIE_API_URL", "STATUSPAGE_API_URL"])
def test_urls_must_be_http_or_https_with_a_host(variable: str) -> None:
    assert Settings.from_env({f"WORKER_{variable}": "https://example.com/base"})
    for bad in ("example.com", "file:///etc/passwd", "https://"):
        with pytest.raises(SettingsError, match=f"^WORKER_{variable}: expected an http"):
            Settings.from_env({f"WORKER_{variable}": bad})


def test_a_refused_url_is_not_echoed() -> None:  # it may carry credentials
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"WORKER_OPSGENIE_API_URL": "ftp://user:pw-s3cret@example.com"})
    assert "pw-s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://worker:pass@word:s3cret@db/x",  # make_url reads 's3cret@db' as the port
        "postgresql://iw:Sup3r@s3cret@db.internal/iw",  # ... or 's3cret@db.internal' as the host
    ],
)
def test_an_unencoded_at_sign_in_a_password_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(SettingsError, match="^WORKER_DATABASE_URL: not a database URL") as refused:
        Settings.from_env({"WORKER_DATABASE_URL": url})
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "86401", "soon"])
def test_an_unusable_claim_duration_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="^WORKER_EXECUTOR_CLAIM_SECONDS: "):
        Settings.from_env({"WORKER_EXECUTOR_CLAIM_SECONDS": value})


@pytest.mark.parametrize(
    ("value", "dry"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("false", False), ("off", False)],
)
def test_dry_run_reads_the_usual_spellings(value: str, dry: bool) -> None:
    assert Settings.from_env({"WORKER_DRY_RUN": value}).dry_run is dry


@pytest.mark.parametrize("typo", ["ture", "yes please", "2"])
def test_a_dry_run_typo_is_refused_rather_than_meaning_live(typo: str) -> None:
    with pytest.raises(SettingsError, match="^WORKER_DRY_RUN: "):
        Settings.from_env({"WORKER_DRY_RUN": typo})


@pytest.mark.parametrize(
    ("typo", "meant"), [("WORKER_DRYRUN", "WORKER_DRY_RUN"), ("WORKER_DATABSE_URL", "WORKER_DATABASE_URL")]
)
def test_a_misspelt_setting_is_refused_with_the_likely_name(typo: str, meant: str) -> None:
    with pytest.raises(SettingsError, match=f"^{typo}: not a setting; did you mean {meant}\\?$"):
        Settings.from_env({typo: "1"})


def test_unrelated_worker_variables_are_left_alone() -> None:
    assert Settings.from_env({"WORKER_ID": "7", "WORKER_SECRET_FLAGS_TOKEN": "t"}).template_secrets


def test_every_setting_is_in_the_readme_and_every_readme_variable_is_a_setting() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = set(re.findall(r"`(WORKER_[A-Z_]+)", readme)) - {"WORKER_SECRET_"}
    assert documented == set(KNOWN_VARIABLES)


def test_web_cpus_reads_linux_cpu_lists() -> None:
    allowed = os.sched_getaffinity(0)
    assert Settings.from_env({}).web_cpus is None
    assert Settings.from_env({"WORKER_WEB_CPUS": str(min(allowed))}).web_cpus == {min(allowed)}
    assert parse_cpu_list("0, 2-4,7") == {0, 2, 3, 4, 7}
    assert parse_cpu_list(" 1 ,1") == {1}
    assert Settings.from_env({"WORKER_WEB_CPUS": "8000"}).web_cpus == {8000}  # checked where the web process starts
    assert format_cpu_list({0, 2, 3, 4, 7, 8}) == "0,2-4,7-8"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("one", "WORKER_WEB_CPUS: 'one' is not a CPU number or range"),
        ("0,,1", "WORKER_WEB_CPUS: '' is not a CPU number or range"),
        ("-1", "WORKER_WEB_CPUS: '-1' is not a CPU number or range"),
        ("0-", "WORKER_WEB_CPUS: '0-' is not a CPU number or range"),
        ("3-1", "WORKER_WEB_CPUS: '3-1' is not a CPU range"),
        ("0-99999", "WORKER_WEB_CPUS: '0-99999': CPU 99999 is above 8191"),  # refused, not built
        ("9" * 5000, "WORKER_WEB_CPUS: '9999"),  # not Python's own message about long numbers
        ("\u0661", "WORKER_WEB_CPUS: '\u0661' is not a CPU number"),  # an Arabic-Indic one is not CPU 1
    ],
)
def test_unusable_web_cpus_are_refused_with_the_part_named(value: str, message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"WORKER_WEB_CPUS": value})
    assert str(refused.value).startswith(message)


def test_the_body_limit_stays_under_what_the_journal_can_store() -> None:
    from worker.store.journal import MAX_RECORD_BYTES

    assert Settings(max_body_bytes=64 << 20).max_body_bytes < MAX_RECORD_BYTES
    with pytest.raises(ValueError, match="less than or equal"):
        Settings(max_body_bytes=(64 << 20) + 1)
