"""Gang admission on the local control plane, with the real operator and the real Kueue.

Without ``spec.queue`` the operator itself starts a gang only when all of it fits on free
GPUs: a 16-GPU job with 8 H100s free stays ``Queued`` with no pod at all (its Job is
suspended, so no pod is ever bound), and starts when the other work finishes. With
``spec.queue`` Kueue admits gangs under a GPU quota: jobs beyond it wait ``Queued`` and
start as others finish, and a ``high`` job preempts a ``low`` one, which goes back to
``Queued`` with its progress kept, no restart used, and runs again on the same Job (same
attempt, same checkpoint directory) once re-admitted.

The admission latencies are printed (``-s``) for the closing note.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from e2e.cluster import FAKE_HOLD, FAKE_RESULT, GPU_PRODUCT_LABEL, GPU_RESOURCE, Kube, wait_until
from e2e.kueue import kueue_metrics
from e2e.operator_harness import (
    KWOK_TOLERATION,
    OperatorProcess,
    condition,
    create,
    operator,
    status_of,
    trainingjob,
    wait_for_phase,
)
from e2e.test_kueue import KUEUE_GROUP, KUEUE_VERSION, kueue
from hack_dashboards import load

__all__ = ["kueue", "operator"]  # the fixtures, imported so pytest finds them

H100_PRODUCT = "NVIDIA-H100-80GB-HBM3"
H100_FLAVOUR = "nvidia-h100-80gb-hbm3"  # hack/k8s/kueue/queues.yaml
ONE_NODE = {"gpuType": "H100-SXM", "gpus": 8, "nodes": 1, "gpusPerNode": 8}
TWO_NODES = {"gpuType": "H100-SXM", "gpus": 16, "nodes": 2, "gpusPerNode": 8}


def _pods(kube: Kube, namespace: str, owner: str) -> list[client.V1Pod]:
    selector = f"trainwright.io/job={owner}"
    return list(kube.core_v1.list_namespaced_pod(namespace, label_selector=selector).items)


def _finish(kube: Kube, namespace: str, owner: str) -> None:
    """kwok completes the held trainer pods of ``owner`` (as a finished run would)."""
    for pod in _pods(kube, namespace, owner):
        kube.core_v1.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": {FAKE_RESULT: "succeed"}}}
        )


def _blocker(namespace: str) -> dict[str, Any]:
    """A plain pod holding one H100 node's 8 GPUs (another team's work)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "blocker", "annotations": {FAKE_HOLD: "true"}},
        "spec": {
            "nodeSelector": {GPU_PRODUCT_LABEL: H100_PRODUCT},
            "tolerations": [KWOK_TOLERATION],
            "containers": [
                {
                    "name": "work",
                    "image": "busybox",
                    "resources": {"limits": {GPU_RESOURCE: "8"}, "requests": {GPU_RESOURCE: "8"}},
                }
            ],
        },
    }


