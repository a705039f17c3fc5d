"""The state behind the fake apps/v1 API, with the deployment controller's revision bookkeeping.

What the real controller does when a Deployment's pod template changes (kubernetes/kubernetes,
pkg/controller/deployment/sync.go): reuse the owned ReplicaSet whose template equals the new one
(ignoring pod-template-hash) or create `<deployment>-<hash>`; give it revision max+1 (recording the
old number in deployment.kubernetes.io/revision-history); copy the deployment's annotations but the
controller's own; scale it up and the others down (instantly here).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

REVISION = "deployment.kubernetes.io/revision"
HISTORY = "deployment.kubernetes.io/revision-history"
HASH = "pod-template-hash"
# Annotations the controller never copies from a deployment to its ReplicaSets.
_NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    HISTORY,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
}


def _normalised(value: Any) -> Any:
    """Typed clients send zero values (creationTimestamp: null, {}): semantic equality ignores them."""
    if isinstance(value, dict):
        items = {k: _normalised(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    clean = _normalised(copy.deepcopy(template))
    labels = clean.setdefault("metadata", {}).get("labels") or {}
    labels.pop(HASH, None)
    clean["metadata"]["labels"] = labels
    return clean


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(without_hash(template), sort_keys=True).encode()).hexdigest()
    # Kubernetes renders the hash with a safe alphabet; any stable 10-character string serves here.
    return "".join("bcdfghjklmnpqrstvwxz2456789"[int(c, 16)] for c in digest[:10])


class ClusterState:
    """Deployments and ReplicaSets by (namespace, name); every write bumps resourceVersion."""

    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.replicasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.RLock()
        self._version = 100
        self._clock = 0

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _timestamp(self) -> str:
        # Strictly increasing creation times: kubectl orders ReplicaSets by them.
        self._clock += 1
        return datetime.fromtimestamp(1_790_000_000 + self._clock, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def create_deployment(
        self,
        namespace: str,
        name: str,
        template: dict[str, Any],
        *,
        replicas: int = 3,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        labels = dict(template.get("metadata", {}).get("labels") or {"app": name})
        with self.lock:
            deployment = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "generation": 1,
                    "resourceVersion": self._next_version(),
                    "creationTimestamp": self._timestamp(),
                    "labels": dict(labels),
                    "annotations": dict(annotations or {}),
                },
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": copy.deepcopy(template),
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                    },
                    "revisionHistoryLimit": 10,
                    "progressDeadlineSeconds": 600,
                },
                "status": {},
            }
            self.deployments[(namespace, name)] = deployment
            self.reconcile(namespace, name)
            return deployment

    def owned(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        uid = deployment["metadata"]["uid"]
        namespace = deployment["metadata"]["namespace"]
        return [
            rs
            for (ns, _), rs in self.replicasets.items()
            if ns == namespace
            and any(
                ref.get("uid") == uid and ref.get("controller") for ref in rs["metadata"].get("ownerReferences", [])
            )
        ]

    def reconcile(self, namespace: str, name: str) -> None:
        """The deployment controller's sync after a change."""
        with self.lock:
            deployment = self.deployments[(namespace, name)]
            template = without_hash(deployment["spec"]["template"])
            owned = self.owned(deployment)
            revisions = [int(rs["metadata"].get("annotations", {}).get(REVISION, "0") or 0) for rs in owned]
            top = max(revisions, default=0)
            current = next((rs for rs in owned if without_hash(rs["spec"]["template"]) == template), None)
            if current is None:
                current = self._new_replicaset(deployment, template, revision=top + 1)
            else:
                annotations = current["metadata"].setdefault("annotations", {})
                old = int(annotations.get(REVISION, "0") or 0)
                if old < top:
                    history = [h for h in annotations.get(HISTORY, "").split(",") if h]
                    annotations[HISTORY] = ",".join([*history, str(old)])
                    annotations[REVISION] = str(top + 1)
                self._copy_annotations(deployment, current)
            for rs in self.owned(deployment):
                wanted = deployment["spec"].get("replicas", 1) if rs is current else 0
                if rs["spec"].get("replicas") != wanted:
                    rs["spec"]["replicas"] = wanted
                    rs["metadata"]["resourceVersion"] = self._next_version()
                rs["status"] = {
                    "replicas": wanted,
                    "readyReplicas": wanted,
                    "availableReplicas": wanted,
                    "observedGeneration": rs["metadata"].get("generation", 1),
                }
            annotations = deployment["metadata"].setdefault("annotations", {})
            annotations[REVISION] = current["metadata"]["annotations"][REVISION]
            replicas = deployment["spec"].get("replicas", 1)
            deployment["status"] = {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            }

    def _new_replicaset(self, deployment: dict[str, Any], template: dict[str, Any], *, revision: int) -> dict[str, Any]:
        meta = deployment["metadata"]
        pod_hash = template_hash(template)
        rs_template = copy.deepcopy(template)
        rs_template["metadata"].setdefault("labels", {})[HASH] = pod_hash
        selector = copy.deepcopy(deployment["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH] = pod_hash
        replicaset = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "uid": str(uuid.uuid4()),
                "resourceVersion": self._next_version(),
                "generation": 1,
                "creationTimestamp": self._timestamp(),
                "labels": dict(rs_template["metadata"]["labels"]),
                "annotations": {REVISION: str(revision)},
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
            "spec": {"replicas": 0, "selector": selector, "template": rs_template},
            "status": {},
        }
        self._copy_annotations(deployment, replicaset)
        self.replicasets[(meta["namespace"], replicaset["metadata"]["name"])] = replicaset
        return replicaset

    @staticmethod
    def _copy_annotations(deployment: dict[str, Any], replicaset: dict[str, Any]) -> None:
        annotations = replicaset["metadata"].setdefault("annotations", {})
        for key, value in (deployment["metadata"].get("annotations") or {}).items():
            if key not in _NOT_COPIED:
                annotations[key] = value

    def update_deployment(self, namespace: str, name: str, new: dict[str, Any]) -> dict[str, Any]:
        """Store a patched deployment: bump generation on spec changes, then reconcile."""
        with self.lock:
            old = self.deployments[(namespace, name)]
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            new["metadata"]["resourceVersion"] = self._next_version()
            new["metadata"]["uid"] = old["metadata"]["uid"]
            self.deployments[(namespace, name)] = new
            if new["spec"].get("template") != old["spec"].get("template") or new["spec"].get("replicas") != old[
                "spec"
            ].get("replicas"):
                self.reconcile(namespace, name)
            return new
