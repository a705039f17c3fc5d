"""A stateful fake of the Kubernetes apps/v1 API over real HTTP, faithful enough for kubectl.

Serves discovery, namespaces, Deployments (GET, LIST, PATCH as JSON patch, merge patch and
strategic merge patch, PUT, the scale subresource), ReplicaSets (GET, LIST with label and field
selectors and `limit`/`continue`), server-side tables for `kubectl get`, and Status objects for
errors. The deployment controller's revision bookkeeping lives in `fake_kubernetes_state`, the patch
formats in `fake_kubernetes_patch`. Tests run the real `kubectl` against it as the oracle.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from werkzeug.wrappers import Request, Response

from worker.testing.fake_kubernetes_patch import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_patch,
    field_selector,
    label_selector,
)
from worker.testing.fake_kubernetes_state import ApiError, ClusterState, conflict, revision_of
from worker.testing.fake_kubernetes_tables import table
from worker.testing.server import ThreadedServer

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_APPS_RESOURCES = [
    {"name": "deployments", "singularName": "deployment", "namespaced": True, "kind": "Deployment",
     "verbs": _VERBS, "shortNames": ["deploy"], "categories": ["all"]},
    {"name": "deployments/scale", "singularName": "", "namespaced": True, "group": "autoscaling", "version": "v1",
     "kind": "Scale", "verbs": ["get", "patch", "update"]},
    {"name": "deployments/status", "singularName": "", "namespaced": True, "kind": "Deployment",
     "verbs": ["get", "patch", "update"]},
    {"name": "replicasets", "singularName": "replicaset", "namespaced": True, "kind": "ReplicaSet",
     "verbs": _VERBS, "shortNames": ["rs"], "categories": ["all"]},
]  # fmt: skip
_CORE_RESOURCES = [
    {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
     "verbs": ["get", "list"], "shortNames": ["ns"]},
]  # fmt: skip
_APPS_GROUP = {
    "name": "apps",
    "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
    "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
}
_PATH = re.compile(
    r"^/apis/apps/v1(?:/namespaces/(?P<ns>[^/]+))?/(?P<kind>deployments|replicasets)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>scale|status))?$"
)
_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)


class FakeKubernetes:
    """`with FakeKubernetes() as cluster:` then `cluster.kubeconfig_path(dir)` for kubectl and the client."""

    def __init__(self, *, port: int = 0):
        self.state = ClusterState()
        self.requests: list[dict[str, Any]] = []
        # Answers for the next requests, in order: a status, or (status, Retry-After seconds).
        self.fail_next: list[int | tuple[int, float | None]] = []
        self.delay_patch: float = 0.0  # seconds to hold a PATCH (crash tests kill the caller meanwhile)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server = ThreadedServer(self._app, port=port)
        self.url = self._server.url

    # -- seeding and inspection --------------------------------------------------------------------

    def add_deployment(
        self,
        namespace: str,
        name: str,
        template: dict[str, Any],
        *,
        replicas: int = 3,
        annotations: dict[str, str] | None = None,
        paused: bool = False,
    ) -> dict[str, Any]:
        """Create a Deployment at revision 1 (selector: the template's labels)."""
        created = self.state.create_deployment(
            namespace, name, template, replicas=replicas, annotations=annotations, paused=paused
        )
        return copy.deepcopy(created)

    def deploy_template(
        self,
        namespace: str,
        name: str,
        template: dict[str, Any],
        *,
        replicas: int = 3,
        change_cause: str | None = None,
        annotations: dict[str, str] | None = None,
    ) -> None:
        """Create the Deployment or roll it to `template`, as `kubectl apply` and the controller would."""
        extra = dict(annotations or {})
        if change_cause:
            extra["kubernetes.io/change-cause"] = change_cause
        with self.state.lock:
            current = self.state.deployments.get((namespace, name))
            if current is None:
                self.state.create_deployment(namespace, name, template, replicas=replicas, annotations=extra)
                return
            new = copy.deepcopy(current)
            new["spec"]["template"] = copy.deepcopy(template)
            new["metadata"].setdefault("annotations", {}).update(extra)
            self.state.update_deployment(namespace, name, new)

    def set_paused(self, namespace: str, name: str, paused: bool = True) -> None:
        """`kubectl rollout pause|resume`."""
        with self.state.lock:
            new = copy.deepcopy(self.state.deployments[(namespace, name)])
            new["spec"]["paused"] = paused
            self.state.update_deployment(namespace, name, new)

    def add_replicaset(self, namespace: str, replicaset: dict[str, Any]) -> None:
        """Seed a ReplicaSet as is (e.g. one with matching labels that the deployment does not own)."""
        with self.state.lock:
            self.state.replicasets[(namespace, replicaset["metadata"]["name"])] = copy.deepcopy(replicaset)

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        with self.state.lock:
            return copy.deepcopy(self.state.deployments[(namespace, name)])

    def replicasets(self, namespace: str) -> list[dict[str, Any]]:
        with self.state.lock:
            return [copy.deepcopy(rs) for (ns, _), rs in sorted(self.state.replicasets.items()) if ns == namespace]

    def revisions(self, namespace: str, name: str) -> dict[int, str]:
        """Revision -> ReplicaSet name, for the ReplicaSets the Deployment controls."""
        with self.state.lock:
            owned = self.state.owned(self.state.deployments[(namespace, name)])
            return {revision_of(rs) or 0: rs["metadata"]["name"] for rs in owned}

    def patch_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] in ("PATCH", "PUT")]

    def fail(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `times` requests with `status` (and a Retry-After header if given)."""
        with self._lock:
            self.fail_next += [(status, retry_after)] * times

    def kubeconfig_path(self, directory: Path) -> Path:
        """Write `directory/kubeconfig` pointing at this server (namespace `default`, a dummy token)."""
        path = Path(directory) / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}
                    ],
                }
            )
        )
        return path

    def start(self) -> FakeKubernetes:
        self._server.start()
        return self

    def stop(self) -> None:
        self._stopped.set()  # ends open watches
        self._server.stop()

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the API -----------------------------------------------------------------------------------

    @Request.application  # type: ignore[misc]
    def _app(self, request: Request) -> Response:
        body = request.get_data(as_text=True)
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": dict(request.args),
                    "content_type": request.mimetype,
                    "accept": request.headers.get("Accept", ""),
                    "body": body,
                    "at": time.monotonic(),  # arrival, for tests of what was in flight when
                }
            )
            failure = self.fail_next.pop(0) if self.fail_next else None
        if failure is not None:
            status, retry_after = failure if isinstance(failure, tuple) else (failure, None)
            response = _status(ApiError(status, _REASONS.get(status, "InternalError"), "injected failure"))
            if retry_after is not None:
                response.headers["Retry-After"] = str(int(retry_after))
            return response
        if request.method == "PATCH" and self.delay_patch:
            threading.Event().wait(self.delay_patch)
        try:
            return self._route(request, body)
        except ApiError as exc:
            return _status(exc)

    def _route(self, request: Request, body: str) -> Response:
        path = request.path.rstrip("/") or "/"
        discovery: dict[str, Any] = {
            "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "platform": "linux/amd64"},
            "/api": {"kind": "APIVersions", "versions": ["v1"],
                     "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_APPS_GROUP]},
            "/apis/apps": {"kind": "APIGroup", "apiVersion": "v1", **_APPS_GROUP},
            "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": _CORE_RESOURCES},
            "/apis/apps/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                              "resources": _APPS_RESOURCES},
        }  # fmt: skip
        if path in discovery and request.method == "GET":
            return _json(discovery[path])
        namespace = re.fullmatch(r"/api/v1/namespaces(?:/(?P<name>[^/]+))?", path)
        if namespace is not None and request.method == "GET":
            return self._namespaces(request, namespace["name"])
        match = _PATH.match(path)
        if match is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        with self.state.lock:
            return self._resource(request, body, **match.groupdict())

    def _namespaces(self, request: Request, name: str | None) -> Response:
        def namespace(n: str) -> dict[str, Any]:
            return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "creationTimestamp": created,
                "labels": {"kubernetes.io/metadata.name": n}}, "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}}  # fmt: skip

        created = self.state.created
        with self.state.lock:
            known = sorted(self.state.namespaces())
        if name is None:
            return _json(
                {"apiVersion": "v1", "kind": "NamespaceList", "metadata": {}, "items": [namespace(n) for n in known]}
            )
        if name not in known:
            raise ApiError(404, "NotFound", f'namespaces "{name}" not found', name=name, kind="namespaces")
        return _json(namespace(name))

    def _resource(
        self, request: Request, body: str, *, ns: str | None, kind: str, name: str | None, sub: str | None
    ) -> Response:
        store = self.state.deployments if kind == "deployments" else self.state.replicasets
        if name is None:
            if request.method != "GET":
                raise _not_allowed()
            return self._list(request, ns, kind, store)
        if ns is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        item = store.get((ns, name))
        if item is None:
            raise ApiError(404, "NotFound", f'{kind}.apps "{name}" not found', name=name, group="apps", kind=kind)
        if sub == "scale" and kind == "deployments":
            return self._scale(request, body, ns, name, item)
        if request.method == "GET":
            return table(request, kind, [item]) or _json(item)
        if kind != "deployments" or sub is not None or request.method not in ("PATCH", "PUT"):
            raise _not_allowed()
        new = _parse(body) if request.method == "PUT" else _patched(item, body, request.mimetype)
        return _json(self.state.update_deployment(ns, name, new, dry_run=request.args.get("dryRun") == "All"))

    def _list(self, request: Request, ns: str | None, kind: str, store: dict[tuple[str, str], Any]) -> Response:
        try:
            labels = label_selector(request.args.get("labelSelector", ""))
            fields = field_selector(request.args.get("fieldSelector", ""))
        except PatchError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        items = [
            copy.deepcopy(v)
            for (n, _), v in sorted(store.items())
            if ns in (None, n) and labels(v["metadata"].get("labels") or {}) and fields(v)
        ]
        if request.args.get("watch") in ("true", "1"):
            since = int(request.args.get("resourceVersion") or 0)
            timeout = min(float(request.args.get("timeoutSeconds") or 60), 60)
            return Response(self._watch(store, ns, lambda v: labels(v["metadata"].get("labels") or {}) and fields(v),
                                        since=since, timeout=timeout), mimetype="application/json")  # fmt: skip
        limit = int(request.args.get("limit") or 0)
        start = int(request.args.get("continue") or 0)
        page = items[start : start + limit] if limit else items[start:]
        more = {"continue": str(start + limit), "remainingItemCount": len(items) - start - limit}
        singular = "Deployment" if kind == "deployments" else "ReplicaSet"
        meta = {
            "resourceVersion": self.state.resource_version,
            **(more if limit and start + limit < len(items) else {}),
        }
        return table(request, kind, page, meta) or _json(
            {"apiVersion": "apps/v1", "kind": f"{singular}List", "metadata": meta, "items": page}
        )

    def _watch(
        self, store: dict[tuple[str, str], Any], ns: str | None, wanted: Any, *, since: int, timeout: float
    ) -> Iterator[str]:
        """Watch events (one JSON object a line) for changes after `since`, until the timeout or stop()."""
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        first = True
        yield ""  # sends the headers now: a client that stops watching is not left waiting for them
        while not self._stopped.is_set() and time.monotonic() < deadline:
            with self.state.lock:
                now = {k: copy.deepcopy(v) for k, v in store.items() if ns in (None, k[0]) and wanted(v)}
            events = [
                {"type": "MODIFIED" if key in seen or (first and since) else "ADDED", "object": obj}
                for key, obj in now.items()
                if int(obj["metadata"]["resourceVersion"]) > since and obj != seen.get(key)
            ]
            events += [{"type": "DELETED", "object": seen[key]} for key in seen.keys() - now.keys()]
            # A newline between events is allowed; writing one notices a client that went away.
            yield "".join(json.dumps(e) + "\n" for e in events) or "\n"
            seen, first = now, False
            self._stopped.wait(0.2)

    def _scale(self, request: Request, body: str, ns: str, name: str, deployment: dict[str, Any]) -> Response:
        if request.method in ("PATCH", "PUT"):
            current = _scale_of(deployment)
            new = _parse(body) if request.method == "PUT" else _patched(current, body, request.mimetype)
            version = (new.get("metadata") or {}).get("resourceVersion")
            if version and version != deployment["metadata"]["resourceVersion"]:
                raise conflict(name)
            updated = copy.deepcopy(deployment)
            updated["spec"]["replicas"] = (new.get("spec") or {}).get("replicas")
            updated["metadata"].pop("resourceVersion")
            deployment = self.state.update_deployment(ns, name, updated)
        elif request.method != "GET":
            raise _not_allowed()
        return _json(_scale_of(deployment))


_REASONS = {400: "BadRequest", 404: "NotFound", 409: "Conflict", 422: "Invalid", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}  # fmt: skip


def _scale_of(deployment: dict[str, Any]) -> dict[str, Any]:
    meta = deployment["metadata"]
    labels = ",".join(f"{k}={v}" for k, v in sorted(deployment["spec"]["selector"].get("matchLabels", {}).items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
        "spec": {"replicas": deployment["spec"]["replicas"]},
        "status": {"replicas": deployment.get("status", {}).get("replicas", 0), "selector": labels},
    }


def _parse(body: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "BadRequest", "the body of the request must be an object")
    return data


def _patched(item: dict[str, Any], body: str, content_type: str) -> dict[str, Any]:
    if content_type not in _PATCH_TYPES:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(_PATCH_TYPES),
        )
    try:
        return apply_patch(item, json.loads(body), content_type)
    except ValueError as exc:  # PatchError, or a body that is not JSON
        malformed = not isinstance(exc, PatchError) or exc.malformed
        raise ApiError(400 if malformed else 422, "BadRequest" if malformed else "Invalid", str(exc)) from None


def _not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _status(error: ApiError) -> Response:
    return _json(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": error.message,
            "reason": error.reason,
            "details": error.details,
            "code": error.code,
        },
        error.code,
    )
