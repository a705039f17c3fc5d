"""Kubernetes Deployments through the official client, with `kubectl rollout`'s exact semantics.

Rollback follows kubectl (pkg/polymorphichelpers/rollback.go): the owned ReplicaSets by the
deployment's selector and controller reference, revisions from deployment.kubernetes.io/revision,
the previous (second-highest) revision or --to-revision, the target template minus
pod-template-hash, annotations rebuilt from kubectl's skip list, one JSON Patch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError as Urllib3Error

from worker.errors import PermanentError, TransientError

REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# kubectl keeps these deployment annotations as they are and copies every other one from the ReplicaSet.
SKIP_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
)
PAUSED = "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again"


@dataclass(frozen=True)
class RollbackPlan:
    current_revision: int
    target_revision: int
    target_template: dict[str, Any]
    current_template: dict[str, Any]
    annotations: dict[str, str]
    noop: bool
    state_fingerprint: str
    target_fingerprint: str  # the target template's: after the rollback the deployment has exactly it


@dataclass(frozen=True)
class RollbackResult:
    revision: int
    skipped: bool


@dataclass(frozen=True)
class DeploymentState:
    revision: int
    replicas: int
    paused: bool
    fingerprint: str  # changes whenever the pod template or the replica count changes
    template_fingerprint: str


class KubernetesClient:
    """Deployment operations; raises only TransientError and PermanentError."""

    def __init__(self, api_client: client.ApiClient):
        self._api_client = api_client
        self._apps = client.AppsV1Api(api_client)

    @classmethod
    def load(cls, *, timeout: float = 10.0) -> KubernetesClient:
        """In-cluster config inside a pod, else KUBECONFIG / ~/.kube/config, as the official client loads them."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            try:
                # The client reads KUBECONFIG when it is imported; read it now, as kubectl does.
                config.load_kube_config(
                    config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
                )
            except (ConfigException, OSError) as exc:
                raise PermanentError(f"no Kubernetes configuration found: {exc}") from None
        configuration.retries = 0  # the executor retries transient errors, with backoff, once
        api = client.ApiClient(configuration)
        api.rest_client.pool_manager.connection_pool_kw["timeout"] = timeout
        return cls(api)

    # -- reads --------------------------------------------------------------------------------------

    def _deployment(self, namespace: str, name: str) -> dict[str, Any]:
        found = self._call(
            f"read deployment {namespace}/{name}", self._apps.read_namespaced_deployment, name, namespace
        )
        return dict(self._api_client.sanitize_for_serialization(found))

    def _owned_replicasets(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        namespace = deployment["metadata"]["namespace"]
        selector = _selector(deployment["spec"].get("selector") or {})
        uid = deployment["metadata"]["uid"]
        items: list[dict[str, Any]] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": selector, "limit": 500}
            if token:
                kwargs["_continue"] = token
            page = self._call(
                f"list replicasets in {namespace}", self._apps.list_namespaced_replica_set, namespace, **kwargs
            )
            data = self._api_client.sanitize_for_serialization(page)
            items += data.get("items") or []
            token = (data.get("metadata") or {}).get("continue")
            if not token:
                break
        return [
            rs
            for rs in items
            if any(
                ref.get("controller") and ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or []
            )
        ]

    def get_deployment_state(self, *, namespace: str, deployment: str) -> DeploymentState:
        found = self._deployment(namespace, deployment)
        template = _without_hash(found["spec"]["template"])
        replicas = int(found["spec"].get("replicas", 1))
        revision = _revision(found)
        return DeploymentState(
            revision=revision,
            replicas=replicas,
            paused=bool(found["spec"].get("paused")),
            fingerprint=_fingerprint({"template": template, "replicas": replicas}),
            template_fingerprint=_fingerprint(template),
        )

    def plan_rollout_undo(self, *, namespace: str, deployment: str, to_revision: int | None = None) -> RollbackPlan:
        """Read-only: what `kubectl rollout undo` would do now (kubectl's messages on failure)."""
        if to_revision is not None and to_revision < 0:
            raise PermanentError(f"unable to find specified revision {to_revision} in history")
        found = self._deployment(namespace, deployment)
        owned = self._owned_replicasets(found)
        current_template = _without_hash(found["spec"]["template"])
        by_revision: dict[int, dict[str, Any]] = {}
        for rs in sorted(owned, key=lambda r: (r["metadata"].get("creationTimestamp") or "", r["metadata"]["name"])):
            raw = (rs["metadata"].get("annotations") or {}).get(REVISION, "0")
            try:
                by_revision[int(raw or 0)] = rs
            except ValueError:
                continue  # kubectl skips a ReplicaSet whose revision does not parse
        if not to_revision:
            revisions = sorted(by_revision, reverse=True)
            if len(revisions) < 2:
                raise PermanentError(f'no rollout history found for deployment "{deployment}"')
            target_revision = revisions[1]
        else:
            if to_revision not in by_revision:
                raise PermanentError(f"unable to find specified revision {to_revision} in history")
            target_revision = to_revision
        if found["spec"].get("paused"):
            raise PermanentError(PAUSED)
        target = by_revision[target_revision]
        target_template = _without_hash(target["spec"]["template"])
        annotations = {k: v for k, v in (found["metadata"].get("annotations") or {}).items() if k in SKIP_ANNOTATIONS}
        for key, value in (target["metadata"].get("annotations") or {}).items():
            if key not in SKIP_ANNOTATIONS:
                annotations[key] = value
        return RollbackPlan(
            current_revision=_revision(found),
            target_revision=target_revision,
            target_template=target_template,
            current_template=current_template,
            annotations=annotations,
            noop=_semantic(target_template) == _semantic(current_template),
            state_fingerprint=_fingerprint({"template": current_template, "revision": _revision(found)}),
            target_fingerprint=_fingerprint(target_template),
        )

    # -- changes ------------------------------------------------------------------------------------

    def rollout_undo(self, *, namespace: str, deployment: str, to_revision: int | None = None) -> RollbackResult:
        """`kubectl rollout undo` (a no-op 'skipped rollback' when already at the target template)."""
        plan = self.plan_rollout_undo(namespace=namespace, deployment=deployment, to_revision=to_revision)
        if plan.noop:
            return RollbackResult(plan.target_revision, skipped=True)
        patch = [
            {"op": "replace", "path": "/spec/template", "value": plan.target_template},
            {"op": "replace", "path": "/metadata/annotations", "value": plan.annotations},
        ]
        self._call(
            f"roll back deployment {namespace}/{deployment}",
            self._apps.patch_namespaced_deployment,
            deployment,
            namespace,
            patch,
        )
        return RollbackResult(plan.target_revision, skipped=False)

    def rollout_restart(self, *, namespace: str, deployment: str, at: datetime) -> None:
        """`kubectl rollout restart`: stamp restartedAt (the same `at` again changes nothing)."""
        found = self._deployment(namespace, deployment)
        if found["spec"].get("paused"):
            raise PermanentError("can't restart paused deployment (run rollout resume first)")
        stamp = at.isoformat(timespec="seconds").replace("+00:00", "Z")
        current = ((found["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
        if current == stamp:
            return
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        self._call(
            f"restart deployment {namespace}/{deployment}",
            self._apps.patch_namespaced_deployment,
            deployment,
            namespace,
            body,
        )

    def scale(self, *, namespace: str, deployment: str, replicas: int) -> None:
        """`kubectl scale --replicas=N`: a merge patch of the scale subresource."""
        self._call(
            f"scale deployment {namespace}/{deployment}",
            self._apps.patch_namespaced_deployment_scale,
            deployment,
            namespace,
            {"spec": {"replicas": replicas}},
        )

    # -- errors -------------------------------------------------------------------------------------

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ApiException as exc:
            message = _api_message(exc)
            if exc.status in (429,) or (exc.status or 0) >= 500:
                retry = (exc.headers or {}).get("Retry-After") if exc.headers else None
                raise TransientError(
                    f"{what}: {exc.status} {message}", retry_after=float(retry) if retry and retry.isdigit() else None
                ) from None
            raise PermanentError(f"{what}: {message}") from None
        except (Urllib3Error, OSError) as exc:
            raise TransientError(f"{what}: {exc}") from None


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def _selector(selector: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(template)
    labels = (clean.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH, None)
    return clean


def _semantic(value: Any) -> Any:
    """Equality as Kubernetes' semantic DeepEqual sees it: zero values (null, {}, []) do not count."""
    if isinstance(value, dict):
        items = {k: _semantic(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def _revision(deployment: dict[str, Any]) -> int:
    try:
        return int((deployment["metadata"].get("annotations") or {}).get(REVISION, "0") or 0)
    except ValueError:
        return 0


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(_semantic(value), sort_keys=True).encode()).hexdigest()
