"""The fake apps/v1 API and our rollback, proven against the real kubectl on the same starting state."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from worker.clients.kubernetes import KubernetesClient, _semantic
from worker.errors import PermanentError
from worker.testing.fake_kubernetes import FakeKubernetes

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (v1.32) is not on PATH")


def template(image: str, *, env: str = "prod") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "checkout"}, "annotations": {"team": "checkout"}},
        "spec": {"containers": [{"name": "checkout", "image": image, "env": [{"name": "ENV", "value": env}]}]},
    }


def seed(cluster: FakeKubernetes) -> None:
    """Three revisions with change causes, a last-applied annotation, and a look-alike RS it does not own."""
    for n, image in enumerate(["registry/checkout:1.41", "registry/checkout:1.42", "registry/checkout:1.43"], 1):
        extra = {"kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Deployment"}'} if n == 3 else None
        cluster.deploy_template("shop", "checkout", template(image), change_cause=f"deploy {n}", annotations=extra)
    cluster.add_replicaset(
        "shop",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "checkout-stray",
                "namespace": "shop",
                "uid": "stray",
                "labels": {"app": "checkout"},
                "annotations": {"deployment.kubernetes.io/revision": "99"},
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "checkout"}},
                "template": template("registry/checkout:evil"),
            },
        },
    )


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeKubernetes, FakeKubernetes, Any]]:
    with FakeKubernetes() as by_kubectl, FakeKubernetes() as by_worker:
        seed(by_kubectl)
        seed(by_worker)
        kubeconfig = by_kubectl.kubeconfig_path(tmp_path)
        monkeypatch.setenv("KUBECONFIG", str(by_worker.kubeconfig_path(tmp_path / "w")))

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [KUBECTL, "--kubeconfig", str(kubeconfig), "-n", "shop", *args],  # type: ignore[list-item]
                capture_output=True,
                text=True,
                timeout=60,
            )

        yield by_kubectl, by_worker, kubectl


@pytest.fixture(autouse=True)
def _dirs(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()


def same_state(a: FakeKubernetes, b: FakeKubernetes) -> None:
    da, db = a.deployment("shop", "checkout"), b.deployment("shop", "checkout")
    assert _semantic(da["spec"]["template"]) == _semantic(db["spec"]["template"])
    assert da["metadata"]["annotations"] == db["metadata"]["annotations"]

    def revisions(cluster: FakeKubernetes) -> list[tuple[str, str, int]]:
        return sorted(
            (
                r["metadata"]["name"],
                r["metadata"]["annotations"].get("deployment.kubernetes.io/revision"),
                r["spec"]["replicas"],
            )
            for r in cluster.replicasets("shop")
        )

    assert revisions(a) == revisions(b)


def test_undo_to_the_previous_revision_matches_kubectl(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl = pair
    result = kubectl("rollout", "undo", "deployment/checkout")
    assert result.returncode == 0, result.stderr
    assert "rolled back" in result.stdout
    outcome = KubernetesClient.load().rollout_undo(namespace="shop", deployment="checkout")
    assert (outcome.revision, outcome.skipped) == (2, False)
    same_state(by_kubectl, by_worker)
    deployment = by_worker.deployment("shop", "checkout")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry/checkout:1.42"
    assert deployment["metadata"]["annotations"]["kubernetes.io/change-cause"] == "deploy 2"
    assert "pod-template-hash" not in deployment["spec"]["template"]["metadata"]["labels"]
    assert by_worker.patch_requests()[-1]["content_type"] == "application/json-patch+json"


def test_undo_to_a_given_revision_matches_kubectl(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl = pair
    assert kubectl("rollout", "undo", "deployment/checkout", "--to-revision=1").returncode == 0
    KubernetesClient.load().rollout_undo(namespace="shop", deployment="checkout", to_revision=1)
    same_state(by_kubectl, by_worker)


def test_undo_to_the_current_revision_is_skipped_like_kubectl(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl = pair
    result = kubectl("rollout", "undo", "deployment/checkout", "--to-revision=3")
    assert "skipped rollback" in result.stdout + result.stderr
    outcome = KubernetesClient.load().rollout_undo(namespace="shop", deployment="checkout", to_revision=3)
    assert outcome.skipped
    assert by_worker.patch_requests() == []
    same_state(by_kubectl, by_worker)


def test_after_a_rollback_the_target_template_is_recognised_although_renumbered(pair) -> None:  # type: ignore[no-untyped-def]
    _, by_worker, kubectl = pair
    client = KubernetesClient.load()
    plan = client.plan_rollout_undo(namespace="shop", deployment="checkout")
    client.rollout_undo(namespace="shop", deployment="checkout", to_revision=plan.target_revision)
    state = client.get_deployment_state(namespace="shop", deployment="checkout")
    assert state.template_fingerprint == plan.target_fingerprint  # what crash recovery checks
    assert state.revision == 4  # the controller gave the restored ReplicaSet a new number...
    # kubectl would now say "unable to find specified revision 2"; ours finds 2 in the restored ReplicaSet's
    # revision-history and skips, so repeating a resolved step after a crash is a no-op.
    again = client.rollout_undo(namespace="shop", deployment="checkout", to_revision=plan.target_revision)
    assert again.skipped
    assert len(by_worker.patch_requests()) == 1


def test_unknown_revision_and_missing_history_use_kubectls_messages(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, _, kubectl = pair
    result = kubectl("rollout", "undo", "deployment/checkout", "--to-revision=7")
    assert "unable to find specified revision 7 in history" in result.stderr
    client = KubernetesClient.load()
    with pytest.raises(PermanentError, match="unable to find specified revision 7 in history"):
        client.rollout_undo(namespace="shop", deployment="checkout", to_revision=7)
    with FakeKubernetes() as single:
        single.deploy_template("shop", "checkout", template("registry/checkout:1.0"))
        other = single.kubeconfig_path(tmp_path / "w")
        os.environ["KUBECONFIG"] = str(other)
        with pytest.raises(PermanentError, match='no rollout history found for deployment "checkout"'):
            KubernetesClient.load().rollout_undo(namespace="shop", deployment="checkout")


def test_restart_and_scale_match_kubectl(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl = pair
    assert kubectl("rollout", "restart", "deployment/checkout").returncode == 0
    stamp = by_kubectl.deployment("shop", "checkout")["spec"]["template"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"
    ]
    client = KubernetesClient.load()
    client.rollout_restart(
        namespace="shop", deployment="checkout", at=datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    )
    same_state(by_kubectl, by_worker)
    client.rollout_restart(
        namespace="shop", deployment="checkout", at=datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
    )
    assert len(by_worker.patch_requests()) == 1  # the same timestamp again changes nothing
    assert kubectl("scale", "deployment/checkout", "--replicas=5").returncode == 0
    client.scale(namespace="shop", deployment="checkout", replicas=5)
    same_state(by_kubectl, by_worker)
    assert by_worker.deployment("shop", "checkout")["spec"]["replicas"] == 5


def owned_replicaset(cluster: FakeKubernetes, name: str, image: str, *, created: str, revision: int | None) -> None:
    """An old ReplicaSet of shop/checkout as another controller version or a restore might have left it."""
    from worker.testing.fake_kubernetes_state import default_template  # noqa: PLC0415 - the fake's defaulting

    owner = cluster.deployment("shop", "checkout")
    pod_template = template(image)
    default_template(pod_template)
    pod_template["metadata"]["labels"]["pod-template-hash"] = name.rsplit("-", 1)[-1]
    labels = dict(pod_template["metadata"]["labels"])
    cluster.add_replicaset(
        "shop",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": "shop",
                "uid": name,
                "labels": labels,
                "annotations": {} if revision is None else {"deployment.kubernetes.io/revision": str(revision)},
                "creationTimestamp": created,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "checkout",
                        "uid": owner["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": pod_template},
            "status": {"replicas": 0},
        },
    )


def with_an_unannotated_replicaset(cluster: FakeKubernetes) -> None:
    cluster.deploy_template("shop", "checkout", template("registry/checkout:2.0"))
    owned_replicaset(cluster, "checkout-old0", "registry/checkout:1.0", created="2020-01-01T00:00:00Z", revision=None)


def with_two_replicasets_of_one_revision(cluster: FakeKubernetes) -> None:
    for image in ("registry/checkout:3.0", "registry/checkout:3.1", "registry/checkout:3.2"):
        cluster.deploy_template("shop", "checkout", template(image))
    with cluster.state.lock:  # keep only the current one, then add two of revision 2, named against their age
        replicasets = cluster.state.replicasets
        for key in [k for k, rs in replicasets.items() if "3.2" not in str(rs["spec"]["template"])]:
            del replicasets[key]
    owned_replicaset(cluster, "checkout-aaaa", "registry/checkout:A-newer", created="2020-01-02T00:00:00Z", revision=2)
    owned_replicaset(cluster, "checkout-zzzz", "registry/checkout:Z-older", created="2020-01-01T00:00:00Z", revision=2)


@pytest.mark.parametrize(
    ("seeding", "to_revision"),
    [
        (with_an_unannotated_replicaset, None),  # kubectl counts it as revision 0, a valid target
        (with_two_replicasets_of_one_revision, None),  # kubectl walks old ReplicaSets oldest first
        (with_two_replicasets_of_one_revision, 2),
    ],
)
def test_history_corner_cases_pick_the_replicaset_kubectl_picks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeding: Any, to_revision: int | None
) -> None:
    with FakeKubernetes() as by_kubectl, FakeKubernetes() as by_worker:
        seeding(by_kubectl)
        seeding(by_worker)
        args = [f"--to-revision={to_revision}"] if to_revision else []
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", str(by_kubectl.kubeconfig_path(tmp_path)), "-n", "shop"]  # type: ignore[list-item]
            + ["rollout", "undo", "deployment/checkout", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        monkeypatch.setenv("KUBECONFIG", str(by_worker.kubeconfig_path(tmp_path / "w")))
        KubernetesClient.load().rollout_undo(namespace="shop", deployment="checkout", to_revision=to_revision)
        same_state(by_kubectl, by_worker)
