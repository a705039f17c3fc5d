"""A stateful fake of the Kubernetes apps/v1 API over real HTTP, faithful enough for kubectl.

Serves discovery, Deployments (GET, LIST, PATCH as JSON patch, merge patch and strategic merge
patch, the scale subresource) and ReplicaSets (GET, LIST with label selectors and `continue`), with
the deployment controller's revision bookkeeping in `fake_kubernetes_state`. Tests run the real
`kubectl rollout undo|restart` and `kubectl scale` against it as the oracle for our adapter.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from pathlib import Path
from typing import Any

import jsonpatch
from werkzeug.wrappers import Request, Response

from worker.testing.fake_kubernetes_state import ClusterState
from worker.testing.server import ThreadedServer

_APPS_RESOURCES = [
    {
        "name": "deployments",
        "singularName": "deployment",
        "namespaced": True,
        "kind": "Deployment",
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        "shortNames": ["deploy"],
        "categories": ["all"],
    },
    {
        "name": "deployments/scale",
        "singularName": "",
        "namespaced": True,
        "group": "autoscaling",
        "version": "v1",
        "kind": "Scale",
        "verbs": ["get", "patch", "update"],
    },
    {
        "name": "deployments/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Deployment",
        "verbs": ["get", "patch", "update"],
    },
    {
        "name": "replicasets",
        "singularName": "replicaset",
        "namespaced": True,
        "kind": "ReplicaSet",
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        "shortNames": ["rs"],
        "categories": ["all"],
    },
]
_PATH = re.compile(
    r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/(?P<kind>deployments|replicasets)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>scale|status))?$"
)


class FakeKubernetes:
    """`with FakeKubernetes() as cluster:` — `cluster.kubeconfig_path(dir)` for kubectl and the client."""

    def __init__(self, *, port: int = 0):
        self.state = ClusterState()
        self.requests: list[dict[str, Any]] = []
        self.fail_next: list[int] = []  # statuses to answer the next requests with
        self.delay_patch: float = 0.0  # seconds to hold a PATCH (crash tests kill the caller meanwhile)
        self._lock = threading.Lock()
        self._server = ThreadedServer(self._app, port=port)
        self.url = self._server.url

    # -- seeding and inspection --------------------------------------------------------------------

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
        """Create the deployment or roll it to `template`, as `kubectl apply` and the controller would."""
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

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        with self.state.lock:
            return copy.deepcopy(self.state.deployments[(namespace, name)])

    def replicasets(self, namespace: str) -> list[dict[str, Any]]:
        with self.state.lock:
            return [copy.deepcopy(rs) for (ns, _), rs in sorted(self.state.replicasets.items()) if ns == namespace]

    def add_replicaset(self, namespace: str, replicaset: dict[str, Any]) -> None:
        """Seed a ReplicaSet as is (e.g. one with matching labels that the deployment does not own)."""
        with self.state.lock:
            self.state.replicasets[(namespace, replicaset["metadata"]["name"])] = copy.deepcopy(replicaset)

    def patch_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] in ("PATCH", "PUT")]

    def kubeconfig_path(self, directory: Path) -> Path:
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
                    "body": body,
                }
            )
            if self.fail_next:
                status = self.fail_next.pop(0)
                return _status(status, "InternalError" if status >= 500 else "BadRequest", "injected failure")
        if request.method == "PATCH" and self.delay_patch:
            threading.Event().wait(self.delay_patch)
        path = request.path
        if path == "/version":
            return _json({"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "platform": "linux/amd64"})
        if path == "/api":
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
                }
            )
        if path == "/apis":
            return _json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": "apps",
                            "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                            "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
                        }
                    ],
                }
            )
        if path == "/api/v1":
            return _json({"kind": "APIResourceList", "groupVersion": "v1", "resources": []})
        if path == "/apis/apps/v1":
            return _json(
                {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": _APPS_RESOURCES}
            )
        match = _PATH.match(path)
        if match is None:
            return _status(404, "NotFound", f"the server could not find the requested resource ({path})")
        return self._resource(request, body, **match.groupdict())

    def _resource(
        self, request: Request, body: str, *, ns: str, kind: str, name: str | None, sub: str | None
    ) -> Response:
        store = self.state.deployments if kind == "deployments" else self.state.replicasets
        singular = "deployment" if kind == "deployments" else "replicaset"
        with self.state.lock:
            if name is None:
                if request.method != "GET":
                    return _status(405, "MethodNotAllowed", "only GET is served on collections")
                return self._list(request, ns, kind, store)
            item = store.get((ns, name))
            if item is None:
                return _status(404, "NotFound", f'{kind}.apps "{name}" not found', name=name, kind=kind)
            if sub == "scale":
                return self._scale(request, body, ns, name, item)
            if request.method == "GET":
                return _json(item)
            if request.method == "PATCH" and kind == "deployments":
                try:
                    patched = _apply_patch(item, body, request.mimetype)
                except (ValueError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    return _status(422, "Invalid", f"{singular} patch failed: {exc}")
                if request.args.get("dryRun") == "All":
                    return _json(patched)
                return _json(self.state.update_deployment(ns, name, patched))
            return _status(405, "MethodNotAllowed", f"{request.method} is not served here")

    def _list(self, request: Request, ns: str, kind: str, store: dict[tuple[str, str], Any]) -> Response:
        selector = _parse_selector(request.args.get("labelSelector", ""))
        items = [
            copy.deepcopy(v)
            for (n, _), v in sorted(store.items())
            if n == ns and all(v["metadata"].get("labels", {}).get(k) == val for k, val in selector.items())
        ]
        limit = int(request.args.get("limit") or 0)
        start = int(request.args.get("continue") or 0)
        page = items[start : start + limit] if limit else items[start:]
        more = bool(limit) and start + limit < len(items)
        kind_name = "DeploymentList" if kind == "deployments" else "ReplicaSetList"
        return _json(
            {
                "apiVersion": "apps/v1",
                "kind": kind_name,
                "items": page,
                "metadata": {
                    "resourceVersion": str(self.state._version),
                    **({"continue": str(start + limit)} if more else {}),
                },
            }
        )

    def _scale(self, request: Request, body: str, ns: str, name: str, deployment: dict[str, Any]) -> Response:
        if request.method in ("PATCH", "PUT"):
            data = json.loads(body or "{}")
            replicas = data.get("spec", {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                return _status(422, "Invalid", "spec.replicas must be a non-negative integer")
            updated = copy.deepcopy(deployment)
            updated["spec"]["replicas"] = replicas
            deployment = self.state.update_deployment(ns, name, updated)
        labels = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"].get("matchLabels", {}).items())
        return _json(
            {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": deployment["metadata"]["uid"],
                    "resourceVersion": deployment["metadata"]["resourceVersion"],
                },
                "spec": {"replicas": deployment["spec"]["replicas"]},
                "status": {"replicas": deployment["spec"]["replicas"], "selector": labels},
            }
        )


def _apply_patch(item: dict[str, Any], body: str, content_type: str) -> dict[str, Any]:
    data = json.loads(body)
    if content_type == "application/json-patch+json":
        return jsonpatch.apply_patch(item, data)  # type: ignore[no-any-return]
    if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        # Strategic merge equals merge patch for the map fields these tests patch (annotations, replicas,
        # template metadata); lists are replaced whole, which is right for the fields touched here.
        return _merge(copy.deepcopy(item), data)
    raise ValueError(f"unsupported patch type {content_type}")


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # strategic-merge directives ($patch, $setElementOrder) are not needed here
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def _parse_selector(text: str) -> dict[str, str]:
    selector = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        selector[key.strip()] = value.lstrip("=").strip()
    return selector


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _status(code: int, reason: str, message: str, **details: str) -> Response:
    return _json(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        },
        code,
    )
