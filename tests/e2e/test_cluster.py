"""The local control plane behaves like a GPU cluster: labelled nodes, scheduling, outcomes."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from kubernetes import client

from e2e.cluster import (
    FAKE_EXIT_CODE,
    FAKE_HOLD,
    FAKE_RESULT,
    GPU_COUNT_LABEL,
    GPU_MEMORY_LABEL,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    Kube,
    wait_until,
)

L4_PRODUCT = "NVIDIA-L4"
# kwok completes an unheld Job pod this long after it runs (hack/k8s/kwok.yaml).
AUTOCOMPLETE_DELAY_S = 2.0


def gpu_job(
    name: str, *, gpus: int, product: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A one-pod Job asking for `gpus` GPUs on a node of `product`, never retried."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {GPU_PRODUCT_LABEL: product},
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "ghcr.io/trainwright/trainer:test",
                            "resources": {
                                "limits": {GPU_RESOURCE: str(gpus)},
                                "requests": {GPU_RESOURCE: str(gpus)},
                            },
                        }
                    ],
                },
            },
        },
    }


def job_pods(kube: Kube, namespace: str, job: str) -> list[client.V1Pod]:
    return list(kube.core_v1.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def job_condition(kube: Kube, namespace: str, job: str) -> str | None:
    """The type of the Job's terminal condition (Complete or Failed), if it has one."""
    status = kube.batch_v1.read_namespaced_job_status(job, namespace).status
    for condition in status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def test_fake_nodes_carry_the_gpu_labels_and_allocatable_gpus_of_the_inventory(kube: Kube) -> None:
    nodes = kube.core_v1.list_node(label_selector="nvidia.com/gpu.present=true").items
    assert nodes, "no node is labelled nvidia.com/gpu.present=true"
    for node in nodes:
        labels, allocatable = node.metadata.labels, node.status.allocatable
        assert labels[GPU_COUNT_LABEL] == allocatable[GPU_RESOURCE], node.metadata.name
        assert int(labels[GPU_MEMORY_LABEL]) > 0, node.metadata.name
        ready = [c.status for c in node.status.conditions if c.type == "Ready"]
        assert ready == ["True"], f"node {node.metadata.name} is not Ready"
    if not kube.inventory:  # a cluster not described by TRAINWRIGHT_INVENTORY
        return
    by_product = Counter(node.metadata.labels[GPU_PRODUCT_LABEL] for node in nodes)
    assert by_product == {group["product"]: group["nodes"] for group in kube.inventory}
    groups = {group["product"]: group for group in kube.inventory}
    for node in nodes:
        group = groups[node.metadata.labels[GPU_PRODUCT_LABEL]]
        assert node.metadata.labels[GPU_MEMORY_LABEL] == str(group["memoryMiB"])
        assert node.status.allocatable[GPU_RESOURCE] == str(group["gpusPerNode"])


def test_a_gpu_job_runs_on_a_node_of_its_product_and_completes(kube: Kube, namespace: str) -> None:
    kube.batch_v1.create_namespaced_job(namespace, gpu_job("l4-job", gpus=2, product=L4_PRODUCT))

    outcome = wait_until(
        lambda: job_condition(kube, namespace, "l4-job"), timeout_s=60, what="Job l4-job to finish"
    )

    assert outcome == "Complete"
    (pod,) = job_pods(kube, namespace, "l4-job")
    node = kube.core_v1.read_node(pod.spec.node_name)
    assert node.metadata.labels[GPU_PRODUCT_LABEL] == L4_PRODUCT
    assert pod.status.phase == "Succeeded"
    assert pod.status.pod_ip
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_a_held_pod_fails_with_exit_code_75_when_annotated(kube: Kube, namespace: str) -> None:
    job = gpu_job("held", gpus=8, product="NVIDIA-H100-80GB-HBM3", annotations={FAKE_HOLD: "true"})
    kube.batch_v1.create_namespaced_job(namespace, job)
    running = wait_until(
        lambda: [p for p in job_pods(kube, namespace, "held") if p.status.phase == "Running"],
        timeout_s=60,
        what="the held Job's pod to run",
    )
    pod_name = running[0].metadata.name
    time.sleep(AUTOCOMPLETE_DELAY_S + 0.5)
    assert kube.core_v1.read_namespaced_pod(pod_name, namespace).status.phase == "Running"

    patch = {"metadata": {"annotations": {FAKE_RESULT: "fail", FAKE_EXIT_CODE: "75"}}}
    kube.core_v1.patch_namespaced_pod(pod_name, namespace, patch)
    outcome = wait_until(
        lambda: job_condition(kube, namespace, "held"), timeout_s=60, what="Job held to fail"
    )

    assert outcome == "Failed"
    pod = kube.core_v1.read_namespaced_pod(pod_name, namespace)
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.exit_code, terminated.reason) == ("Failed", 75, "Error")


def test_a_job_created_to_fail_reports_its_exit_code(kube: Kube, namespace: str) -> None:
    annotations = {FAKE_RESULT: "fail", FAKE_EXIT_CODE: "76"}
    job = gpu_job("doomed", gpus=1, product=L4_PRODUCT, annotations=annotations)
    kube.batch_v1.create_namespaced_job(namespace, job)

    outcome = wait_until(
        lambda: job_condition(kube, namespace, "doomed"), timeout_s=60, what="Job doomed to fail"
    )

    assert outcome == "Failed"
    (pod,) = job_pods(kube, namespace, "doomed")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 76


def test_a_pod_asking_for_more_gpus_than_any_node_has_stays_pending(
    kube: Kube, namespace: str
) -> None:
    most_gpus = max(int(n.status.allocatable.get(GPU_RESOURCE, "0")) for n in kube.nodes())
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-big"},
        "spec": {
            "containers": [
                {
                    "name": "trainer",
                    "image": "ghcr.io/trainwright/trainer:test",
                    "resources": {"limits": {GPU_RESOURCE: str(most_gpus + 1)}},
                }
            ]
        },
    }
    kube.core_v1.create_namespaced_pod(namespace, pod)

    def unschedulable() -> client.V1PodCondition | None:
        status = kube.core_v1.read_namespaced_pod_status("too-big", namespace).status
        for condition in status.conditions or []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return condition
        return None

    condition = wait_until(unschedulable, timeout_s=30, what="pod too-big to be Unschedulable")

    assert kube.core_v1.read_namespaced_pod("too-big", namespace).status.phase == "Pending"
    assert f"Insufficient {GPU_RESOURCE}" in condition.message
