"""The Helm chart against a real API server: its objects are accepted, its RBAC is enough
for the operator and no more, and TrainingJobs run in a Pod Security `restricted` namespace.

Needs `make tools` (helm, for `helm template`) besides the control plane. The chart's
offline checks are tests/unit/test_helm_chart.py.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_tools import render_text
from e2e.cluster import FAKE_HOLD, Kube, wait_until
from e2e.operator_harness import OperatorProcess, create, install_crds, trainingjob, wait_for_phase

# Kinds of the Prometheus Operator and kopf peering: their CRDs are not on the test cluster.
_NEEDS_OTHER_CRDS = {
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "KopfPeering",
    "ClusterKopfPeering",
}


def _release() -> str:
    return f"tw{secrets.token_hex(3)}"


def _render(values: dict[str, Any], namespace: str, release: str, tmp: Path) -> str:
    # A unique release name keeps the cluster-scoped objects of two tests apart.
    return render_text(values, tmp, namespace=namespace, release=release)


def _objects(text: str, *, skip_crds: bool = True) -> list[dict[str, Any]]:
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    return [
        o
        for o in objects
        if o["kind"] not in _NEEDS_OTHER_CRDS
        and not (skip_crds and o["kind"] == "CustomResourceDefinition")
    ]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"operator": {"podDisruptionBudget": {"enabled": True}}},
        {"crds": {"keep": False}, "operator": {"image": {"digest": "sha256:" + "1" * 64}}},
    ],
    ids=["defaults", "pdb", "no-keep-digest"],
)
def test_every_rendered_object_passes_the_api_servers_dry_run(
    kube: Kube, namespace: str, tmp_path: Path, values: dict[str, Any]
) -> None:
    manifest = tmp_path / "chart.yaml"
    objects = _objects(_render(values, namespace, _release(), tmp_path), skip_crds=False)
    manifest.write_text(yaml.safe_dump_all(objects))
    result = kube.kubectl(
        "apply", "--dry-run=server", "--server-side", "-n", namespace, "-f", str(manifest),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects)


def test_watched_namespaces_get_roles_the_api_server_accepts(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    values = {"operator": {"watchNamespaces": [namespace]}}
    manifest = tmp_path / "chart.yaml"
    objects = _objects(_render(values, namespace, _release(), tmp_path))
    manifest.write_text(yaml.safe_dump_all(objects))
    result = kube.kubectl(
        "apply", "--dry-run=server", "--server-side", "-n", namespace, "-f", str(manifest),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"] == [namespace]
    assert "role.rbac.authorization.k8s.io/" in result.stdout


@dataclasses.dataclass
class Installed:
    """The chart's ServiceAccount and RBAC applied for real, and a kubeconfig that is it."""

    namespace: str
    service_account: str
    kube_as_operator: Kube


@pytest.fixture
def chart_rbac(kube: Kube, namespace: str, tmp_path: Path) -> Iterator[Installed]:
    release = _release()
    text = _render({}, namespace, release, tmp_path)
    rbac = [
        o
        for o in _objects(text)
        if o["kind"]
        in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    ]
    manifest = tmp_path / "rbac.yaml"
    manifest.write_text(yaml.safe_dump_all(rbac))
    kube.kubectl("apply", "--server-side", "-n", namespace, "-f", str(manifest))
    [account] = [o for o in rbac if o["kind"] == "ServiceAccount"]
    name = account["metadata"]["name"]
    token = kube.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(
        c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
    )
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])
    as_operator = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
        "current-context": name,
    }
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(as_operator))
    try:
        yield Installed(namespace, name, dataclasses.replace(kube, kubeconfig=kubeconfig))
    finally:
        kube.kubectl("delete", "--ignore-not-found", "-n", namespace, "-f", str(manifest))


@pytest.mark.parametrize(
    ("verb", "resource", "subresource", "allowed"),
    [
        ("get", "secrets", "", False),
        ("list", "secrets", "", False),
        ("create", "pods", "exec", False),
        ("get", "pods", "log", False),
        ("create", "pods", "", False),
        ("patch", "nodes", "", False),
        ("delete", "nodes", "", False),
        ("list", "nodes", "", True),
        ("create", "jobs.batch", "", True),
        ("patch", "trainingjobs.trainwright.io", "status", True),
        ("update", "trainingjobs.trainwright.io", "", False),
        ("create", "events", "", True),
    ],
)
def test_the_charts_service_account_may_do_exactly_what_the_table_says(
    kube: Kube, chart_rbac: Installed, verb: str, resource: str, subresource: str, allowed: bool
) -> None:
    subject = f"system:serviceaccount:{chart_rbac.namespace}:{chart_rbac.service_account}"
    extra = [f"--subresource={subresource}"] if subresource else []
    result = kube.kubectl(
        "auth", "can-i", verb, resource, *extra, "-n", chart_rbac.namespace, "--as", subject,
        check=False,
    )  # fmt: skip
    assert result.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, result)


def test_the_operator_runs_a_trainingjob_with_only_the_charts_rbac_in_a_restricted_namespace(
    kube: Kube, chart_rbac: Installed, tmp_path: Path
) -> None:
    namespace = chart_rbac.namespace
    kube.kubectl(
        "label", "namespace", namespace, "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    install_crds(kube)
    operator = OperatorProcess(chart_rbac.kube_as_operator, tmp_path / "operator.log")
    operator.start()
    try:
        create(
            kube,
            namespace,
            "trainingjobs",
            trainingjob("restricted", annotations={FAKE_HOLD: "true"}),
        )
        wait_for_phase(kube, namespace, "restricted", "Running")
        pods = wait_until(
            lambda: (
                kube.core_v1.list_namespaced_pod(
                    namespace, label_selector="trainwright.io/job=restricted"
                ).items
                or None
            ),
            timeout_s=60,
            what="the trainer pods to be admitted in the restricted namespace",
        )
        for pod in pods:
            assert pod.spec.security_context.run_as_non_root is True
            assert pod.spec.containers[0].security_context.capabilities.drop == ["ALL"]
        assert "Forbidden" not in operator.log_tail(200), operator.log_tail(200)
    finally:
        operator.stop()


MONITORING_CRDS = (
    Path(os.environ.get("TRAINWRIGHT_CACHE", Path.home() / ".cache" / "trainwright"))
    / "tools"
    / "crds"
    / "prometheus-operator-v0.85.0"
)


def test_the_monitoring_objects_pass_the_dry_run_against_the_prometheus_operators_crds(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """ServiceMonitor, PodMonitor, PrometheusRule and the dashboards, validated by the API
    server against the Prometheus Operator's own CRDs (hack/tools/build.sh copies them
    out of its Go module)."""
    if not (MONITORING_CRDS / "monitoring.coreos.com_servicemonitors.yaml").is_file():
        pytest.fail(f"{MONITORING_CRDS} is missing; run `make tools`", pytrace=False)
    applied = kube.kubectl("apply", "--server-side", "-f", str(MONITORING_CRDS), check=False)
    assert applied.returncode == 0, applied.stderr
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(MONITORING_CRDS))
    values = {
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboards": {"enabled": True},
        }
    }
    text = _render(values, namespace, _release(), tmp_path)
    monitoring = [
        doc
        for doc in yaml.safe_load_all(text)
        if doc and doc["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    ]
    assert {doc["kind"] for doc in monitoring} == {
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "ConfigMap",
    }
    manifest = tmp_path / "monitoring.yaml"
    manifest.write_text(yaml.safe_dump_all(monitoring))
    result = kube.kubectl(
        "apply", "--dry-run=server", "--server-side", "-n", namespace, "-f", str(manifest),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(monitoring)
