"""The store behind the fake apps/v1 API, with the deployment controller's revision bookkeeping.

What the real controller does when it syncs a Deployment (kubernetes/kubernetes,
pkg/controller/deployment/sync.go and pkg/controller/deployment/util): find the owned ReplicaSet whose
template equals the Deployment's (ignoring pod-template-hash), else create `<deployment>-<hash>`;
give it revision max(old)+1, recording a reused one's previous number in
deployment.kubernetes.io/revision-history; copy the Deployment's annotations but the controller's
own (so kubernetes.io/change-cause travels); mark desired/max replicas on every ReplicaSet it scales;
scale the new one up and the old ones down (instantly here); keep revisionHistoryLimit old ones.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

REVISION = "deployment.kubernetes.io/revision"
HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX = "deployment.kubernetes.io/max-replicas"
HASH = "pod-template-hash"
# The controller never copies these from a Deployment to its ReplicaSets (annotationsToSkip).
NOT_COPIED = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        HISTORY,
        DESIRED,
        MAX,
        "deprecated.deployment.rollback.to",
    }
)
MAX_HISTORY_CHARS = 2000  # the controller's --max-rev-history-length-in-chars default
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand alphanums


class ApiError(Exception):
    """A request the API server refuses; becomes a Status object with this code and reason."""

    def __init__(self, code: int, reason: str, message: str, **details: Any):
        self.code, self.reason, self.message, self.details = code, reason, message, details
        super().__init__(message)


def semantic(value: Any) -> Any:
    """Equality as Go's typed structs see it: a missing field and its zero value ({}, [], null) are equal."""
    if isinstance(value, dict):
        items = {k: semantic(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [semantic(v) for v in value]
    return value


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """The template as compared by the controller and kubectl: pod-template-hash label removed."""
    clean = semantic(template)
    labels = (clean.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH, None)
    if not labels:
        (clean.get("metadata") or {}).pop("labels", None)
    return clean  # type: ignore[no-any-return]


def template_hash(template: dict[str, Any], collisions: int = 0) -> str:
    """FNV-32a of the template, rendered with the safe alphabet as the controller renders it."""
    value = 0x811C9DC5
    for byte in json.dumps([without_hash(template), collisions], sort_keys=True).encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(value))


def revision_of(obj: dict[str, Any]) -> int | None:
    """The revision annotation as int; missing counts as 0, unparseable as None (both as kubectl)."""
    raw = (obj["metadata"].get("annotations") or {}).get(REVISION, "0")
    try:
        return int(raw)
    except ValueError:
        return None


def default_template(template: dict[str, Any]) -> None:
    """The API server's defaults for a pod template, so stored objects look like a real cluster's."""
    spec = template.setdefault("spec", {})
    for key, value in (
        ("restartPolicy", "Always"),
        ("terminationGracePeriodSeconds", 30),
        ("dnsPolicy", "ClusterFirst"),
        ("securityContext", {}),
        ("schedulerName", "default-scheduler"),
    ):
        spec.setdefault(key, value)
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        image = str(container.get("image", ""))
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest and "@" not in image else "IfNotPresent")
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")


