"""Kueue on the local control plane, for e2e tests: its API, a private queue per test, a
Job's Workload and the visibility API's pending list (hack/k8s/kueue/, docs/queues.md).

A test that owns its quota creates its own ClusterQueue (no cohort, so it borrows from no
one) over the cluster's ResourceFlavors with `create_queue`, and a LocalQueue in its
namespace; the shipped ClusterQueue `trainwright` is shared by every test of the session.
"""

from __future__ import annotations

import json
import os
import ssl
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster import GPU_RESOURCE, Kube

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
SHIPPED_CLUSTER_QUEUE = "trainwright"


def kueue_api(kube: Kube) -> client.CustomObjectsApi:
    """Kueue's API; skips the test only where Kueue is switched off (KUEUE=0, or a cluster
    named by TRAINWRIGHT_E2E_KUBECONFIG without it). A private cluster must have it."""
    api = client.CustomObjectsApi(kube.api_client)
    if os.environ.get("KUEUE") == "0":
        pytest.skip("Kueue is disabled (KUEUE=0)")
    try:
        api.list_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "resourceflavors")
    except ApiException as error:
        if error.status == 404 and not kube.private:
            pytest.skip("the cluster named by TRAINWRIGHT_E2E_KUBECONFIG has no Kueue")
        raise
    return api


def create_queue(
    kueue: client.CustomObjectsApi,
    namespace: str,
    *,
    flavour: str,
    gpus: int,
    local_queue: str = "team",
    device: str = GPU_RESOURCE,
    preempt_lower: bool = False,
) -> str:
    """A ClusterQueue `cq-<namespace>` for that namespace alone with `gpus` devices
    (`device`: the GPU resource, or the real node's CPU rank) of one flavour (and ample cpu
    and memory), and a LocalQueue over it; returns the ClusterQueue's name (delete it at
    the end: Kueue removes it once the namespace's Workloads are gone). ``preempt_lower``:
    a workload of a higher priority preempts lower ones within it."""
    cluster_queue = f"cq-{namespace}"[:63]
    quotas = [
        {"name": device, "nominalQuota": gpus},
        {"name": "cpu", "nominalQuota": 64},
        {"name": "memory", "nominalQuota": "256Gi"},
    ]
    kueue.create_cluster_custom_object(
        KUEUE_GROUP,
        KUEUE_VERSION,
        "clusterqueues",
        {
            "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceGroups": [
                    {
                        "coveredResources": [device, "cpu", "memory"],
                        "flavors": [{"name": flavour, "resources": quotas}],
                    }
                ],
                **(
                    {"preemption": {"withinClusterQueue": "LowerPriority"}} if preempt_lower else {}
                ),
            },
        },
    )
    kueue.create_namespaced_custom_object(
        KUEUE_GROUP,
        KUEUE_VERSION,
        namespace,
        "localqueues",
        {
            "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
            "kind": "LocalQueue",
            "metadata": {"name": local_queue},
            "spec": {"clusterQueue": cluster_queue},
        },
    )
    return cluster_queue


def workloads_of(kueue: client.CustomObjectsApi, namespace: str, job_uid: str) -> list[Any]:
    """The Workloads Kueue made for the Job with that uid (one, once it has seen the Job)."""
    listed = kueue.list_namespaced_custom_object(
        KUEUE_GROUP,
        KUEUE_VERSION,
        namespace,
        "workloads",
        label_selector=f"{JOB_UID_LABEL}={job_uid}",
    )
    return list(listed["items"])


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The condition of that type of a Kueue object; {} while it has none."""
    for item in obj.get("status", {}).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


def pending_workloads(kube: Kube, namespace: str, local_queue: str) -> list[dict[str, Any]]:
    """The LocalQueue's waiting Workloads in order, with positionInLocalQueue and
    positionInClusterQueue, from Kueue's visibility API (an aggregated API)."""
    path = (
        f"/apis/visibility.{KUEUE_GROUP}/v1beta2/namespaces/{namespace}"
        f"/localqueues/{local_queue}/pendingworkloads"
    )
    return list(json.loads(kube.kubectl("get", "--raw", path).stdout)["items"])


def kueue_metrics(kube: Kube) -> str:
    """The real Kueue's /metrics, as its ServiceMonitor scrapes it: HTTPS with the
    certificate cluster.sh signed, and a bearer token Kueue checks with a TokenReview and a
    SubjectAccessReview (the cluster's admin token here). Only on a private cluster, whose
    state dir holds Kueue's rendered config (its metrics address)."""
    if kube.state_dir is None:
        pytest.skip("Kueue's metrics address is known only for a private cluster")
    config = yaml.safe_load((kube.state_dir / "kueue" / "config.yaml").read_text())
    address = config["metrics"]["bindAddress"]
    kubeconfig = yaml.safe_load(kube.kubeconfig.read_text())
    token = kubeconfig["users"][0]["user"]["token"]
    response = httpx.get(
        f"https://{address}/metrics",
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=kube.state_dir / "pki" / "ca.crt"),
        timeout=10,
    )
    response.raise_for_status()
    return response.text
