"""The `check.http` verification: a status code and, optionally, a JSON field condition."""

from __future__ import annotations

from pydantic import Field, field_validator

from worker.actions import scoping
from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.clients.conditions import parse_condition
from worker.domain.catalog import Service


class CheckHttpParams(ActionParams):
    url: str = Field(description="URL to GET; its host must be owned by the service.")
    expect_status: int = Field(default=200, ge=100, le=599)
    json_path: str | None = Field(default=None, description="Dotted path into the JSON body, e.g. status.db")
    condition: str | None = Field(default=None, description='Condition on that value, e.g. == "ok" or < 0.01')

    @field_validator("condition")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_condition(value)
        return value


class CheckHttp(Action[CheckHttpParams], name="check.http"):
    """Read-only HTTP health check."""

    check = True
    EXAMPLE = "- id: health\n  action: check.http\n  with: {url: 'http://127.0.0.1:8091/health', expect_status: 200}"

    def scope_problems(self, params: CheckHttpParams, service: Service) -> list[tuple[str, str]]:
        problem = scoping.url_problem(params.url, service, mutating=False)
        return [("url", problem)] if problem else []

    def describe(self, params: CheckHttpParams) -> str:
        extra = f" and {params.json_path} {params.condition}" if params.json_path and params.condition else ""
        return f"GET {params.url} expecting {params.expect_status}{extra}"

    def run(self, params: CheckHttpParams, ctx: ActionContext, preview: Preview) -> StepResult:
        assert ctx.service is not None
        client = ctx.require_clients().http(scoping.allowed_hosts(ctx.service))
        result = client.check(
            params.url,
            expect_status=params.expect_status,
            json_path=params.json_path,
            json_condition=params.condition,
            secret_values=ctx.secret_values,  # kept out of its message and the log line
        )
        return StepResult(ok=result.ok, summary=result.message, output={"observed": str(result.observed)})
