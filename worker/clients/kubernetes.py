"""Kubernetes Deployments through the official client, with `kubectl rollout`'s exact semantics.

Rollback follows kubectl (pkg/polymorphichelpers/rollback.go): the ReplicaSets the deployment
controls, found by its selector; revisions from deployment.kubernetes.io/revision; the second-highest
revision or --to-revision; the target template minus pod-template-hash; annotations rebuilt from
kubectl's skip list; one JSON Patch. Restart and scale send the patches kubectl sends. Objects are
read as the server's JSON, not through the client's models, so no field is lost on the way back.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, ConfigDict
from urllib3.exceptions import HTTPError as Urllib3Error

from worker.errors import PermanentError, TransientError

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
HASH = "pod-template-hash"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# kubectl keeps these deployment annotations as they are and copies every other one from the ReplicaSet.
SKIP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
PAUSED_ROLLBACK = "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RollbackPlan(_Model):
    """What `kubectl rollout undo` would do now: the revisions, the exact template and annotations."""

    namespace: str
    deployment: str
    current_revision: int
    target_revision: int
    target_template: dict[str, Any]  # pod-template-hash removed, as kubectl patches it
    current_template: dict[str, Any]
    annotations: dict[str, str]  # the deployment's annotations after the rollback (kubectl replaces them all)
    noop: bool  # the template already equals the target: kubectl's "skipped rollback"
    state_fingerprint: str  # changes when the current template, its revision or the target changes
    target_fingerprint: str  # the target template's; equals DeploymentState.template_fingerprint once rolled back


class RollbackResult(_Model):
    """The revision rolled back to (numbered as in the plan) and whether kubectl would have skipped it."""

    revision: int
    skipped: bool


class RestartResult(_Model):
    """The restartedAt value now on the pod template; skipped when it was already there."""

    restarted_at: str
    skipped: bool


class ScaleResult(_Model):
    """The replica count the scale subresource reports after the change."""

    replicas: int


class DeploymentState(_Model):
    """A Deployment as verification and idempotency checks need it."""

    revision: int
    replicas: int
    paused: bool
    generation: int
    observed_generation: int
    updated_replicas: int
    available_replicas: int
    restarted_at: str | None
    fingerprint: str  # template and replica count: changes whenever either changes
    template_fingerprint: str


class KubernetesClient:
    """Deployment operations with kubectl's semantics; raises only TransientError and PermanentError."""

    def __init__(self, api_client: client.ApiClient, *, timeout: float = 10.0, page_size: int = 500):
        # An injected ApiClient keeps its urllib3 retry settings; give it retries=0 as load() does, or
        # GETs answered 429/503 with Retry-After are retried (and slept on) below the executor's policy.
        self._apps = client.AppsV1Api(api_client)
        self._timeout = timeout  # seconds, for every request
        self._page_size = page_size  # ReplicaSets per LIST page (`continue` tokens are followed)

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
        configuration.retries = 0  # the executor retries transient errors, under its one policy
        return cls(client.ApiClient(configuration), timeout=timeout)

    # -- reads --------------------------------------------------------------------------------------

    def get_deployment_state(self, *, namespace: str, deployment: str) -> DeploymentState:
        """Revision, replicas, pause and fingerprints of a Deployment."""
        found = self._deployment(namespace, deployment)
        spec, status = found["spec"], found.get("status") or {}
        template = _without_hash(spec["template"])
        replicas = int(spec.get("replicas", 1))
        return DeploymentState(
            revision=_revision(found) or 0,
            replicas=replicas,
            paused=bool(spec.get("paused")),
            generation=int(found["metadata"].get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
            updated_replicas=int(status.get("updatedReplicas", 0)),
            available_replicas=int(status.get("availableReplicas", 0)),
            restarted_at=((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT),
            fingerprint=_fingerprint({"template": template, "replicas": replicas}),
            template_fingerprint=_fingerprint(template),
        )

    def plan_rollout_undo(self, *, namespace: str, deployment: str, to_revision: int | None = None) -> RollbackPlan:
        """Read-only: what `kubectl rollout undo [--to-revision=N]` would do now (its messages on failure)."""
        to_revision = to_revision or 0  # kubectl's default 0 means "the previous revision"
        if to_revision < 0:
            raise PermanentError(f"unable to find specified revision {to_revision} in history")
        found = self._deployment(namespace, deployment)
        current = found["spec"]["template"]
        new_rs, candidates = _candidates(found, self._owned_replicasets(found))
        target = _pick(candidates, to_revision)
        if target is None and to_revision and new_rs is not None and _renumbered(new_rs, to_revision):
            target = new_rs  # already rolled back to it (the controller renumbered it): the same no-op again
        if target is None:
            if to_revision:
                raise PermanentError(f"unable to find specified revision {to_revision} in history")
            raise PermanentError(f'no rollout history found for deployment "{deployment}"')
        if found["spec"].get("paused"):
            raise PermanentError(PAUSED_ROLLBACK)
        target_template = copy.deepcopy(target["spec"]["template"])
        ((target_template.get("metadata") or {}).get("labels") or {}).pop(HASH, None)
        annotations = {k: v for k, v in (found["metadata"].get("annotations") or {}).items() if k in SKIP_ANNOTATIONS}
        annotations |= {
            k: v for k, v in (target["metadata"].get("annotations") or {}).items() if k not in SKIP_ANNOTATIONS
        }
        target_revision = to_revision or _revision(target) or 0
        target_fingerprint = _fingerprint(_without_hash(target_template))
        current_revision = _revision(found) or 0
        state = {"template": _without_hash(current), "revision": current_revision, "target": target_fingerprint}
        return RollbackPlan(
            namespace=namespace,
            deployment=deployment,
            current_revision=current_revision,
            target_revision=target_revision,
            target_template=target_template,
            current_template=current,
            annotations=annotations,
            noop=_without_hash(target_template) == _without_hash(current),
            state_fingerprint=_fingerprint({**state, "target_revision": target_revision}),
            target_fingerprint=target_fingerprint,
        )

    def _deployment(self, namespace: str, name: str) -> dict[str, Any]:
        _check_names(namespace, name)
        return self._call(self._apps.read_namespaced_deployment, name, namespace)

    def _owned_replicasets(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        """ReplicaSets matching the selector whose controller reference is this deployment, in list order."""
        meta = deployment["metadata"]
        selector = selector_string(deployment["spec"].get("selector") or {})
        items: list[dict[str, Any]] = []
        token = None
        while True:
            extra = {"_continue": token} if token else {}
            page = self._call(
                self._apps.list_namespaced_replica_set,
                meta["namespace"],
                label_selector=selector,
                limit=self._page_size,
                **extra,
            )
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        return [
            rs
            for rs in items
            if any(
                r.get("controller") and r.get("uid") == meta["uid"] for r in rs["metadata"].get("ownerReferences") or []
            )
        ]

    # -- changes ------------------------------------------------------------------------------------

    def rollout_undo(self, *, namespace: str, deployment: str, to_revision: int | None = None) -> RollbackResult:
        """`kubectl rollout undo`; with to_revision, repeating it once there is the 'skipped rollback' no-op."""
        plan = self.plan_rollout_undo(namespace=namespace, deployment=deployment, to_revision=to_revision)
        if plan.noop:
            return RollbackResult(revision=plan.target_revision, skipped=True)
        patch = [
            {"op": "replace", "path": "/spec/template", "value": plan.target_template},
            {"op": "replace", "path": "/metadata/annotations", "value": plan.annotations},
        ]
        self._call(self._apps.patch_namespaced_deployment, deployment, namespace, patch, _content_type=JSON_PATCH)
        return RollbackResult(revision=plan.target_revision, skipped=False)

    def rollout_restart(self, *, namespace: str, deployment: str, at: datetime) -> RestartResult:
        """`kubectl rollout restart`: stamp restartedAt=`at` (RFC 3339); the same `at` again changes nothing."""
        if at.tzinfo is None:
            raise PermanentError("restart time must be timezone-aware")
        stamp = at.isoformat(timespec="seconds").replace("+00:00", "Z")
        found = self._deployment(namespace, deployment)
        if found["spec"].get("paused"):
            raise PermanentError(
                f'deployments.apps "{deployment}" can\'t restart paused deployment (run rollout resume first)'
            )
        current = ((found["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
        if current is not None and _same_instant(current, at):
            return RestartResult(restarted_at=current, skipped=True)
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        self._call(
            self._apps.patch_namespaced_deployment, deployment, namespace, body, _content_type=STRATEGIC_MERGE_PATCH
        )
        return RestartResult(restarted_at=stamp, skipped=False)

    def scale(self, *, namespace: str, deployment: str, replicas: int) -> ScaleResult:
        """`kubectl scale --replicas=N`: a merge patch of the scale subresource."""
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise PermanentError(f"replicas must be a non-negative integer, not {replicas!r}")
        _check_names(namespace, deployment)
        scale = self._call(
            self._apps.patch_namespaced_deployment_scale,
            deployment,
            namespace,
            {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
        )
        return ScaleResult(replicas=int((scale.get("spec") or {}).get("replicas", 0)))

    # -- errors -------------------------------------------------------------------------------------

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the API and return the server's JSON; SDK and transport errors become ours."""
        what = f"{method.__name__.replace('_', ' ')} {'/'.join(reversed(args[:2])) if args else ''}".strip()
        try:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            message = _api_message(exc)
            if exc.status in (None, 0, 429) or exc.status >= 500:
                raise TransientError(f"{what}: {exc.status} {message}", retry_after=_retry_after(exc)) from None
            raise PermanentError(message) from None
        except (Urllib3Error, OSError) as exc:
            raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from None
        try:
            return json.loads(response.data)
        except ValueError as exc:  # a body that is not JSON: a proxy in the way, not the API server
            raise TransientError(f"{what}: unreadable response: {exc}") from None


def selector_string(selector: dict[str, Any]) -> str:
    """metav1.LabelSelectorAsSelector(...).String(): requirements sorted by key, set values sorted."""
    parts = [(k, f"{k}={v}") for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], sorted(expression.get("values") or [])
        text = {"In": f"{key} in ({','.join(values)})", "NotIn": f"{key} notin ({','.join(values)})"}
        text |= {"Exists": key, "DoesNotExist": f"!{key}"}
        if op not in text:
            raise PermanentError(f"{op!r} is not a valid label selector operator")
        parts.append((key, text[op]))
    return ",".join(text for _, text in sorted(parts, key=lambda p: p[0]))


def _check_names(namespace: str, name: str) -> None:
    # An empty name would turn a GET of one object into a LIST of all of them.
    for value, what in ((namespace, "namespace"), (name, "deployment name")):
        if not isinstance(value, str) or not value or "/" in value:
            raise PermanentError(f"invalid {what}: {value!r}")


def _candidates(deployment: dict[str, Any], owned: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[Any]]:
    """kubectl's GetAllReplicaSets: the new ReplicaSet (oldest with the same template) last, the old ones first."""
    template = _without_hash(deployment["spec"]["template"])
    by_age = sorted(owned, key=lambda rs: (rs["metadata"].get("creationTimestamp") or "", rs["metadata"]["name"]))
    new_rs = next((rs for rs in by_age if _without_hash(rs["spec"]["template"]) == template), None)
    # FindNewReplicaSet sorts the list it is given in place, so kubectl walks the old ones by age too.
    return new_rs, [rs for rs in by_age if rs is not new_rs] + ([new_rs] if new_rs is not None else [])


def _pick(candidates: list[dict[str, Any]], to_revision: int) -> dict[str, Any] | None:
    """kubectl's deploymentRevision loop, ties and revision 0 included."""
    top, second = (-1, None), (-1, None)  # (revision, ReplicaSet); -1 as kubectl, so revision 0 counts
    for rs in candidates:
        revision = _revision(rs)
        if revision is None:
            continue  # kubectl skips a ReplicaSet whose revision does not parse
        if to_revision and revision == to_revision:
            return rs
        if revision > top[0]:
            top, second = (revision, rs), top
        elif revision > second[0]:
            second = (revision, rs)
    return None if to_revision else second[1]


def _renumbered(rs: dict[str, Any], revision: int) -> bool:
    """The controller moved this ReplicaSet from `revision` to a new number (revision-history keeps the old)."""
    history = (rs["metadata"].get("annotations") or {}).get(REVISION_HISTORY, "")
    return str(revision) in history.split(",")


def _revision(obj: dict[str, Any]) -> int | None:
    """deploymentutil.Revision: a missing annotation is 0; one that does not parse is None."""
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return None


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """The template as kubectl compares it: without pod-template-hash, zero values dropped."""
    clean = _semantic(template)
    labels = (clean.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH, None)
    return _semantic(clean)  # type: ignore[no-any-return]


def _semantic(value: Any) -> Any:
    """Equality as apimachinery's semantic DeepEqual sees typed objects: zero values (null, {}, []) do not count."""
    if isinstance(value, dict):
        items = {k: _semantic(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(_semantic(value), sort_keys=True).encode()).hexdigest()


def _same_instant(stamp: str, at: datetime) -> bool:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) == at.replace(microsecond=0)
    except ValueError:
        return False


def _api_message(exc: ApiException) -> str:
    """The Status object's message, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or f"HTTP {exc.status}")


def _retry_after(exc: ApiException) -> float | None:
    """Retry-After in seconds, given as seconds or as an HTTP date."""
    value = (exc.headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        delta = parsedate_to_datetime(value) - datetime.now().astimezone()
    except (TypeError, ValueError):
        return None
    return max(delta.total_seconds(), 0.0)
