"""The `http.request` step: the feature-flag PATCH and any other HTTP call to an owned host."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from worker.actions import scoping
from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult, mask_headers
from worker.domain.catalog import Service


class HttpRequestParams(ActionParams):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "PATCH"
    url: str = Field(description="Target URL; its host must be owned by the service (no SSRF).")
    headers: dict[str, str] = {}
    json_body: Any = Field(default=None, alias="json", description="JSON body to send.")
    expect_status: int | list[int] = Field(default=[200, 201, 202, 204], description="Accepted status code(s).")


class HttpRequest(Action[HttpRequestParams], name="http.request"):
    """Call an HTTP API of the service, e.g. disable a feature flag."""

    mutating = True
    EXAMPLE = (
        "- id: disable-flag\n  action: http.request\n  with:\n    method: PATCH\n"
        "    url: http://127.0.0.1:8091/flags/new-checkout-flow\n    json: {enabled: false}"
    )

    def scope_problems(self, params: HttpRequestParams, service: Service) -> list[tuple[str, str]]:
        problem = scoping.url_problem(params.url, service)
        return [("url", problem)] if problem else []

    def describe(self, params: HttpRequestParams) -> str:
        body = "" if params.json_body is None else f" with JSON {json.dumps(params.json_body, sort_keys=True)}"
        return f"{params.method} {params.url}{body}"

    def preview(self, params: HttpRequestParams, ctx: ActionContext) -> Preview:
        return Preview(
            description=self.describe(params),
            target=f"{params.method} {params.url}",
            details={
                "method": params.method,
                "url": params.url,
                "headers": mask_headers(params.headers),
                "json": params.json_body,
            },
        )

    def run(self, params: HttpRequestParams, ctx: ActionContext, preview: Preview) -> StepResult:
        assert ctx.service is not None
        client = ctx.require_clients().http(scoping.allowed_hosts(ctx.service))
        headers = {"Idempotency-Key": ctx.idempotency_key, **params.headers} if ctx.idempotency_key else params.headers
        result = client.request(
            params.method,
            params.url,
            headers=headers,
            json=params.json_body,
            expect_status=params.expect_status,
            secret_values=list(ctx.secret_values),
        )
        return StepResult(summary=f"{params.method} {params.url} -> {result.status}", output={"status": result.status})

    def repeatable(self, params: HttpRequestParams) -> bool:
        # PUT/PATCH/DELETE of the same body are idempotent: repeating them after a crash is safe; POST is not.
        return params.method in {"GET", "PUT", "PATCH", "DELETE"}
