"""Process settings from WORKER_* environment variables; secrets stay SecretStr."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from worker.domain.cpus import parse_cpu_list
from worker.domain.durations import parse_duration
from worker.errors import SettingsError

DEFAULT_DATABASE_URL = "sqlite:///var/incident-worker.db"


class Settings(BaseModel):
    """Everything the process reads from its environment, validated once at start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    config_dir: Path = Path("config")
    playbooks_dir: Path = Path("playbooks")
    pagerduty_webhook_secrets: tuple[SecretStr, ...] = ()
    opsgenie_webhook_token: SecretStr | None = None
    alertmanager_token: SecretStr | None = None
    api_token: SecretStr | None = None  # bearer token for POST /api/pause and /api/resume
    public_url: str = "http://127.0.0.1:8080"
    pagerduty_api_token: SecretStr | None = None
    pagerduty_from: str | None = None
    pagerduty_api_url: str = "https://api.pagerduty.com"
    opsgenie_api_key: SecretStr | None = None
    opsgenie_api_url: str = "https://api.opsgenie.com"
    aws_endpoint_url: str | None = None
    statuspage_api_key: SecretStr | None = None
    statuspage_page_id: str | None = None
    statuspage_api_url: str = "https://api.statuspage.io"
    dry_run: bool = False
    resolution_hold: timedelta | None = None
    max_body_bytes: int = Field(  # not an environment setting: the issue fixes 413 above 1 MiB; tests lower it
        default=1024 * 1024,
        gt=0,
        le=64 << 20,  # far under the journal's 256 MiB record, so a body it accepts is one it can store
    )
    executor_claim_seconds: float = Field(
        default=30.0,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="How long a crashed executor's claim blocks others.",
    )
    background_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Niceness of the background process: on a shared host, answering webhooks comes first.",
    )
    web_cpus: frozenset[int] | None = Field(
        default=None,
        description="CPUs for the web processes, each on one of them (unset: wherever the kernel puts them).",
    )
    trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=5,
        description="Reverse proxies in front (an ingress: 1) whose X-Forwarded-For/-Proto/-Host are believed.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    template_secrets: dict[str, SecretStr] = Field(default_factory=dict, repr=False)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            # Never the parser's own text: it may quote a piece of the password (an unencoded '@').
            raise ValueError(
                "not a database URL (e.g. sqlite:///var/incident-worker.db; percent-encode '@' or ':' in a password)"
            ) from None
        if parsed.host and "@" in parsed.host:  # an unencoded '@' in the password: the rest would be the host
            raise ValueError("not a database URL: percent-encode '@' or ':' in a password (%40, %3A)")
        if parsed.drivername in {"postgres", "postgresql"}:
            # The usual postgresql:// (or postgres://) means the one driver installed: psycopg 3.
            return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        if parsed.drivername in {"sqlite", "sqlite+pysqlite", "postgresql+psycopg"}:
            return url
        raise ValueError(f"unsupported database {parsed.drivername!r}: use sqlite:///PATH or postgresql://…")

    @field_validator("web_cpus", mode="before")
    @classmethod
    def _cpu_list(cls, value: object) -> object:
        return parse_cpu_list(value) if isinstance(value, str) else value

    @field_validator("public_url", "pagerduty_api_url", "opsgenie_api_url", "statuspage_api_url", "aws_endpoint_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError("expected an http(s) URL with a host, such as https://incidents.example.com")
        return url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read WORKER_* variables (empty values count as unset); keyword overrides win.

        Raises SettingsError naming the variable (never a traceback) when a value is unusable.
        """
        env = os.environ if env is None else env
        _refuse_typos(env)
        try:
            return cls._from_env(env, overrides)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else ""
            name = _PLAIN.get(field) or _SECRETS.get(field)
            message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
            raise SettingsError(f"{f'WORKER_{name}' if name else field}: {message}") from None

    @classmethod
    def _from_env(cls, env: Mapping[str, str], overrides: dict[str, object]) -> Settings:
        def get(name: str) -> str | None:
            value = env.get(f"WORKER_{name}", "").strip()
            return value or None

        values: dict[str, object] = {}
        for field, name in _PLAIN.items():  # strings the model validates (and converts)
            if (value := get(name)) is not None:
                values[field] = value
        for field in ("log_level", "log_format"):  # spelt either way
            if field in values:
                values[field] = str(values[field]).upper() if field == "log_level" else str(values[field]).lower()
        for field, name in _SECRETS.items():
            if (value := get(name)) is not None:
                values[field] = SecretStr(value)
        if (secrets := get("PAGERDUTY_WEBHOOK_SECRETS")) is not None:
            values["pagerduty_webhook_secrets"] = tuple(SecretStr(s.strip()) for s in secrets.split(",") if s.strip())
        if (hold := get("RESOLUTION_HOLD")) is not None:
            try:
                values["resolution_hold"] = parse_duration(hold)
            except ValueError as exc:
                raise SettingsError(f"WORKER_RESOLUTION_HOLD: {exc}") from None
        values["template_secrets"] = {
            key.removeprefix("WORKER_SECRET_"): SecretStr(value)
            for key, value in env.items()
            if key.startswith("WORKER_SECRET_") and value
        }
        values.update(overrides)
        return cls.model_validate(values)


_PLAIN = {
    "database_url": "DATABASE_URL",
    "public_url": "PUBLIC_URL",
    "pagerduty_from": "PAGERDUTY_FROM",
    "pagerduty_api_url": "PAGERDUTY_API_URL",
    "opsgenie_api_url": "OPSGENIE_API_URL",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "statuspage_page_id": "STATUSPAGE_PAGE_ID",
    "statuspage_api_url": "STATUSPAGE_API_URL",
    "dry_run": "DRY_RUN",  # pydantic's bool: true/false, yes/no, on/off, 1/0; a typo is refused, never "live"
    "executor_claim_seconds": "EXECUTOR_CLAIM_SECONDS",
    "background_nice": "BACKGROUND_NICE",
    "trusted_proxies": "TRUSTED_PROXIES",
    "web_cpus": "WEB_CPUS",
    "log_level": "LOG_LEVEL",
    "log_format": "LOG_FORMAT",
}
_SECRETS = {
    "opsgenie_webhook_token": "OPSGENIE_WEBHOOK_TOKEN",
    "alertmanager_token": "ALERTMANAGER_TOKEN",
    "api_token": "API_TOKEN",
    "pagerduty_api_token": "PAGERDUTY_API_TOKEN",
    "opsgenie_api_key": "OPSGENIE_API_KEY",
    "statuspage_api_key": "STATUSPAGE_API_KEY",
}

_READ_AS_IS = ("PAGERDUTY_WEBHOOK_SECRETS", "RESOLUTION_HOLD")  # read by _from_env itself
KNOWN_VARIABLES = frozenset(f"WORKER_{name}" for name in (*_PLAIN.values(), *_SECRETS.values(), *_READ_AS_IS))
SECRET_VARIABLES = frozenset(f"WORKER_{name}" for name in (*_SECRETS.values(), "PAGERDUTY_WEBHOOK_SECRETS"))


def _refuse_typos(env: Mapping[str, str]) -> None:
    """A WORKER_* name that is nearly a setting's is a typo: WORKER_DRYRUN=1 must not quietly run live.
    Other unknown names (a platform's own WORKER_ID, say) are left alone."""
    for name in env:
        if name.startswith("WORKER_") and name not in KNOWN_VARIABLES and not name.startswith("WORKER_SECRET_"):
            close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1, cutoff=0.85)
            if close:
                raise SettingsError(f"{name}: not a setting; did you mean {close[0]}?")