class ClusterState:
    """Deployments and ReplicaSets by (namespace, name); every change bumps resourceVersion."""

    def __init__(self, *, epoch: float | None = None) -> None:
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.replicasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.RLock()
        self._version = 100
        # Creation times one second apart: kubectl orders ReplicaSets by them, and ties would fall
        # back to the (hash) name.
        self._epoch = int(epoch if epoch is not None else time.time() - 3600)
        self.created = self._timestamp()  # the cluster's (and its namespaces') creation time

    @property
    def resource_version(self) -> str:
        return str(self._version)

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    def _timestamp(self) -> str:
        self._epoch += 1
        return datetime.fromtimestamp(self._epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def namespaces(self) -> set[str]:
        return {"default", "kube-system"} | {ns for ns, _ in [*self.deployments, *self.replicasets]}

    def create_deployment(
        self,
        namespace: str,
        name: str,
        template: dict[str, Any],
        *,
        replicas: int = 3,
        annotations: dict[str, str] | None = None,
        paused: bool = False,
    ) -> dict[str, Any]:
        """Create a Deployment (selector = the template's labels) and let the controller sync it."""
        template = copy.deepcopy(template)
        labels = dict(template.setdefault("metadata", {}).setdefault("labels", {"app": name}))
        default_template(template)
        with self.lock:
            if (namespace, name) in self.deployments:
                raise ApiError(409, "AlreadyExists", f'deployments.apps "{name}" already exists', name=name)
            deployment = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "generation": 1,
                    "creationTimestamp": self._timestamp(),
                    "labels": dict(labels),
                    "annotations": dict(annotations or {}),
                },
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": template,
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                    },
                    "revisionHistoryLimit": 10,
                    "progressDeadlineSeconds": 600,
                    **({"paused": True} if paused else {}),
                },
                "status": {},
            }
            _validate(deployment)
            self._bump(deployment)
            self.deployments[(namespace, name)] = deployment
            self.reconcile(namespace, name)
            return deployment

    def update_deployment(
        self, namespace: str, name: str, new: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Store a changed Deployment as the API server would (checks, generation); the controller then syncs it.

        Returns the object as stored, before the controller's sync, as the API server answers a write.
        """
        with self.lock:
            old = self.deployments[(namespace, name)]
            meta, old_meta, spec = new.setdefault("metadata", {}), old["metadata"], new.setdefault("spec", {})
            if meta.get("resourceVersion", old_meta["resourceVersion"]) != old_meta["resourceVersion"]:
                raise conflict(name)
            for key in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
                meta[key] = old_meta[key]
            if spec.get("selector") != old["spec"].get("selector"):
                raise _invalid(name, "spec.selector", spec.get("selector"), "field is immutable")
            default_template(spec.setdefault("template", {}))
            _validate(new)
            new["status"] = old.get("status", {})
            if spec == old["spec"] and meta == old_meta:
                return copy.deepcopy(old)  # a patch that changes nothing stores nothing
            meta["generation"] = old_meta["generation"] + (spec != old["spec"])
            if dry_run:
                return new
            self._bump(new)
            self.deployments[(namespace, name)] = new
            stored = copy.deepcopy(new)
            self.reconcile(namespace, name)
            return stored

    def owned(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        """ReplicaSets whose controller reference is this Deployment, oldest first."""
        uid, namespace = deployment["metadata"]["uid"], deployment["metadata"]["namespace"]
        found = [
            rs
            for (ns, _), rs in self.replicasets.items()
            if ns == namespace
            and any(r.get("controller") and r.get("uid") == uid for r in rs["metadata"].get("ownerReferences") or [])
        ]
        return sorted(found, key=lambda rs: (rs["metadata"].get("creationTimestamp", ""), rs["metadata"]["name"]))

    def reconcile(self, namespace: str, name: str) -> None:
        """One sync of the deployment controller, finished at once (no gradual rollout)."""
        with self.lock:
            deployment = self.deployments[(namespace, name)]
            spec = deployment["spec"]
            before = {id(o): copy.deepcopy(o) for o in [deployment, *self.owned(deployment)]}
            template = without_hash(spec["template"])
            owned = self.owned(deployment)
            new_rs = next((rs for rs in owned if without_hash(rs["spec"]["template"]) == template), None)
            old_rss = [rs for rs in owned if rs is not new_rs]
            new_revision = max((revision_of(rs) or 0 for rs in old_rss), default=0) + 1
            paused = bool(spec.get("paused"))
            if new_rs is None and not paused:  # a paused Deployment gets no new ReplicaSet
                new_rs = self._new_replicaset(deployment, new_revision)
            elif new_rs is not None:
                _set_new_annotations(deployment, new_rs, new_revision)
            if new_rs is not None:
                deployment["metadata"].setdefault("annotations", {})[REVISION] = new_rs["metadata"]["annotations"][
                    REVISION
                ]
            if not paused:
                for rs in self.owned(deployment):
                    self._scale(deployment, rs, spec["replicas"] if rs is new_rs else 0)
            elif new_rs is not None and not any(rs["spec"]["replicas"] for rs in old_rss):
                self._scale(deployment, new_rs, spec["replicas"])  # scaling still works while paused
            self._cleanup(deployment, new_rs)
            self._status(deployment, new_rs)
            for obj in [deployment, *self.owned(deployment)]:
                if before.get(id(obj)) != obj and id(obj) in before:
                    self._bump(obj)

    def _new_replicaset(self, deployment: dict[str, Any], revision: int) -> dict[str, Any]:
        meta, spec = deployment["metadata"], deployment["spec"]
        collisions = deployment["status"].get("collisionCount", 0)
        while (meta["namespace"], f"{meta['name']}-{template_hash(spec['template'], collisions)}") in self.replicasets:
            collisions += 1  # the controller's collision avoidance: a name taken by another template
            deployment["status"]["collisionCount"] = collisions
        pod_hash = template_hash(spec["template"], collisions)
        template = copy.deepcopy(spec["template"])
        template["metadata"].setdefault("labels", {})[HASH] = pod_hash
        selector = copy.deepcopy(spec["selector"])
        selector.setdefault("matchLabels", {})[HASH] = pod_hash
        replicaset = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": self._timestamp(),
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
            "status": {"replicas": 0, "observedGeneration": 1},
        }
        _set_new_annotations(deployment, replicaset, revision)
        _set_replicas_annotations(deployment, replicaset)
        self._bump(replicaset)
        self.replicasets[(meta["namespace"], replicaset["metadata"]["name"])] = replicaset
        return replicaset

    @staticmethod
    def _scale(deployment: dict[str, Any], rs: dict[str, Any], replicas: int) -> None:
        if rs["spec"].get("replicas") != replicas:
            rs["spec"]["replicas"] = replicas
            rs["metadata"]["generation"] = rs["metadata"].get("generation", 1) + 1
            _set_replicas_annotations(deployment, rs)
        ready = {"readyReplicas": replicas, "availableReplicas": replicas} if replicas else {}
        rs["status"] = {
            "replicas": replicas,
            "fullyLabeledReplicas": replicas,
            **ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }

    def _cleanup(self, deployment: dict[str, Any], new_rs: dict[str, Any] | None) -> None:
        """Delete the oldest scaled-down ReplicaSets beyond revisionHistoryLimit."""
        limit = deployment["spec"].get("revisionHistoryLimit", 10)
        old = [rs for rs in self.owned(deployment) if rs is not new_rs and rs["spec"].get("replicas") == 0]
        old.sort(key=lambda rs: (revision_of(rs) or 0, rs["metadata"].get("creationTimestamp", "")))
        for rs in old[: max(len(old) - limit, 0)]:
            del self.replicasets[(rs["metadata"]["namespace"], rs["metadata"]["name"])]

    def _status(self, deployment: dict[str, Any], new_rs: dict[str, Any] | None) -> None:
        replicas = sum(rs["spec"]["replicas"] for rs in self.owned(deployment))
        updated = new_rs["spec"]["replicas"] if new_rs is not None else 0
        rs_name = new_rs["metadata"]["name"] if new_rs else ""
        progressing = (
            ("Unknown", "DeploymentPaused", "Deployment is paused")
            if deployment["spec"].get("paused")
            else ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        )
        conditions = [("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")]
        conditions.append(("Progressing", *progressing))
        at = deployment["metadata"]["creationTimestamp"]  # stable, so a sync that changes nothing stores nothing
        counts = {"replicas": replicas, "updatedReplicas": updated, "readyReplicas": replicas}
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            **{k: v for k, v in {**counts, "availableReplicas": replicas}.items() if v},
            **{k: v for k, v in deployment["status"].items() if k == "collisionCount"},
            "conditions": [
                {"type": t, "status": s, "lastUpdateTime": at, "lastTransitionTime": at, "reason": r, "message": m}
                for t, s, r, m in conditions
            ],
        }


def _set_new_annotations(deployment: dict[str, Any], rs: dict[str, Any], revision: int) -> None:
    """SetNewReplicaSetAnnotations: copy the Deployment's annotations, raise the revision, keep history."""
    annotations = rs["metadata"].setdefault("annotations", {})
    for key, value in (deployment["metadata"].get("annotations") or {}).items():
        if key not in NOT_COPIED:
            annotations[key] = value
    had = REVISION in annotations
    old = revision_of(rs) or 0
    if old < revision:
        annotations[REVISION] = str(revision)
        if had:  # a reused ReplicaSet: we are rolling back to it
            history = [h for h in annotations.get(HISTORY, "").split(",") if h]
            while history and len(",".join([*history, str(old)])) > MAX_HISTORY_CHARS:
                history.pop(0)
            annotations[HISTORY] = ",".join([*history, str(old)])


def _set_replicas_annotations(deployment: dict[str, Any], rs: dict[str, Any]) -> None:
    replicas = deployment["spec"]["replicas"]
    annotations = rs["metadata"].setdefault("annotations", {})
    annotations[DESIRED] = str(replicas)
    annotations[MAX] = str(replicas + _max_surge(deployment))


def _max_surge(deployment: dict[str, Any]) -> int:
    strategy = deployment["spec"].get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(int(surge[:-1]) * deployment["spec"]["replicas"] / 100)
    return int(surge)


def conflict(name: str) -> ApiError:
    """The answer to a write whose resourceVersion is not the stored one."""
    message = "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on deployments.apps "{name}": {message}',
        name=name,
        group="apps",
    )


def _invalid(name: str, field: str, value: Any, detail: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'Deployment.apps "{name}" is invalid: {field}: Invalid value: {json.dumps(value)}: {detail}',
        name=name,
        group="apps",
        kind="Deployment",
        causes=[
            {"reason": "FieldValueInvalid", "message": f"Invalid value: {json.dumps(value)}: {detail}", "field": field}
        ],
    )


def _validate(deployment: dict[str, Any]) -> None:
    """The checks the API server makes that a rollback or a scale could trip over."""
    name, spec = deployment["metadata"]["name"], deployment.get("spec") or {}
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise _invalid(name, "spec.replicas", replicas, "must be greater than or equal to 0")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        raise _invalid(name, "spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    if not ((spec.get("template") or {}).get("spec") or {}).get("containers"):
        raise ApiError(
            422,
            "Invalid",
            f'Deployment.apps "{name}" is invalid: spec.template.spec.containers: Required value',
            name=name,
            group="apps",
            kind="Deployment",
        )
