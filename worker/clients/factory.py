"""Build the outbound clients from settings, lazily, so an unconfigured provider costs nothing.

Tests and the demo inject ready clients (fakes, test CAs) through the constructor.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from worker.errors import PermanentError
from worker.settings import Settings


class Clients:
    """One place that knows how to reach each provider; actions ask it for what they need."""

    def __init__(self, settings: Settings, **injected: Any):
        self.settings = settings
        self._injected = injected

    # SDK modules are imported inside the builders on purpose: kubernetes and boto3 take seconds to
    # import, and a worker that never rolls back a deployment should not pay for them.
    def _get(self, name: str, build: Any) -> Any:
        return self._injected[name] if name in self._injected else build()

    @cached_property
    def kubernetes(self) -> Any:
        def build() -> Any:
            from worker.clients.kubernetes import KubernetesClient

            return KubernetesClient.load()

        return self._get("kubernetes", build)

    @cached_property
    def route53(self) -> Any:
        def build() -> Any:
            from worker.clients.route53 import Route53Client

            return Route53Client.from_settings(endpoint_url=self.settings.aws_endpoint_url)

        return self._get("route53", build)

    @cached_property
    def pagerduty(self) -> Any:
        def build() -> Any:
            from worker.clients.pagerduty import PagerDutyClient

            if self.settings.pagerduty_api_token is None or not self.settings.pagerduty_from:
                raise PermanentError(
                    "PagerDuty API not configured: set WORKER_PAGERDUTY_API_TOKEN and WORKER_PAGERDUTY_FROM"
                )
            return PagerDutyClient(
                api_token=self.settings.pagerduty_api_token,
                from_email=self.settings.pagerduty_from,
                api_url=self.settings.pagerduty_api_url,
            )

        return self._get("pagerduty", build)

    @cached_property
    def opsgenie(self) -> Any:
        def build() -> Any:
            from worker.clients.opsgenie import OpsgenieClient

            if self.settings.opsgenie_api_key is None:
                raise PermanentError("Opsgenie API not configured: set WORKER_OPSGENIE_API_KEY")
            return OpsgenieClient(api_key=self.settings.opsgenie_api_key, api_url=self.settings.opsgenie_api_url)

        return self._get("opsgenie", build)

    @cached_property
    def statuspage(self) -> Any:
        def build() -> Any:
            from worker.clients.statuspage import StatuspageClient

            if self.settings.statuspage_api_key is None or not self.settings.statuspage_page_id:
                raise PermanentError(
                    "Statuspage not configured: set WORKER_STATUSPAGE_API_KEY and WORKER_STATUSPAGE_PAGE_ID"
                )
            return StatuspageClient(
                api_url=self.settings.statuspage_api_url,
                page_id=self.settings.statuspage_page_id,
                api_key=self.settings.statuspage_api_key,
            )

        return self._get("statuspage", build)

    def has(self, name: str) -> bool:
        """Whether a provider is configured (or injected), without building it."""
        if name in self._injected:
            return True
        s = self.settings
        return {
            "pagerduty": s.pagerduty_api_token is not None and bool(s.pagerduty_from),
            "opsgenie": s.opsgenie_api_key is not None,
            "statuspage": s.statuspage_api_key is not None and bool(s.statuspage_page_id),
        }.get(name, True)

    def http(self, allowed_hosts: list[str]) -> Any:
        from worker.clients.http import HttpClient

        return HttpClient(allowed_hosts=allowed_hosts, transport=self._injected.get("http_transport"))

    def prometheus(self, url: str) -> Any:
        if "prometheus" in self._injected:
            return self._injected["prometheus"](url)
        from worker.clients.prometheus import PrometheusClient

        return PrometheusClient(url=url)
