"""The Kubernetes adapter against the fake apps/v1 API over HTTP: kubectl's rollout rules and error translation."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from worker.clients.kubernetes import KubernetesClient, selector_string
from worker.errors import PermanentError, TransientError
from worker.testing.fake_kubernetes import FakeKubernetes

REVISION = "deployment.kubernetes.io/revision"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
AT = datetime(2026, 11, 24, 2, 47, 13, tzinfo=UTC)


def template(image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "checkout"}},
        "spec": {"containers": [{"name": "checkout", "image": image, "ports": [{"containerPort": 8080}]}]},
    }


def stray(name: str, image: str, *, revision: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ReplicaSet with the deployment's labels that the deployment does not control."""
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "labels": {"app": "checkout"},
            "annotations": {REVISION: revision},
            "creationTimestamp": "2020-01-01T00:00:00Z",
            "ownerReferences": [owner] if owner else [],
        },
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "checkout"}}, "template": template(image)},
    }


def seed(cluster: FakeKubernetes) -> None:
    """Revisions 1-3 (1.41, 1.42, 1.43), change causes, last-applied, and two look-alikes it does not control."""
    for n in (1, 2, 3):
        extra = {LAST_APPLIED: '{"kind":"Deployment"}'} if n == 3 else None
        cluster.deploy_template(
            "shop", "checkout", template(f"checkout:1.4{n}"), change_cause=f"deploy {n}", annotations=extra
        )
    uid = cluster.deployment("shop", "checkout")["metadata"]["uid"]
    cluster.add_replicaset("shop", stray("checkout-stray", "checkout:evil", revision="99"))
    not_controller = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "checkout",
        "uid": uid,
        "controller": False,
    }
    cluster.add_replicaset("shop", stray("checkout-ref", "checkout:ref", revision="98", owner=not_controller))


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as fake:
        seed(fake)
        yield fake


def api(url: str) -> k8s.ApiClient:
    """An injected ApiClient as load() builds one: no urllib3 retries (the executor owns retrying)."""
    return k8s.ApiClient(k8s.Configuration(host=url, retries=0))


@pytest.fixture
def kube(cluster: FakeKubernetes) -> KubernetesClient:
    return KubernetesClient(api(cluster.url), timeout=5)


def image(cluster: FakeKubernetes) -> str:
    return str(cluster.deployment("shop", "checkout")["spec"]["template"]["spec"]["containers"][0]["image"])


