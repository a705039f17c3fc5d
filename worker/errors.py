"""The exception tree of incident-worker.

    WorkerError                  base of everything the worker raises on purpose
    ├── ConfigError              a config or playbook file is invalid (carries every Problem)
    ├── SettingsError            a WORKER_* environment variable is invalid (names the variable)
    ├── WebhookRejected          an inbound delivery is refused (carries the HTTP status and a reason)
    └── ActionError              a step's call to the outside world failed
        ├── TransientError       worth retrying: connection errors, timeouts, 5xx, 429 (may carry retry_after)
        └── PermanentError       retrying will not help: other 4xx, invalid input, missing target

Clients translate SDK exceptions into TransientError/PermanentError; the executor retries only the
former, under one declared policy.
"""

from __future__ import annotations

from dataclasses import dataclass


class WorkerError(Exception):
    """Base class of all errors the worker raises deliberately."""


@dataclass(frozen=True, order=True)
class Problem:
    """One problem found in a file, reported compiler-style as FILE:LINE:COL: PATH: MESSAGE."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"


class ConfigError(WorkerError):
    """A configuration or playbook file is invalid; holds every problem found, sorted."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SettingsError(WorkerError):
    """A WORKER_* environment variable holds a value the worker cannot use; the message names it."""


class WebhookRejected(WorkerError):
    """An inbound webhook is refused with an HTTP status and a reason meant for the sender."""

    def __init__(self, status: int, reason: str, *, field: str | None = None):
        self.status = status
        self.reason = reason
        self.field = field
        super().__init__(f"{status}: {reason}")


class ActionError(WorkerError):
    """A call made by a playbook step failed."""


class TransientError(ActionError):
    """A failure worth retrying (connection error, timeout, 5xx, 429); retry_after is in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)


class PermanentError(ActionError):
    """A failure that retrying will not fix; the message is the provider's own where there is one."""
