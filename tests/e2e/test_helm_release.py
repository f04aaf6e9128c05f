"""The chart installed for real: the operator pod runs on the local cluster's real node.

`helm install` puts the operator image (built by `make images`, imported into the
node's containerd) on trainwright-real-0; its probes pass, its /metrics answers through
the chart's Service, it plans a TrainingJob with only the chart's RBAC; `helm upgrade`
with a changed value rolls it; `helm uninstall` keeps the CRDs and the user's objects.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import Kube, wait_until
from e2e.operator_harness import create, get, status_of, trainingjob

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "trainwright"
HELM = Path(os.environ.get("TRAINWRIGHT_CACHE", Path.home() / ".cache" / "trainwright")) / (
    "tools/bin/helm"
)
RELEASE = "trainwright"
REAL_NODE = "trainwright-real-0"
# The operator pod goes to the real node: the only one whose pods run.
PLACEMENT = [
    "--set-json",
    'operator.tolerations=[{"key":"trainwright.io/cpu-rank","operator":"Exists","effect":"NoSchedule"}]',
    "--set-json",
    'operator.nodeSelector={"trainwright.io/real-node":"true"}',
]
ROLLOUT_TIMEOUT_S = 240


def _helm(kube: Kube, *args: str) -> str:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing; run `make tools`", pytrace=False)
    done = subprocess.run(
        [str(HELM), *args], env=kube.env, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done.stdout


def _operator_pods(kube: Kube, namespace: str) -> list[Any]:
    pods = kube.core_v1.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/name=trainwright"
    ).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def _ready_pod(kube: Kube, namespace: str) -> Any:
    found: list[Any] = []

    def ready() -> bool:
        found.clear()
        for pod in _operator_pods(kube, namespace):
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            if conditions.get("Ready") == "True":
                found.append(pod)
        return len(found) == 1 and len(_operator_pods(kube, namespace)) == 1

    wait_until(ready, timeout_s=ROLLOUT_TIMEOUT_S, what="one Ready operator pod of the release")
    return found[0]


@pytest.fixture
def release(kube: Kube, namespace: str) -> Iterator[str]:
    """The chart in the test's namespace. The CRDs are already on the cluster (the other
    e2e tests apply crds/ with kubectl), so the release takes them over, as a user moving
    from `kubectl apply -f crds/` to the chart does."""
    _helm(
        kube,
        "install",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--take-ownership",
        "--force-conflicts",
        *PLACEMENT,
    )
    yield namespace
    subprocess.run(
        [str(HELM), "uninstall", RELEASE, "-n", namespace, "--ignore-not-found"],
        env=kube.env,
        capture_output=True,
        check=False,
    )


def test_install_upgrade_and_uninstall_with_the_operator_pod_on_the_real_node(
    kube: Kube, namespace: str, release: str
) -> None:
    pod = _ready_pod(kube, namespace)
    assert pod.spec.node_name == REAL_NODE
    (container,) = pod.status.container_statuses
    assert container.image.endswith("trainwright/operator:0.1.0")
    assert container.restart_count == 0

    # /metrics through the chart's Service (its ClusterIP, through kube-proxy's rules).
    services = kube.core_v1.list_namespaced_service(namespace).items
    (metrics,) = [s for s in services if any(p.name == "metrics" for p in s.spec.ports)]
    port = next(p.port for p in metrics.spec.ports if p.name == "metrics")
    url = f"http://{metrics.spec.cluster_ip}:{port}/metrics"

    def metrics_served() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return b"trainwright_reconciles_total" in response.read()
        except OSError:
            return False

    wait_until(metrics_served, timeout_s=60, what=f"the operator's /metrics at {url}")

    # It plans a TrainingJob (on the fake GPU nodes) with the chart's RBAC alone.
    create(kube, namespace, "trainingjobs", trainingjob("via-chart"))

    def planned() -> dict[str, Any] | None:
        status = status_of(kube, namespace, "trainingjobs", "via-chart")
        return status if status.get("plan") else None

    plan = wait_until(planned, timeout_s=90, what="the in-cluster operator to plan via-chart")
    assert plan["plan"]["gpuType"] in {"H100-SXM", "A100-80GB-SXM", "L4"}

    # A changed value rolls the Deployment (its config checksum annotation changes).
    before = pod.metadata.name
    _helm(
        kube,
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--take-ownership",
        "--force-conflicts",
        *PLACEMENT,
        "--set",
        "operator.workers=8",
    )
    rolled = _ready_pod(kube, namespace)
    assert rolled.metadata.name != before
    assert "--workers=8" in (rolled.spec.containers[0].args or [])

    # Uninstall: the release's objects go, the CRDs and the user's TrainingJob stay.
    _helm(kube, "uninstall", RELEASE, "-n", namespace)
    wait_until(
        lambda: not _operator_pods(kube, namespace),
        timeout_s=120,
        what="the operator pod to go with the release",
    )
    crds = json.loads(kube.kubectl("get", "crd", "-o", "json").stdout)
    names = {item["metadata"]["name"] for item in crds["items"]}
    assert {"trainingjobs.trainwright.io", "capacityplans.trainwright.io"} <= names
    kept = get(kube, namespace, "trainingjobs", "via-chart") or {}
    # Kept whole: the plan the in-cluster operator wrote is still in its status.
    assert kept.get("status", {}).get("plan") == plan["plan"]
