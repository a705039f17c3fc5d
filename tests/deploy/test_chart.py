"""The Helm chart (charts/incident-worker), rendered by the real `helm`: what it deploys for SQLite and for
PostgreSQL, what it refuses, where secrets go, and RBAC that allows exactly what the Kubernetes client calls."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from kubernetes import client as k8s

from worker.clients.kubernetes import KubernetesClient
from worker.settings import KNOWN_VARIABLES, SECRET_VARIABLES
from worker.testing.fake_kubernetes import FakeKubernetes
from worker.testing.live import LiveWorker

CHART = ROOT / "charts" / "incident-worker"
HELM = shutil.which("helm") or shutil.which("helm", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def helm() -> str:
    if HELM is None:
        if os.environ.get("CI"):
            pytest.fail("helm is missing; .ci/run installs it")
        pytest.skip("helm is not installed (.ci/run installs it)")
    return HELM


def render(helm: str, *values: str, namespace: str = "ops") -> list[dict[str, Any]]:
    result = subprocess.run(
        [helm, "template", "rel", str(CHART), "--namespace", namespace, *values],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def refused(helm: str, *values: str) -> str:
    result = subprocess.run([helm, "template", "rel", str(CHART), *values], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout
    return result.stderr


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (worker,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return worker


def env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs).get("env", [])}


def test_the_chart_lints_strictly(helm: str) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_default_is_one_replica_on_sqlite_on_a_kept_volume(helm: str) -> None:
    docs = render(helm)
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "Pod",  # the `helm test` hook
    }
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two pods on one SQLite file
    assert env(docs)["WORKER_DATABASE_URL"] == "sqlite:////data/incident-worker.db"
    worker = container(docs)
    assert worker["args"][:3] == ["serve", "--host=0.0.0.0", "--port=8080"]
    assert "--config=/app/config" in worker["args"] and "--playbooks=/app/playbooks" in worker["args"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert (
        volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
        == one(docs, "PersistentVolumeClaim")["metadata"]["name"]
    )
    assert "emptyDir" in volumes[mounts["/tmp"]]  # gunicorn's heartbeat files on a read-only root
    assert one(docs, "PersistentVolumeClaim")["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert one(docs, "Service")["spec"]["ports"][0]["targetPort"] == "http"


def test_postgresql_replicas_keep_the_password_out_of_the_pod_spec(helm: str) -> None:
    url = "postgresql+psycopg://worker:pw-s3cret@db:5432/incidents"
    docs = render(
        helm,
        "--set",
        f"database.url={url}",
        "--set",
        "replicaCount=3",
        "--set",
        "secrets.values.WORKER_PAGERDUTY_WEBHOOK_SECRETS=pd-s3cret",
        "--set",
        "secrets.existingSecret=ops-tokens",
    )
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3 and "strategy" not in deployment["spec"]
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}
    assert "pw-s3cret" not in yaml.safe_dump(deployment) and "pd-s3cret" not in yaml.safe_dump(deployment)
    secret = one(docs, "Secret")
    assert secret["stringData"] == {"WORKER_DATABASE_URL": url, "WORKER_PAGERDUTY_WEBHOOK_SECRETS": "pd-s3cret"}
    sources = [s["secretRef"]["name"] for s in container(docs)["envFrom"]]
    assert sources == [secret["metadata"]["name"], "ops-tokens"]  # the operator's own Secret wins on a clash
    assert "WORKER_DATABASE_URL" not in env(docs)


def test_a_database_url_from_an_existing_secret(helm: str) -> None:
    docs = render(helm, "--set", "database.existingSecret=db", "--set", "database.existingSecretKey=dsn")
    assert env(docs)["WORKER_DATABASE_URL"] == {"secretKeyRef": {"name": "db", "key": "dsn"}}
    assert "Secret" not in {d["kind"] for d in docs}


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (["--set", "replicaCount=2"], "replicaCount > 1 needs PostgreSQL"),
        (["--set", "env.WORKER_DATABASE_URL=sqlite:///x.db"], "env.WORKER_DATABASE_URL: set it with database.url"),
        (["--set", "env.WORKER_PUBLIC_URL=https://x"], "env.WORKER_PUBLIC_URL: set it with publicUrl"),
        # values.schema.json: typos and wrong kinds of value fail before anything renders
        (["--set", "env.PATH=/tmp"], '- env: Property name of "PATH" does not match'),
        (["--set", "database.url=mysql://db/x"], "- database.url: Does not match pattern"),
        (["--set", "secrets.values.PD_SECRET=x"], '- secrets.values: Property name of "PD_SECRET" does not match'),
        (["--set", "web.threds=4"], "- web: Additional property threds is not allowed"),
        (["--set", "replicacount=3"], "Additional property replicacount is not allowed"),
        (["--set", "persistance.enabled=false"], "Additional property persistance is not allowed"),
        (["--set", "ingress.hostname=x"], "- ingress: Additional property hostname is not allowed"),
        (["--set", "env.WORKER_API_TOKEN=s3cret"], "- env: Property name of"),  # a secret in the pod spec
        (["--set", "env.WORKER_SECRET_FLAGS=s3cret"], "- env: Property name of"),
        (["--set", "env.WORKER_DRYRUN=1"], '- env: Property name of "WORKER_DRYRUN"'),  # a typo, as serve says
        (["--set", "database.url=postgres+psycopg://db/x"], "- database.url: Does not match pattern"),
        (["--set", "publicUrl=incidents.example.com"], "- publicUrl: Does not match pattern"),
        (["--set", "rbac.namespaces={Shop}"], "- rbac.namespaces.0: Does not match pattern"),
    ],
)
def test_refusals_name_the_value(helm: str, values: list[str], reason: str) -> None:
    assert reason in refused(helm, *values)


def test_the_schema_admits_exactly_the_workers_plain_settings() -> None:
    names = set(json.loads((CHART / "values.schema.json").read_text())["properties"]["env"]["propertyNames"]["enum"])
    assert names == KNOWN_VARIABLES - SECRET_VARIABLES


def test_public_url_from_the_ingress_and_plain_settings(helm: str) -> None:
    docs = render(
        helm,
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.host=incidents.example.com",
        "--set",
        "ingress.tls[0].secretName=tls",
        "--set",
        "env.WORKER_RESOLUTION_HOLD=10m",
    )
    assert env(docs)["WORKER_PUBLIC_URL"] == "https://incidents.example.com"
    assert env(docs)["WORKER_RESOLUTION_HOLD"] == "10m"
    assert one(docs, "Ingress")["spec"]["rules"][0]["host"] == "incidents.example.com"
    assert env(render(helm, "--set", "publicUrl=https://ic.example.com"))["WORKER_PUBLIC_URL"] == (
        "https://ic.example.com"
    )


def test_config_and_playbooks_from_values_are_mounted_and_roll_the_pod(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"

    def with_rules(severity_text: str) -> list[dict[str, Any]]:
        config = {p.name: p.read_text() for p in (ROOT / "config").glob("*.yaml")}
        config["severity.yaml"] = severity_text
        playbooks = {p.name: p.read_text() for p in (ROOT / "playbooks").glob("*.yaml")}
        values.write_text(yaml.safe_dump({"config": config, "playbooks": playbooks}))
        return render(helm, "-f", str(values))

    original = (ROOT / "config" / "severity.yaml").read_text()
    docs = with_rules(original)
    worker = container(docs)
    assert "--config=/etc/incident-worker/config" in worker["args"]
    assert "--playbooks=/etc/incident-worker/playbooks" in worker["args"]
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    assert maps["rel-incident-worker-config"]["severity.yaml"] == original
    assert set(maps["rel-incident-worker-playbooks"]) == {p.name for p in (ROOT / "playbooks").glob("*.yaml")}
    # The files as mounted are what `incident-worker lint` accepts.
    for name, data in maps.items():
        folder = tmp_path / name
        folder.mkdir()
        for file, text in data.items():
            (folder / file).write_text(text)
    lint = subprocess.run(
        [sys.executable, "-m", "worker.cli", "lint", "--config", str(tmp_path / "rel-incident-worker-config")]
        + [str(tmp_path / "rel-incident-worker-config"), str(tmp_path / "rel-incident-worker-playbooks")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    checksum = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/files"]
    changed = one(with_rules(original + "\n# changed\n"), "Deployment")
    assert changed["spec"]["template"]["metadata"]["annotations"]["checksum/files"] != checksum


def test_rbac_allows_exactly_what_the_kubernetes_client_calls(helm: str) -> None:
    docs = render(helm, "--set", "rbac.namespaces={shop,payments}")
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"shop", "payments"}
    assert bindings["shop"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-incident-worker", "namespace": "ops"}
    ]
    allowed = {
        (resource, verb)
        for rule in roles["shop"]["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if rule["apiGroups"] == ["apps"]
    }
    # What the worker's client really asks the API server for, during a plan, an undo, a restart, a scale.
    with FakeKubernetes() as cluster:
        for version in ("1.41", "1.42"):
            containers = [{"name": "checkout", "image": f"checkout:{version}"}]
            cluster.deploy_template(
                "shop", "checkout", {"metadata": {"labels": {"app": "checkout"}}, "spec": {"containers": containers}}
            )
        kube = KubernetesClient(k8s.ApiClient(k8s.Configuration(host=cluster.url, retries=0)), timeout=5)
        kube.plan_rollout_undo(namespace="shop", deployment="checkout")
        kube.rollout_undo(namespace="shop", deployment="checkout")
        kube.rollout_restart(namespace="shop", deployment="checkout", at=datetime.now(UTC))
        kube.scale(namespace="shop", deployment="checkout", replicas=3)
        used = {_rbac(r["method"], r["path"]) for r in cluster.requests}
    assert used == allowed, f"used {sorted(used)}, allowed {sorted(allowed)}"


def _rbac(method: str, path: str) -> tuple[str, str]:
    """(resource, verb) of an apps/v1 request path, as the API server authorizes it."""
    match = re.fullmatch(r"/apis/apps/v1/namespaces/[^/]+/([a-z]+)(?:/([^/]+))?(?:/([a-z]+))?", path)
    assert match, path
    resource, name, subresource = match.groups()
    verb = {"GET": "get" if name else "list", "PATCH": "patch", "PUT": "update", "POST": "create"}[method]
    return (f"{resource}/{subresource}" if subresource else resource, verb)


def test_the_helm_test_hook_checks_readiness(helm: str, tmp_path: Path) -> None:
    (pod,) = [d for d in render(helm) if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"] and "http://rel-incident-worker:80/readyz" in command[2]
    env = {"WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    with LiveWorker(env=env, cwd=tmp_path, config_dir=ROOT / "config", playbooks_dir=ROOT / "playbooks") as live:
        script = command[2].replace("http://rel-incident-worker:80", live.url)
        assert subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30).returncode == 0
    # and it fails when the worker is not ready (here: not there at all)
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30).returncode != 0


def test_the_service_monitor_scrapes_the_services_metrics_port(helm: str) -> None:
    assert "ServiceMonitor" not in {d["kind"] for d in render(helm)}  # off unless asked
    docs = render(helm, "--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=kps")
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_alert_rules_are_valid_and_fire_when_they_should(helm: str, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing; .ci/run installs Debian's prometheus")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    assert "PrometheusRule" not in {d["kind"] for d in render(helm)}  # off unless asked
    rule = one(
        render(helm, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.lagSeconds=60"), "PrometheusRule"
    )
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # promtool's rule unit test: series as two replicas would report them, minute by minute.
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'incident_worker_inbox_oldest_pending_seconds{namespace="ops",pod="a"}',
                        "values": "0 0 90 150 210 270 330 390 450 510 570",
                    },
                    {
                        "series": 'incident_worker_inbox_oldest_pending_seconds{namespace="ops",pod="b"}',
                        "values": "0 0 90 150 210 270 330 390 450 510 570",
                    },
                    {"series": 'incident_worker_database_up{namespace="ops",pod="a"}', "values": "1x10"},
                    {
                        "series": 'incident_worker_inbox_deliveries{namespace="ops",pod="a",state="failed"}',
                        "values": "0x4 2x6",
                    },
                    {
                        "series": 'incident_worker_outbox{namespace="ops",pod="a",outbox="notes",state="failed"}',
                        "values": "0x10",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "IncidentWorkerClassificationLag",
                        "exp_alerts": [],
                    },  # not for 5m yet
                    {
                        "eval_time": "9m",
                        "alertname": "IncidentWorkerClassificationLag",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": "webhooks stored 8m 30s ago are not classified yet",
                                    "description": rule["spec"]["groups"][0]["rules"][1]["annotations"]["description"],
                                },
                            }
                        ],
                    },
                    {"eval_time": "9m", "alertname": "IncidentWorkerDatabaseDown", "exp_alerts": []},
                    {"eval_time": "9m", "alertname": "IncidentWorkerOutboxFailed", "exp_alerts": []},
                    {
                        "eval_time": "6m",
                        "alertname": "IncidentWorkerDeliveriesParked",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": "2 webhook deliveries failed processing and are parked",
                                    "description": rule["spec"]["groups"][0]["rules"][2]["annotations"]["description"],
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    run = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