def test_plan_picks_the_previous_revision_and_changes_nothing(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    plan = kube.plan_rollout_undo(namespace="shop", deployment="checkout")
    assert (plan.current_revision, plan.target_revision, plan.noop) == (3, 2, False)
    assert plan.target_template["spec"]["containers"][0]["image"] == "checkout:1.42"
    assert plan.current_template["spec"]["containers"][0]["image"] == "checkout:1.43"
    assert plan.target_template["metadata"]["labels"] == {"app": "checkout"}  # pod-template-hash removed
    # The deployment's skip-list annotations stay; the ReplicaSet's others come along.
    assert plan.annotations == {
        REVISION: "3",
        LAST_APPLIED: '{"kind":"Deployment"}',
        "kubernetes.io/change-cause": "deploy 2",
    }
    assert cluster.patch_requests() == []


def test_undo_rolls_back_with_one_json_patch(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    result = kube.rollout_undo(namespace="shop", deployment="checkout")
    assert (result.revision, result.skipped) == (2, False)
    assert image(cluster) == "checkout:1.42"
    [patch] = cluster.patch_requests()
    assert patch["content_type"] == "application/json-patch+json"
    assert [(op["op"], op["path"]) for op in json.loads(patch["body"])] == [
        ("replace", "/spec/template"),
        ("replace", "/metadata/annotations"),
    ]
    annotations = cluster.deployment("shop", "checkout")["metadata"]["annotations"]
    assert annotations["kubernetes.io/change-cause"] == "deploy 2"
    assert annotations[REVISION] == "4"  # the controller renumbered the restored ReplicaSet


def test_undo_to_a_given_revision(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    plan = kube.plan_rollout_undo(namespace="shop", deployment="checkout", to_revision=1)
    assert plan.target_revision == 1
    assert kube.rollout_undo(namespace="shop", deployment="checkout", to_revision=1).revision == 1
    assert image(cluster) == "checkout:1.41"


def test_replicasets_the_deployment_does_not_control_are_never_targets(kube) -> None:  # type: ignore[no-untyped-def]
    for revision in (99, 98):
        with pytest.raises(PermanentError) as caught:
            kube.plan_rollout_undo(namespace="shop", deployment="checkout", to_revision=revision)
        assert str(caught.value) == f"unable to find specified revision {revision} in history"


def test_default_undo_twice_flips_back_as_kubectl_does(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    kube.rollout_undo(namespace="shop", deployment="checkout")
    assert kube.rollout_undo(namespace="shop", deployment="checkout").revision == 3
    assert image(cluster) == "checkout:1.43"


def test_undo_with_a_resolved_revision_is_idempotent(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    target = kube.plan_rollout_undo(namespace="shop", deployment="checkout").target_revision
    assert not kube.rollout_undo(namespace="shop", deployment="checkout", to_revision=target).skipped
    again = kube.rollout_undo(namespace="shop", deployment="checkout", to_revision=target)
    assert (again.revision, again.skipped) == (2, True)  # 2 is now numbered 4; its history says it was 2
    assert kube.plan_rollout_undo(namespace="shop", deployment="checkout", to_revision=target).noop
    assert len(cluster.patch_requests()) == 1
    assert image(cluster) == "checkout:1.42"


def test_undo_to_the_current_template_is_skipped(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    plan = kube.plan_rollout_undo(namespace="shop", deployment="checkout", to_revision=3)
    assert plan.noop
    assert kube.rollout_undo(namespace="shop", deployment="checkout", to_revision=3).skipped
    assert cluster.patch_requests() == []


def test_no_history_unknown_revision_and_negative_revision_use_kubectls_messages(kube) -> None:  # type: ignore[no-untyped-def]
    with FakeKubernetes() as single:
        single.deploy_template("shop", "checkout", template("checkout:1.0"))
        lone = KubernetesClient(api(single.url))
        with pytest.raises(PermanentError) as caught:
            lone.rollout_undo(namespace="shop", deployment="checkout")
        assert str(caught.value) == 'no rollout history found for deployment "checkout"'
    for revision in (7, -1):
        with pytest.raises(PermanentError, match=f"^unable to find specified revision {revision} in history$"):
            kube.rollout_undo(namespace="shop", deployment="checkout", to_revision=revision)


def test_paused_deployment_is_refused_with_kubectls_messages(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    cluster.set_paused("shop", "checkout")
    with pytest.raises(PermanentError, match="^you cannot rollback a paused deployment; resume it first"):
        kube.plan_rollout_undo(namespace="shop", deployment="checkout")
    with pytest.raises(PermanentError, match=r"^deployments.apps \"checkout\" can't restart paused deployment"):
        kube.rollout_restart(namespace="shop", deployment="checkout", at=AT)
    assert cluster.patch_requests() == []
    assert kube.get_deployment_state(namespace="shop", deployment="checkout").paused


def test_missing_deployment_is_permanent_with_the_api_message(kube) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PermanentError) as caught:
        kube.plan_rollout_undo(namespace="shop", deployment="nope")
    assert str(caught.value) == 'deployments.apps "nope" not found'


def test_fingerprints_follow_the_template_not_the_replica_count(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    plan = kube.plan_rollout_undo(namespace="shop", deployment="checkout")
    kube.scale(namespace="shop", deployment="checkout", replicas=7)
    assert kube.plan_rollout_undo(namespace="shop", deployment="checkout").state_fingerprint == plan.state_fingerprint
    cluster.deploy_template("shop", "checkout", template("checkout:1.44"))
    moved = kube.plan_rollout_undo(namespace="shop", deployment="checkout")
    assert moved.state_fingerprint != plan.state_fingerprint
    assert (moved.current_revision, moved.target_revision) == (4, 3)
    kube.rollout_undo(namespace="shop", deployment="checkout", to_revision=2)
    state = kube.get_deployment_state(namespace="shop", deployment="checkout")
    assert state.template_fingerprint == plan.target_fingerprint  # how recovery recognises a finished rollback


def test_restart_stamps_rfc3339_once_per_time(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    first = kube.rollout_restart(namespace="shop", deployment="checkout", at=AT)
    assert (first.restarted_at, first.skipped) == ("2026-11-24T02:47:13Z", False)
    again = kube.rollout_restart(
        namespace="shop", deployment="checkout", at=AT.astimezone(timezone(timedelta(hours=2)))
    )
    assert again.skipped  # the same instant, written in another zone
    [patch] = cluster.patch_requests()
    assert patch["content_type"] == "application/strategic-merge-patch+json"
    assert json.loads(patch["body"]) == {
        "spec": {
            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-24T02:47:13Z"}}}
        }
    }
    state = kube.get_deployment_state(namespace="shop", deployment="checkout")
    assert (state.revision, state.restarted_at) == (4, "2026-11-24T02:47:13Z")  # a new rollout
    later = kube.rollout_restart(
        namespace="shop", deployment="checkout", at=AT.astimezone(timezone(timedelta(hours=2))) + timedelta(seconds=5)
    )
    assert later.restarted_at == "2026-11-24T04:47:18+02:00"
    assert kube.get_deployment_state(namespace="shop", deployment="checkout").revision == 5
    with pytest.raises(PermanentError, match="timezone-aware"):
        kube.rollout_restart(namespace="shop", deployment="checkout", at=datetime(2026, 1, 1))  # noqa: DTZ001


def test_scale_is_a_merge_patch_of_the_scale_subresource(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    assert kube.scale(namespace="shop", deployment="checkout", replicas=6).replicas == 6
    [patch] = cluster.patch_requests()
    assert (patch["path"], patch["content_type"]) == (
        "/apis/apps/v1/namespaces/shop/deployments/checkout/scale",
        "application/merge-patch+json",
    )
    assert json.loads(patch["body"]) == {"spec": {"replicas": 6}}
    state = kube.get_deployment_state(namespace="shop", deployment="checkout")
    assert (state.replicas, state.revision, state.available_replicas) == (6, 3, 6)
    assert state.generation == state.observed_generation
    for bad in (-1, True):
        with pytest.raises(PermanentError, match="non-negative integer"):
            kube.scale(namespace="shop", deployment="checkout", replicas=bad)
    assert len(cluster.patch_requests()) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_and_throttling_are_transient(cluster, kube, status: int) -> None:  # type: ignore[no-untyped-def]
    cluster.fail(status, retry_after=7 if status in (429, 503) else None)
    with pytest.raises(TransientError) as caught:
        kube.get_deployment_state(namespace="shop", deployment="checkout")
    assert str(status) in str(caught.value) and "injected failure" in str(caught.value)
    assert caught.value.retry_after == (7.0 if status in (429, 503) else None)
    assert kube.get_deployment_state(namespace="shop", deployment="checkout").revision == 3  # the next call works


@pytest.mark.parametrize("status", [400, 403, 409, 422])
def test_other_client_errors_are_permanent_with_the_api_message(cluster, kube, status: int) -> None:  # type: ignore[no-untyped-def]
    cluster.fail(status)
    with pytest.raises(PermanentError, match="^injected failure$"):
        kube.scale(namespace="shop", deployment="checkout", replicas=2)


def test_connection_refused_and_timeouts_are_transient(cluster) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        refused = KubernetesClient(api(f"http://127.0.0.1:{port}"), timeout=2)
        with pytest.raises(TransientError):
            refused.get_deployment_state(namespace="shop", deployment="checkout")
    slow = KubernetesClient(api(cluster.url), timeout=0.3)
    cluster.delay_patch = 2.0
    with pytest.raises(TransientError, match="[Tt]imeout|timed out"):
        slow.scale(namespace="shop", deployment="checkout", replicas=2)


def test_continue_tokens_are_followed(cluster) -> None:  # type: ignore[no-untyped-def]
    paged = KubernetesClient(api(cluster.url), page_size=1)
    assert paged.plan_rollout_undo(namespace="shop", deployment="checkout", to_revision=1).target_revision == 1
    lists = [r for r in cluster.requests if r["path"].endswith("/replicasets")]
    assert len(lists) == 5  # five matching ReplicaSets, one a page
    assert [r["query"].get("continue") for r in lists] == [None, "1", "2", "3", "4"]
    assert {r["query"]["labelSelector"] for r in lists} == {"app=checkout"}


def test_load_reads_kubeconfig_outside_a_cluster(cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig_path(tmp_path)))
    loaded = KubernetesClient.load()
    assert loaded.get_deployment_state(namespace="shop", deployment="checkout").revision == 3
    cluster.fail(503, retry_after=30)
    with pytest.raises(TransientError) as caught:  # at once: no hidden urllib3 retry sleeping 30 s
        loaded.get_deployment_state(namespace="shop", deployment="checkout")
    assert caught.value.retry_after == 30.0
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(PermanentError, match="no Kubernetes configuration found"):
        KubernetesClient.load()


def test_selector_string_matches_apimachinery() -> None:
    selector = {
        "matchLabels": {"tier": "web", "app": "checkout"},
        "matchExpressions": [
            {"key": "track", "operator": "In", "values": ["stable", "canary"]},
            {"key": "beta", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["b", "a"]},
            {"key": "env", "operator": "Exists"},
        ],
    }
    assert selector_string(selector) == "app=checkout,!beta,env,tier=web,track in (canary,stable),zone notin (a,b)"


def test_selector_with_expressions_finds_the_replicasets(kube) -> None:  # type: ignore[no-untyped-def]
    with FakeKubernetes() as fake:
        for n in (1, 2):
            fake.deploy_template(
                "shop", "api", {**template(f"api:{n}"), "metadata": {"labels": {"app": "api", "track": "stable"}}}
            )
        with fake.state.lock:
            fake.state.deployments[("shop", "api")]["spec"]["selector"] = {
                "matchLabels": {"app": "api"},
                "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable", "canary"]}],
            }
        client = KubernetesClient(api(fake.url))
        assert client.plan_rollout_undo(namespace="shop", deployment="api").target_revision == 1
        [listing] = [r for r in fake.requests if r["path"].endswith("/replicasets")]
        assert listing["query"]["labelSelector"] == "app=api,track in (canary,stable)"


def test_empty_names_are_refused_before_any_request(cluster, kube) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PermanentError, match="invalid deployment name"):
        kube.get_deployment_state(namespace="shop", deployment="")
    with pytest.raises(PermanentError, match="invalid namespace"):
        kube.scale(namespace="", deployment="checkout", replicas=1)
    assert cluster.requests == []
