"""The real Kueue of the local control plane (hack/k8s/kueue/, docs/queues.md) admits a
suspended gang Job whole while its quota allows, keeps the next one suspended saying which
quota it waits for (and its place in the queue, through Kueue's visibility API), and its
webhooks really mutate and validate Jobs.

The tests that fill a quota build their own ClusterQueue (e2e/kueue.py: create_queue), so
no other test's Jobs share it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster import FAKE_HOLD, GPU_PRODUCT_LABEL, GPU_RESOURCE, Kube, wait_until
from e2e.kueue import (
    KUEUE_GROUP,
    KUEUE_VERSION,
    QUEUE_LABEL,
    SHIPPED_CLUSTER_QUEUE,
    condition,
    create_queue,
    kueue_api,
    pending_workloads,
    workloads_of,
)

L4_PRODUCT = "NVIDIA-L4"
L4_FLAVOUR = "nvidia-l4"  # hack/k8s/kueue/queues.yaml: the product lowercased
SHIPPED_FLAVOURS = {
    "nvidia-h100-80gb-hbm3",
    "nvidia-a100-sxm4-80gb",
    "nvidia-l4",
    "trainwright-cpu",
}


@pytest.fixture(scope="module")
def kueue(kube: Kube) -> client.CustomObjectsApi:
    return kueue_api(kube)


@pytest.fixture
def local_queue(kube: Kube, kueue: client.CustomObjectsApi, namespace: str) -> Iterator[str]:
    """A LocalQueue over a ClusterQueue of this test alone: 8 L4 GPUs (two 2-pod gangs of 4
    GPUs per pod do not fit at once)."""
    cluster_queue = create_queue(kueue, namespace, flavour=L4_FLAVOUR, gpus=8, local_queue="team")
    yield "team"
    kueue.delete_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues", cluster_queue)


def gang_job(name: str, queue: str, *, suspend: bool = True) -> dict[str, Any]:
    """An indexed Job of two pods of 4 L4 GPUs each, held Running by kwok, queued on `queue`."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
        "spec": {
            "suspend": suspend,
            "parallelism": 2,
            "completions": 2,
            "completionMode": "Indexed",
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {FAKE_HOLD: "true"}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {GPU_PRODUCT_LABEL: L4_PRODUCT},
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "ghcr.io/trainwright/trainer:test",
                            "resources": {
                                "requests": {GPU_RESOURCE: "4", "cpu": "1", "memory": "1Gi"},
                                "limits": {GPU_RESOURCE: "4"},
                            },
                        }
                    ],
                },
            },
        },
    }


def job_pods(kube: Kube, namespace: str, job: str) -> list[client.V1Pod]:
    return list(kube.core_v1.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def gang_pods(kube: Kube, namespace: str, job: str) -> list[client.V1Pod] | None:
    """Both pods of a gang Job, or None while fewer exist."""
    pods = job_pods(kube, namespace, job)
    return pods if len(pods) == 2 else None


def created_at(pod: client.V1Pod) -> datetime:
    stamp = pod.metadata.creation_timestamp
    assert isinstance(stamp, datetime)
    return stamp


def test_the_shipped_cluster_queue_is_active_over_a_flavour_per_device(
    kube: Kube, kueue: client.CustomObjectsApi
) -> None:
    flavours = kueue.list_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "resourceflavors")
    cluster_queue = kueue.get_cluster_custom_object(
        KUEUE_GROUP, KUEUE_VERSION, "clusterqueues", SHIPPED_CLUSTER_QUEUE
    )
    local_queues = kueue.list_namespaced_custom_object(
        KUEUE_GROUP, KUEUE_VERSION, "default", "localqueues"
    )

    assert {f["metadata"]["name"] for f in flavours["items"]} >= SHIPPED_FLAVOURS
    assert condition(cluster_queue, "Active").get("status") == "True"
    assert {q["metadata"]["name"] for q in local_queues["items"]} >= {"team-a", "team-b"}


def test_a_gang_is_admitted_whole_and_the_next_waits_suspended_for_quota(
    kube: Kube, kueue: client.CustomObjectsApi, namespace: str, local_queue: str
) -> None:
    batch = kube.batch_v1
    started = time.monotonic()
    first = batch.create_namespaced_job(namespace, gang_job("first", local_queue))

    pods = wait_until(
        lambda: gang_pods(kube, namespace, "first"), timeout_s=60, what="the first gang's pods"
    )
    admitted_s = time.monotonic() - started
    (workload,) = workloads_of(kueue, namespace, first.metadata.uid)
    (assignment,) = workload["status"]["admission"]["podSetAssignments"]
    assert condition(workload, "Admitted").get("status") == "True"
    assert assignment["count"] == 2
    assert assignment["flavors"][GPU_RESOURCE] == L4_FLAVOUR
    assert assignment["resourceUsage"][GPU_RESOURCE] == "8"
    stamps = sorted(created_at(pod) for pod in pods)
    assert (stamps[1] - stamps[0]).total_seconds() <= 1.0
    assert batch.read_namespaced_job("first", namespace).spec.suspend is False

    second = batch.create_namespaced_job(namespace, gang_job("second", local_queue))

    def waiting() -> dict[str, Any] | None:
        found = workloads_of(kueue, namespace, second.metadata.uid)
        reserved = condition(found[0], "QuotaReserved") if found else {}
        return reserved if reserved.get("status") == "False" else None

    reserved = wait_until(waiting, timeout_s=30, what="the second gang's QuotaReserved=False")
    assert (
        f"insufficient unused quota for {GPU_RESOURCE} in flavor {L4_FLAVOUR}, 8 more needed"
        in reserved["message"]
    )
    (queued,) = pending_workloads(kube, namespace, local_queue)
    assert queued["metadata"]["ownerReferences"][0]["name"] == "second"
    assert queued["positionInLocalQueue"] == 0
    time.sleep(2)  # the Job controller would have created pods by now had it been released
    assert batch.read_namespaced_job("second", namespace).spec.suspend is True
    assert job_pods(kube, namespace, "second") == []

    # The quota frees when the first gang goes: the waiting one is admitted whole.
    batch.delete_namespaced_job("first", namespace, propagation_policy="Background")
    wait_until(
        lambda: gang_pods(kube, namespace, "second"),
        timeout_s=60,
        what="the second gang's pods after the first was deleted",
    )
    print(f"Kueue admitted a 2-pod gang and both pods existed {admitted_s:.2f} s after create")


def test_kueues_webhooks_suspend_a_queued_job_and_keep_its_queue_while_it_runs(
    kube: Kube, kueue: client.CustomObjectsApi, namespace: str, local_queue: str
) -> None:
    batch = kube.batch_v1

    created = batch.create_namespaced_job(namespace, gang_job("eager", local_queue, suspend=False))
    wait_until(
        lambda: gang_pods(kube, namespace, "eager"),
        timeout_s=60,
        what="the eager gang's pods once Kueue admitted it",
    )
    moved = {"metadata": {"labels": {QUEUE_LABEL: "elsewhere"}}}
    with pytest.raises(ApiException) as rejected:
        batch.patch_namespaced_job("eager", namespace, moved)

    assert created.spec.suspend is True  # the mutating webhook, before anything was stored
    message = json.loads(rejected.value.body)["message"]
    assert rejected.value.status == 403
    assert message.startswith('admission webhook "vjob.kb.io" denied the request')
    assert message.endswith(
        f'labels[{QUEUE_LABEL}]: Invalid value: "elsewhere": field is immutable'
    )
