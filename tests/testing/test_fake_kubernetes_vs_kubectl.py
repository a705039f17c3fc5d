"""The oracle: real kubectl and the worker's adapter, each on its own fake cluster seeded alike, end alike.

Each test seeds two FakeKubernetes servers with the same history (three revisions with change causes,
a last-applied-configuration annotation, a look-alike ReplicaSet the deployment does not control),
runs `kubectl` (v1.32) against one and `KubernetesClient` against the other, then compares the
Deployments, the ReplicaSets' revisions and the very requests each sent. The fake's own fidelity
(the controller's bookkeeping, patch formats, errors, spec shapes) is checked through kubectl too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from worker.clients.kubernetes import KubernetesClient
from worker.errors import PermanentError
from worker.testing.fake_kubernetes import FakeKubernetes
from worker.testing.fake_kubernetes_patch import MERGE_KEYS
from worker.testing.fake_kubernetes_state import semantic

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH")
SPEC_FILE = Path(__file__).resolve().parents[1] / "fixtures/specs/kubernetes/apis__apps__v1_openapi.json"
SPEC = json.loads(SPEC_FILE.read_text())
REGISTRY = Registry().with_resource("urn:apps", Resource.from_contents(SPEC, default_specification=DRAFT4))
REVISION = "deployment.kubernetes.io/revision"
HISTORY = "deployment.kubernetes.io/revision-history"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def template(image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "checkout"}, "annotations": {"team": "payments"}},
        "spec": {
            "containers": [
                {"name": "checkout", "image": image, "env": [{"name": "MODE", "value": "live"}]},
                {"name": "proxy", "image": "envoy:1.30", "ports": [{"containerPort": 9901}]},
            ]
        },
    }


def seed(cluster: FakeKubernetes) -> None:
    """Three revisions with change causes, last-applied on the third, and a look-alike it does not control."""
    for n in (1, 2, 3):
        extra = {LAST_APPLIED: json.dumps({"kind": "Deployment", "n": n})} if n == 3 else None
        cluster.deploy_template(
            "shop", "checkout", template(f"checkout:1.4{n}"), change_cause=f"deploy {n}", annotations=extra
        )
    look_alike = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "checkout-stray",
            "namespace": "shop",
            "uid": "stray",
            "labels": {"app": "checkout"},
            "annotations": {REVISION: "99", "kubernetes.io/change-cause": "not ours"},
            "creationTimestamp": "2020-01-01T00:00:00Z",
        },
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "checkout"}}, "template": template("evil:1")},
    }
    cluster.add_replicaset("shop", look_alike)


def runner(cluster: FakeKubernetes, directory: Path) -> Kubectl:
    directory.mkdir(exist_ok=True)
    kubeconfig = cluster.kubeconfig_path(directory)

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(KUBECTL), "--kubeconfig", str(kubeconfig), "-n", "shop", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    return kubectl


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[FakeKubernetes, FakeKubernetes, Kubectl, KubernetesClient]]:
    """(cluster for kubectl, cluster for the worker, kubectl on the first, the adapter on the second)."""
    with FakeKubernetes() as by_kubectl, FakeKubernetes() as by_worker:
        seed(by_kubectl)
        seed(by_worker)
        adapter = KubernetesClient(k8s.ApiClient(k8s.Configuration(host=by_worker.url, retries=0)))
        yield by_kubectl, by_worker, runner(by_kubectl, tmp_path / "kubectl"), adapter


def state(cluster: FakeKubernetes) -> dict[str, Any]:
    """What must come out the same: the deployment's spec and annotations, every ReplicaSet's bookkeeping."""
    deployment = cluster.deployment("shop", "checkout")
    replicasets = {
        rs["metadata"]["name"]: {
            "annotations": rs["metadata"].get("annotations"),
            "replicas": rs["spec"]["replicas"],
            "template": semantic(rs["spec"]["template"]),
        }
        for rs in cluster.replicasets("shop")
    }
    meta = deployment["metadata"]
    return {
        "spec": semantic(deployment["spec"]),
        "annotations": meta["annotations"],
        "generation": meta["generation"],
        "replicasets": replicasets,
    }


def writes(cluster: FakeKubernetes) -> list[tuple[str, str, str, Any]]:
    """The PATCH/PUT requests, bodies parsed and zero values dropped (Go's encoder writes creationTimestamp: null)."""
    return [
        (r["method"], r["path"], r["content_type"], semantic(json.loads(r["body"]))) for r in cluster.patch_requests()
    ]


def test_undo_to_the_previous_revision(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl, adapter = pair
    result = kubectl("rollout", "undo", "deployment/checkout")
    assert result.stdout == "deployment.apps/checkout rolled back\n", result.stderr
    outcome = adapter.rollout_undo(namespace="shop", deployment="checkout")
    assert (outcome.revision, outcome.skipped) == (2, False)
    assert writes(by_worker) == writes(by_kubectl)
    assert state(by_worker) == state(by_kubectl)
    deployment = by_worker.deployment("shop", "checkout")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "checkout:1.42"
    # kubectl replaced all annotations: change-cause from the ReplicaSet, last-applied kept, revision now 4.
    assert deployment["metadata"]["annotations"] == {
        REVISION: "4",
        LAST_APPLIED: json.dumps({"kind": "Deployment", "n": 3}),
        "kubernetes.io/change-cause": "deploy 2",
    }


def test_undo_to_a_given_revision(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl, adapter = pair
    assert kubectl("rollout", "undo", "deployment/checkout", "--to-revision=1").returncode == 0
    adapter.rollout_undo(namespace="shop", deployment="checkout", to_revision=1)
    assert writes(by_worker) == writes(by_kubectl)
    assert state(by_worker) == state(by_kubectl)


def test_undo_twice_flips_back_on_both(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl, adapter = pair
    for _ in range(2):
        assert kubectl("rollout", "undo", "deployment/checkout").returncode == 0
        adapter.rollout_undo(namespace="shop", deployment="checkout")
    assert state(by_worker) == state(by_kubectl)
    assert (
        by_worker.deployment("shop", "checkout")["spec"]["template"]["spec"]["containers"][0]["image"]
        == "checkout:1.43"
    )


def test_history_reads_the_same_after_the_rollback(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl, adapter = pair
    kubectl("rollout", "undo", "deployment/checkout", "--to-revision=1")
    adapter.rollout_undo(namespace="shop", deployment="checkout", to_revision=1)
    on_worker = runner(by_worker, tmp_path / "worker")
    for args in (
        ("rollout", "history", "deployment/checkout"),
        ("rollout", "history", "deployment/checkout", "--revision=4"),
    ):
        expected = kubectl(*args)
        assert expected.returncode == 0, expected.stderr
        assert on_worker(*args).stdout == expected.stdout
    listing = kubectl("rollout", "history", "deployment/checkout").stdout.split("\n")[2:-2]
    assert [line.split(None, 1) for line in listing] == [["2", "deploy 2"], ["3", "deploy 3"], ["4", "deploy 1"]]


def test_undo_to_the_current_revision_is_skipped(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl, adapter = pair
    result = kubectl("rollout", "undo", "deployment/checkout", "--to-revision=3")
    assert result.stdout == "deployment.apps/checkout skipped rollback (current template already matches revision 3)\n"
    outcome = adapter.rollout_undo(namespace="shop", deployment="checkout", to_revision=3)
    assert (outcome.revision, outcome.skipped) == (3, True)
    assert writes(by_kubectl) == writes(by_worker) == []


def test_refusals_carry_kubectls_messages(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl, adapter = pair

    def same_error(args: tuple[str, ...], call: Callable[[], object]) -> None:
        result = kubectl(*args)
        assert result.returncode == 1
        with pytest.raises(PermanentError) as caught:
            call()
        assert result.stderr == f"error: {caught.value}\n"

    same_error(("rollout", "undo", "deployment/checkout", "--to-revision=7"),
               lambda: adapter.rollout_undo(namespace="shop", deployment="checkout", to_revision=7))  # fmt: skip
    same_error(("rollout", "undo", "deployment/checkout", "--to-revision=99"),  # the look-alike is not history
               lambda: adapter.rollout_undo(namespace="shop", deployment="checkout", to_revision=99))  # fmt: skip
    for cluster in (by_kubectl, by_worker):
        cluster.set_paused("shop", "checkout")
    same_error(
        ("rollout", "undo", "deployment/checkout"),
        lambda: adapter.rollout_undo(namespace="shop", deployment="checkout"),
    )
    same_error(
        ("rollout", "restart", "deployment/checkout"),
        lambda: adapter.rollout_restart(namespace="shop", deployment="checkout", at=datetime.now().astimezone()),
    )
    assert writes(by_kubectl) == writes(by_worker) == []
    with FakeKubernetes() as lone:
        lone.deploy_template("shop", "checkout", template("checkout:1.0"))
        alone = KubernetesClient(k8s.ApiClient(k8s.Configuration(host=lone.url, retries=0)))
        kubectl = runner(lone, tmp_path / "lone")
        same_error(
            ("rollout", "undo", "deployment/checkout"),
            lambda: alone.rollout_undo(namespace="shop", deployment="checkout"),
        )
        with pytest.raises(PermanentError) as caught:
            alone.scale(namespace="shop", deployment="nope", replicas=2)
        assert f"{caught.value}\n" in kubectl("scale", "deployment/nope", "--replicas=2").stderr


def test_restart(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl, adapter = pair
    result = kubectl("rollout", "restart", "deployment/checkout")
    assert result.stdout == "deployment.apps/checkout restarted\n", result.stderr
    stamp = by_kubectl.deployment("shop", "checkout")["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    # The same instant as kubectl's (it writes local time with an offset), so the states can match exactly.
    adapter.rollout_restart(
        namespace="shop", deployment="checkout", at=datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    )
    assert writes(by_worker) == writes(by_kubectl)
    assert state(by_worker) == state(by_kubectl)
    assert by_worker.revisions("shop", "checkout").keys() == {1, 2, 3, 4}  # a new rollout, as kubectl's
    assert by_worker.deployment("shop", "checkout")["spec"]["template"]["metadata"]["annotations"]["team"] == "payments"


def test_scale(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, by_worker, kubectl, adapter = pair
    assert kubectl("scale", "deployment/checkout", "--replicas=5").stdout == "deployment.apps/checkout scaled\n"
    assert adapter.scale(namespace="shop", deployment="checkout", replicas=5).replicas == 5
    assert writes(by_worker) == writes(by_kubectl)
    assert state(by_worker) == state(by_kubectl)
    assert by_worker.deployment("shop", "checkout")["status"]["availableReplicas"] == 5


def test_get_deploy_json_is_the_stored_object_and_fits_the_spec(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, _, kubectl, adapter = pair
    result = kubectl("get", "deploy", "-o", "json")
    assert result.returncode == 0, result.stderr
    [item] = json.loads(result.stdout)["items"]
    assert item == by_kubectl.deployment("shop", "checkout")
    valid("io.k8s.api.apps.v1.Deployment", item)
    for rs in json.loads(kubectl("get", "rs", "-o", "json").stdout)["items"]:
        valid("io.k8s.api.apps.v1.ReplicaSet", rs)
    valid(
        "io.k8s.api.autoscaling.v1.Scale",
        json.loads(kubectl("get", "--raw", "/apis/apps/v1/namespaces/shop/deployments/checkout/scale").stdout),
    )


def test_the_controller_bookkeeping_kubectl_sees(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, _, kubectl, _ = pair
    before = by_kubectl.revisions("shop", "checkout")
    kubectl("rollout", "undo", "deployment/checkout", "--to-revision=1")
    after = by_kubectl.revisions("shop", "checkout")
    assert after == {2: before[2], 3: before[3], 4: before[1]}  # the old ReplicaSet reused, renumbered max+1
    replicasets = {rs["metadata"]["name"]: rs for rs in by_kubectl.replicasets("shop")}
    restored = replicasets[before[1]]
    assert restored["metadata"]["annotations"][HISTORY] == "1"
    assert restored["spec"]["replicas"] == 3 and replicasets[before[3]]["spec"]["replicas"] == 0
    assert LAST_APPLIED not in restored["metadata"]["annotations"]  # never copied to ReplicaSets
    assert replicasets["checkout-stray"]["metadata"]["annotations"][REVISION] == "99"  # untouched
    assert all(name.startswith("checkout-") and "pod-template-hash" in rs["spec"]["selector"]["matchLabels"]
               for name, rs in replicasets.items() if name != "checkout-stray")  # fmt: skip
    table = kubectl("get", "rs", "-o", "wide").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert f"{before[1]} 3 3 3" in " ".join(" ".join(line.split()) for line in table)


def test_kubectls_other_writes_work_on_the_fake(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, _, kubectl, _ = pair
    before = by_kubectl.deployment("shop", "checkout")
    dry = kubectl("rollout", "undo", "deployment/checkout", "--dry-run=server")
    assert dry.stdout == "deployment.apps/checkout rolled back (server dry run)\n", dry.stderr
    assert by_kubectl.deployment("shop", "checkout") == before
    # set image: a strategic merge patch that merges the containers list by name ($setElementOrder).
    assert kubectl("set", "image", "deployment/checkout", "checkout=checkout:2.0").returncode == 0
    containers = by_kubectl.deployment("shop", "checkout")["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("checkout", "checkout:2.0"), ("proxy", "envoy:1.30")]
    assert containers[0]["env"] == [{"name": "MODE", "value": "live"}]
    assert kubectl("set", "env", "deployment/checkout", "-c", "checkout", "MODE=dark", "EXTRA=1").returncode == 0
    env = by_kubectl.deployment("shop", "checkout")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "MODE", "value": "dark"}, {"name": "EXTRA", "value": "1"}]
    assert kubectl("annotate", "deployment/checkout", "kubernetes.io/change-cause=env change").returncode == 0
    assert kubectl("rollout", "pause", "deployment/checkout").returncode == 0
    assert kubectl("rollout", "resume", "deployment/checkout").returncode == 0
    assert kubectl("scale", "deployment/checkout", "--replicas=2", "--current-replicas=3").returncode == 0  # GET + PUT
    stale = kubectl("scale", "deployment/checkout", "--replicas=4", "--current-replicas=3")
    assert stale.stderr == "error: Expected replicas to be 3, was 2\n"
    status = kubectl("rollout", "status", "deployment/checkout", "--timeout=10s")
    assert status.stdout == 'deployment "checkout" successfully rolled out\n', status.stderr
    history = kubectl("rollout", "history", "deployment/checkout").stdout
    assert "5         env change" in history
    missing = kubectl("get", "deployment", "nope")
    assert missing.stderr == 'Error from server (NotFound): deployments.apps "nope" not found\n'


def test_fake_rejects_what_the_api_server_rejects(pair) -> None:  # type: ignore[no-untyped-def]
    by_kubectl, _, kubectl, _ = pair
    bad_labels = kubectl(
        "patch",
        "deployment/checkout",
        "--type=merge",
        "-p",
        '{"spec":{"template":{"metadata":{"labels":{"app":"x"}}}}}',
    )
    assert "`selector` does not match template `labels`" in bad_labels.stderr
    failed_test = kubectl(
        "patch", "deployment/checkout", "--type=json", "-p", '[{"op":"test","path":"/spec/replicas","value":9}]'
    )
    assert failed_test.returncode == 1 and "test failed" in failed_test.stderr
    assert by_kubectl.deployment("shop", "checkout")["metadata"]["generation"] == 3
    raw = json.loads(kubectl("get", "--raw", "/apis/apps/v1/namespaces/shop/deployments").stdout)
    assert raw["kind"] == "DeploymentList"
    valid("io.k8s.api.apps.v1.DeploymentList", raw)


def test_merge_keys_are_the_specs() -> None:
    """The fake's strategic-merge keys are the OpenAPI spec's x-kubernetes-patch-merge-key for pod templates."""
    schemas = SPEC["components"]["schemas"]
    found = {}
    for name in ("io.k8s.api.core.v1.PodSpec", "io.k8s.api.core.v1.Container"):
        for field, schema in schemas[name]["properties"].items():
            if "merge" in schema.get("x-kubernetes-patch-strategy", ""):
                found[field] = schema["x-kubernetes-patch-merge-key"]
    assert found == MERGE_KEYS


def valid(schema: str, document: Any) -> None:
    OAS30Validator({"$ref": f"urn:apps#/components/schemas/{schema}"}, registry=REGISTRY).validate(document)
