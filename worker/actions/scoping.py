"""Which targets a service owns in the catalog: shared by the step types' scope checks."""

from __future__ import annotations

from urllib.parse import urlsplit

from worker.domain.catalog import Route53Record, Service


def host_of(url: str) -> str:
    """host[:port] of a URL, lower-cased (the form the catalog's http_hosts use)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


def allowed_hosts(service: Service) -> list[str]:
    """HTTP hosts the service's steps may call: its http_hosts plus its flag service."""
    hosts = list(service.resources.http_hosts)
    if service.resources.feature_flags is not None:
        hosts.append(host_of(service.resources.feature_flags.base_url))
    return list(dict.fromkeys(hosts))


def url_problem(url: str, service: Service, *, mutating: bool = True) -> str | None:
    """Why `url` is outside the service's scope, or None; a change on the flag service must name an owned flag."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of range or not a number
    except ValueError as exc:
        return f"invalid URL {url!r}: {exc}"
    if parts.scheme not in {"http", "https"}:
        return f"only http and https URLs are allowed, not {parts.scheme or 'no scheme'!r}"
    host = host_of(url)
    hosts = allowed_hosts(service)
    bare = (parts.hostname or "").lower()
    if host not in hosts and bare not in hosts:
        return f"host {host!r} is not owned by the service (http_hosts: {', '.join(hosts) or 'none'})"
    flags = service.resources.feature_flags
    if mutating and flags is not None and url.startswith(flags.base_url.rstrip("/") + "/"):
        segments = [s for s in urlsplit(url).path.split("/") if s]
        if not set(segments) & set(flags.flags):
            return f"feature flag URL names no flag owned by the service ({', '.join(flags.flags) or 'none'})"
    return None


def kubernetes_problems(namespace: str, deployment: str, service: Service) -> list[tuple[str, str]]:
    problems = []
    if namespace not in service.resources.namespaces:
        problems.append(("namespace", f"namespace {namespace!r} is not owned by the service"))
    if deployment not in service.resources.deployments:
        problems.append(("deployment", f"deployment {deployment!r} is not owned by the service"))
    return problems


def route53_problem(hosted_zone_id: str, record_name: str, service: Service) -> str | None:
    if route53_record(hosted_zone_id, record_name, service) is not None:
        return None
    name = record_name if record_name.endswith(".") else record_name + "."
    return f"record {name} in zone {hosted_zone_id.removeprefix('/hostedzone/')} is not owned by the service"


def route53_record(hosted_zone_id: str, record_name: str, service: Service) -> Route53Record | None:
    """The service's catalog entry for a record, if it owns it."""
    name = record_name if record_name.endswith(".") else record_name + "."
    zone = hosted_zone_id.removeprefix("/hostedzone/")
    for record in service.resources.route53_records:
        if record.hosted_zone_id.removeprefix("/hostedzone/") == zone and record.record_name == name:
            return record
    return None