def test_a_16_gpu_job_with_8_free_h100_stays_queued_with_no_pod_then_runs(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.core_v1.create_namespaced_pod(namespace, _blocker(namespace))
    wait_until(
        lambda: kube.core_v1.read_namespaced_pod("blocker", namespace).spec.node_name,
        timeout_s=30,
        what="the blocker pod to be bound",
    )
    create(
        kube,
        namespace,
        "trainingjobs",
        trainingjob("wide", resources=TWO_NODES, annotations={FAKE_HOLD: "true"}),
    )
    created = time.monotonic()
    wait_for_phase(kube, namespace, "wide", "Queued")

    def gate_verdict() -> dict[str, Any] | None:  # the gate's pass, after the first write
        found = status_of(kube, namespace, "trainingjobs", "wide")
        return found if "free now" in str(found.get("message")) else None

    status = wait_until(gate_verdict, timeout_s=30, what="the gang gate's verdict")
    print(
        f"\ngang gate: created -> Queued with free vs needed in {time.monotonic() - created:.1f} s"
    )
    admitted = condition(status, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "WaitingForCapacity")
    assert "needs 2 pod(s) x 8 H100-SXM (16 devices)" in admitted["message"]
    assert "8 are free now" in admitted["message"]
    job = kube.batch_v1.read_namespaced_job(status["children"]["job"], namespace)
    assert job.spec.suspend is True
    deadline = time.monotonic() + 12  # more than a gate interval: it must keep holding
    while time.monotonic() < deadline:
        assert _pods(kube, namespace, "wide") == [], "a pod of the queued gang exists"
        time.sleep(1)
    assert status_of(kube, namespace, "trainingjobs", "wide")["phase"] == "Queued"

    kube.core_v1.delete_namespaced_pod("blocker", namespace, grace_period_seconds=0)
    freed = time.monotonic()
    status = wait_for_phase(kube, namespace, "wide", "Running", timeout_s=60)
    print(f"gang gate: 8 H100 freed -> 16-GPU job Running in {time.monotonic() - freed:.1f} s")
    assert condition(status, "Admitted")["status"] == "True"
    bound = {p.spec.node_name for p in _pods(kube, namespace, "wide")}
    assert len(bound) == 2 and None not in bound
    assert status["restarts"] == 0


# With Kueue ----------------------------------------------------------------------------------


@pytest.fixture
def team_queues(kube: Kube, kueue: client.CustomObjectsApi, namespace: str) -> Iterator[None]:
    """LocalQueues team-a and team-b over a ClusterQueue of this test alone: 16 H100s, and
    preemption of lower priorities within it (as hack/k8s/kueue/queues.yaml's trainwright)."""
    cluster_queue = f"cq-{namespace}"[:63]
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
                "preemption": {"withinClusterQueue": "LowerPriority"},
                "resourceGroups": [
                    {
                        "coveredResources": [GPU_RESOURCE, "cpu", "memory"],
                        "flavors": [
                            {
                                "name": H100_FLAVOUR,
                                "resources": [
                                    {"name": GPU_RESOURCE, "nominalQuota": 16},
                                    {"name": "cpu", "nominalQuota": 64},
                                    {"name": "memory", "nominalQuota": "512Gi"},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
    )
    for team in ("team-a", "team-b"):
        kueue.create_namespaced_custom_object(
            KUEUE_GROUP,
            KUEUE_VERSION,
            namespace,
            "localqueues",
            {
                "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
                "kind": "LocalQueue",
                "metadata": {"name": team},
                "spec": {"clusterQueue": cluster_queue},
            },
        )
    yield
    kueue.delete_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues", cluster_queue)


def _queued_job(name: str, queue: str, priority: str) -> dict[str, Any]:
    body = trainingjob(name, resources=ONE_NODE, annotations={FAKE_HOLD: "true"})
    body["spec"] |= {"queue": queue, "priorityClass": priority}
    return body


def _set_progress(kube: Kube, namespace: str, name: str, step: int, checkpoint_step: int) -> None:
    """What the progress timer writes from rank 0's /progress (kwok's pods serve none)."""
    client.CustomObjectsApi(kube.api_client).patch_namespaced_custom_object_status(
        "trainwright.io",
        "v1alpha1",
        namespace,
        "trainingjobs",
        name,
        {
            "status": {
                "progress": {
                    "step": step,
                    "totalSteps": 1000,
                    "lastCheckpointStep": checkpoint_step,
                    "updatedTime": "2026-03-01T12:00:00Z",
                }
            }
        },
    )


def test_kueue_queues_beyond_quota_in_order_and_high_preempts_low_which_resumes(
    kube: Kube, namespace: str, operator: OperatorProcess, team_queues: None
) -> None:
    for name, queue in (("a1", "team-a"), ("b1", "team-b")):
        create(kube, namespace, "trainingjobs", _queued_job(name, queue, "low"))
    for name in ("a1", "b1"):
        running = wait_for_phase(kube, namespace, name, "Running", timeout_s=90)
        assert condition(running, "Admitted")["reason"] == "Admitted"

    created = time.monotonic()
    create(kube, namespace, "trainingjobs", _queued_job("a2", "team-a", "low"))
    status = wait_for_phase(kube, namespace, "a2", "Queued")
    print(f"\nkueue: beyond quota -> Queued in {time.monotonic() - created:.1f} s")
    assert condition(status, "Admitted")["reason"] == "WaitingForAdmission"

    def in_queue() -> bool:  # Kueue makes the Job's Workload a moment after the Job
        message = condition(status_of(kube, namespace, "trainingjobs", "a2"), "Admitted")
        return "Waiting in Kueue LocalQueue team-a" in message["message"]

    wait_until(in_queue, timeout_s=10, what="a2's Queued message to name its LocalQueue")
    print(f"kueue: waiting in its LocalQueue {time.monotonic() - created:.1f} s after apply")

    def quota_named() -> bool:  # Kueue may not have looked at the Workload at first
        message = condition(status_of(kube, namespace, "trainingjobs", "a2"), "Admitted")
        return "insufficient unused quota for nvidia.com/gpu" in message["message"]

    wait_until(quota_named, timeout_s=20, what="a2's Queued message to name the GPU quota")
    print(f"kueue: the quota it waits for named {time.monotonic() - created:.1f} s after apply")
    assert _pods(kube, namespace, "a2") == []

    def positioned() -> dict[str, Any] | None:  # from Kueue's visibility API
        found = condition(status_of(kube, namespace, "trainingjobs", "a2"), "Admitted")
        return found if "Position 1 of 1 in its LocalQueue" in str(found["message"]) else None

    wait_until(positioned, timeout_s=45, what="a2's place in its queue in the Queued message")

    _finish(kube, namespace, "a1")  # the first job of the queue finishes: the next one starts
    wait_for_phase(kube, namespace, "a1", "Succeeded", timeout_s=60)
    finished = time.monotonic()
    wait_for_phase(kube, namespace, "a2", "Running", timeout_s=90)
    print(f"kueue: quota freed -> next job Running in {time.monotonic() - finished:.1f} s")

    for name in ("a2", "b1"):
        _set_progress(kube, namespace, name, step=120, checkpoint_step=100)
    created = time.monotonic()
    create(kube, namespace, "trainingjobs", _queued_job("urgent", "team-b", "high"))

    def preempted_one() -> str | None:
        for name in ("a2", "b1"):
            found = status_of(kube, namespace, "trainingjobs", name)
            if found.get("phase") == "Queued":
                return name
        return None

    victim = wait_until(preempted_one, timeout_s=90, what="a low job to be preempted")
    status = status_of(kube, namespace, "trainingjobs", victim)
    assert condition(status, "Admitted")["reason"] == "Preempted"
    assert (status["restarts"], status["attempt"]) == (0, 0)
    assert status["progress"]["lastCheckpointStep"] == 100  # progress kept while queued
    wait_for_phase(kube, namespace, "urgent", "Running", timeout_s=90)
    print(
        f"kueue: high job created -> Running (after preemption) in {time.monotonic() - created:.1f} s"
    )
    _kueue_metrics_show_the_preemption(kube, namespace)

    _finish(kube, namespace, "urgent")
    wait_for_phase(kube, namespace, "urgent", "Succeeded", timeout_s=60)
    finished = time.monotonic()
    resumed = wait_for_phase(kube, namespace, victim, "Running", timeout_s=120)
    print(f"kueue: preempted job re-admitted -> Running in {time.monotonic() - finished:.1f} s")
    # The same Job, attempt 0, resumes: its trainer reads the newest checkpoint (step 100).
    assert (resumed["restarts"], resumed["attempt"]) == (0, 0)
    assert resumed["children"]["job"] == status["children"]["job"]
    assert resumed["progress"]["lastCheckpointStep"] == 100


def _series(exposition: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets of its series."""
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(dict(sample.labels))
    return found


def _kueue_metrics_show_the_preemption(kube: Kube, namespace: str) -> None:
    """The real Kueue's /metrics after the preemption: the queue row of the operator
    dashboard reads these families, and its sample data (KueueMetrics) must name them and
    their labels as Kueue does."""
    real = _series(kueue_metrics(kube))
    cluster_queue = f"cq-{namespace}"[:63]
    preempted = [
        labels
        for labels in real.get("kueue_preempted_workloads_total", [])
        if labels.get("preempting_cluster_queue") == cluster_queue
    ]
    assert preempted, sorted(name for name in real if name.startswith("kueue_preempted"))
    admitted = {
        labels["name"]
        for labels in real.get("kueue_local_queue_admitted_active_workloads", [])
        if labels.get("namespace") == namespace
    }
    assert {"team-a", "team-b"} <= admitted, admitted
    simulated = load("sample_data").KueueMetrics()  # the dashboards' simulated Kueue
    for tick in range(150):  # past the simulated preemption: every series exists
        simulated.tick(tick, tick / 2)
    for name, label_sets in _series(generate_latest(simulated.registry).decode()).items():
        if name.endswith("_created"):  # prometheus_client's own; Go's client has none
            continue
        assert name in real, f"Kueue serves no {name}"
        simulated_names = {frozenset(labels) for labels in label_sets}
        real_names = {frozenset(labels) for labels in real[name]}
        assert simulated_names <= real_names, (name, simulated_names, real_names)
