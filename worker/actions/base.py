"""What a playbook step type is: a typed parameter model, a plan (read-only preview) and a run.

A step type is one file: subclassing `Action` with `name="area.verb_object"` registers it, and the
parameter model is taken from the generic argument, so the table can't be forgotten or drift.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from worker.domain.catalog import Service
from worker.settings import Settings

if TYPE_CHECKING:  # the factory is only a type here; actions receive it already built
    from worker.clients.factory import Clients


class ActionParams(BaseModel):
    """Base of every step's `with:` model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=ActionParams)


class StepResult(BaseModel):
    """What a run or a check produced; `ok=False` from a check means 'not healthy yet'."""

    model_config = ConfigDict(extra="forbid")

    ok: bool = True
    summary: str
    output: dict[str, Any] = {}


class Preview(BaseModel):
    """The exact change a step will make, as the approver sees it, plus what it was computed from."""

    model_config = ConfigDict(extra="forbid")

    description: str  # human text: the deployment and the revision it returns to, the flag and its value...
    target: str  # the resource, e.g. "deployment shop/checkout"
    details: dict[str, Any] = {}  # machine-readable change (the Route53 change batch, the template diff)
    state_fingerprint: str | None = None  # the target's state when previewed; a change voids the approval
    resolved_params: dict[str, Any] = {}  # params fixed at plan time (e.g. to_revision) so a re-run repeats
    noop: bool = False

    def keeping(self, planned: Preview, names: tuple[str, ...]) -> Preview:
        """This (fresh) preview with `planned`'s values of the resolved params `names`: values an action
        chooses when it plans (a restart's timestamp), which a later look must not change."""
        kept = {n: planned.resolved_params[n] for n in names if n in planned.resolved_params}
        return self.model_copy(update={"resolved_params": {**self.resolved_params, **kept}}) if kept else self


@dataclass
class ActionContext:
    """Everything a step may touch; built by the executor (or by simulate, without clients)."""

    settings: Settings
    service: Service | None
    incident: dict[str, Any]
    clients: Clients | None
    idempotency_key: str = ""
    now: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())
    sleep: Callable[[float], None] = time.sleep  # Route53's polling for INSYNC (tests record it instead)
    secret_values: tuple[str, ...] = ()

    def require_clients(self) -> Clients:
        if self.clients is None:
            raise RuntimeError("this context has no clients (simulation)")
        return self.clients


class Action(Generic[P]):
    """Base class of step types; see the module docstring."""

    name: ClassVar[str]
    params: ClassVar[type[ActionParams]]
    mutating: ClassVar[bool] = False  # changes production: behind the approval gate unless auto_run allows it
    check: ClassVar[bool] = False  # a read-only verification usable under `verify:`
    # Resolved params the action chooses when it plans rather than reads from the target (a restart's
    # timestamp): kept from the approved preview when the target is read again before the call.
    chosen_when_planned: ClassVar[tuple[str, ...]] = ()
    # A message the engine queues on an outbox (in order with the engine's own) instead of calling `run`.
    queued: ClassVar[bool] = False
    EXAMPLE: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Action[Any]]]] = {}

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:
            return  # an intermediate base class
        if name in Action.registry:
            raise TypeError(
                f"action {name!r} is registered twice ({Action.registry[name].__module__}, {cls.__module__})"
            )
        cls.name = name
        cls.params = _params_model(cls)
        if not cls.__doc__:
            raise TypeError(f"action {name!r} needs a one-line docstring: the schema and `lint` show it")
        Action.registry[name] = cls

    def scope_problems(self, params: P, service: Service) -> list[tuple[str, str]]:
        """(field, message) for each target outside what `service` owns in the catalog."""
        return []

    def describe(self, params: P) -> str:
        """One line for plans and notes, without network."""
        return f"{self.name} " + ", ".join(f"{k}={v}" for k, v in params.model_dump(exclude_none=True).items())

    def preview(self, params: P, ctx: ActionContext) -> Preview:
        """Read-only: resolve the exact change against the target's current state."""
        return Preview(description=self.describe(params), target=self.name)

    def run(self, params: P, ctx: ActionContext, preview: Preview) -> StepResult:
        """Do it; raise only TransientError or PermanentError."""
        raise NotImplementedError

    def max_duration(self, params: P) -> timedelta | None:
        """How long one attempt may take when the action waits on its own (longer than the step's timeout):
        the run's claim and the service's mutation lease must outlast it."""
        return None

    def pause(self, params: P) -> timedelta | None:
        """For a step that only lets time pass: how long. The executor then waits it out between its passes
        (from the step's start, so across a restart too) instead of holding its loop, and never calls run."""
        return None

    def note(self, params: P) -> tuple[str, str] | None:
        """For a `queued` step that notes the paging app's incident: the app ("pagerduty", "opsgenie") and the
        text, which the notes outbox posts (once, crash or timeout). None: the status page outbox takes it."""
        return None

    def already_applied(self, params: P, ctx: ActionContext, preview: Preview) -> bool:
        """After a crash mid-step: is the target already in the state this step produces?"""
        return False

    def repeatable(self, params: P) -> bool:
        """May the step run again when a crash left its outcome unknown? (Same result either way.)"""
        return not self.mutating


def _params_model(cls: type) -> type[ActionParams]:
    for base in getattr(cls, "__orig_bases__", ()):
        if get_origin(base) is Action:
            (model,) = get_args(base)
            if isinstance(model, type) and issubclass(model, ActionParams):
                return model
    raise TypeError(f"{cls.__name__} must subclass Action[SomeParams]")


_SENSITIVE_HEADERS = ("authorization", "token", "key", "secret", "cookie", "password")


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers as an approver or a log may see them: credentials replaced by ***."""
    return {k: "***" if any(s in k.lower() for s in _SENSITIVE_HEADERS) else v for k, v in headers.items()}


def known_actions() -> list[str]:
    return sorted(Action.registry)


def get_action(name: str) -> Action[Any]:
    return Action.registry[name]()


def fingerprint(value: Any) -> str:
    """A stable hash of JSON-able data (plans, params, target states)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()
