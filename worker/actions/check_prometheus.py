"""The `check.prometheus` verification: a PromQL query whose every sample must satisfy a condition."""

from __future__ import annotations

from pydantic import Field, field_validator

from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.clients.conditions import parse_condition
from worker.domain.catalog import Service


class CheckPrometheusParams(ActionParams):
    url: str = Field(description="Prometheus base URL, e.g. http://prometheus:9090")
    query: str = Field(min_length=1, description="PromQL instant query.")
    expect: str = Field(description="Condition every sample must satisfy, e.g. '< 0.01'.")

    @field_validator("expect")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_condition(value)
        return value


class CheckPrometheus(Action[CheckPrometheusParams], name="check.prometheus"):
    """Read-only check of a Prometheus query, the way SREs re-check metrics after a mitigation."""

    check = True
    EXAMPLE = (
        "- id: errors-down\n  action: check.prometheus\n"
        "  with: {url: 'http://127.0.0.1:9090', query: 'job:errors:ratio5m{job=\"checkout\"}', expect: '< 0.01'}"
    )

    def scope_problems(self, params: CheckPrometheusParams, service: Service) -> list[tuple[str, str]]:
        if params.url.rstrip("/") not in [u.rstrip("/") for u in service.resources.prometheus_urls]:
            return [("url", f"Prometheus {params.url!r} is not listed in the service's prometheus_urls")]
        return []

    def describe(self, params: CheckPrometheusParams) -> str:
        return f"Prometheus {params.query} {params.expect}"

    def run(self, params: CheckPrometheusParams, ctx: ActionContext, preview: Preview) -> StepResult:
        result = ctx.require_clients().prometheus(params.url).check(params.query, condition=params.expect)
        return StepResult(ok=result.ok, summary=result.message, output={"observed": str(result.observed)})
