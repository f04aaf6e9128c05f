"""Saying why trainer pods do not start: the scheduler's, the kubelet's and the spec's reasons,
in one sentence with the pod's (or the claim's) name, on kmock's in-memory API server."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest
from test_operator_trainingjob import NS, RESOURCES, TJ, World, _condition, _node, _trainingjob

from trainwright.operator.diagnosis import (
    Reference,
    claim_references,
    not_starting,
    pod_problem,
)
from trainwright.operator.trainingjob import owner_name
from trainwright.operator.waiting import on_pod_event

PVC = "v1/persistentvolumeclaims"
MISSING_PVC = (
    '0/4 nodes are available: persistentvolumeclaim "datasets" not found. '
    "preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
)


def _pod(name: str, job: str = "ft-a0", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "labels": {"batch.kubernetes.io/job-name": job, "trainwright.io/job": "ft"},
        },
        "status": {"phase": "Pending", **status},
    }


def _unschedulable(name: str, message: str) -> dict[str, Any]:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
    }
    return _pod(name, conditions=[condition])


def _waiting(name: str, reason: str, message: str, *, init: bool = False) -> dict[str, Any]:
    container = {
        "name": "setup" if init else "trainer",
        "image": "trainwright/trainer:0.1",
        "restartCount": 5 if reason == "CrashLoopBackOff" else 0,
        "state": {"waiting": {"reason": reason, "message": message}},
        "lastState": {"terminated": {"exitCode": 1}} if reason == "CrashLoopBackOff" else {},
    }
    key = "initContainerStatuses" if init else "containerStatuses"
    return _pod(name, **{key: [container]})


# Pure: one sentence per cause --------------------------------------------------------------


def test_a_missing_claim_is_said_with_the_pod_name_without_the_preemption_note() -> None:
    assert pod_problem(_unschedulable("ft-a0-0-x", MISSING_PVC)) == (
        'Pod ft-a0-0-x cannot be scheduled: 0/4 nodes are available: persistentvolumeclaim "datasets" not found.'
    )


@pytest.mark.parametrize(
    ("message", "said"),
    [
        (
            "0/2 nodes are available: 2 node(s) had untolerated taint {dedicated: infer}.",
            "untolerated taint {dedicated: infer}",
        ),
        (
            "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
            "2 Insufficient nvidia.com/gpu",
        ),
        (
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
            "didn't match Pod's node affinity/selector",
        ),
    ],
)
def test_the_schedulers_reason_is_carried(message: str, said: str) -> None:
    sentence = pod_problem(_unschedulable("p-0", message))
    assert sentence is not None and sentence.startswith("Pod p-0 cannot be scheduled: ")
    assert said in sentence


def test_image_pull_errors_and_crash_looping_init_containers_are_said() -> None:
    pull = pod_problem(_waiting("p-0", "ImagePullBackOff", 'Back-off pulling image "x:1"'))
    assert pull == (
        "Pod p-0 cannot pull trainwright/trainer:0.1 for container trainer "
        '(ImagePullBackOff): Back-off pulling image "x:1".'
    )
    init = pod_problem(_waiting("p-1", "CrashLoopBackOff", "back-off 40s", init=True))
    assert init == "Pod p-1: init container setup keeps crashing (5 restarts, last exit code 1)."
    config = pod_problem(
        _waiting("p-2", "CreateContainerConfigError", 'secret "hf-token" not found')
    )
    assert config is not None and 'secret "hf-token" not found' in config


def test_a_pod_still_pulling_or_running_says_nothing() -> None:
    assert pod_problem(_waiting("p-0", "ContainerCreating", "")) is None
    assert pod_problem(_pod("p-1")) is None
    running = _unschedulable("p-2", MISSING_PVC)
    running["status"]["phase"] = "Running"
    assert pod_problem(running) is None


def test_warning_events_explain_a_pod_whose_status_says_nothing_yet() -> None:
    events = [
        {
            "type": "Warning",
            "reason": "FailedMount",
            "message": 'MountVolume.SetUp failed for volume "cfg": configmap "x" not found',
            "involvedObject": {"kind": "Pod", "name": "p-0"},
            "lastTimestamp": "2026-03-01T12:00:05Z",
        },
        {
            "type": "Normal",
            "reason": "Scheduled",
            "message": "assigned",
            "involvedObject": {"kind": "Pod", "name": "p-0"},
            "lastTimestamp": "2026-03-01T12:00:06Z",
        },
    ]
    assert not_starting([_pod("p-0")], events) == (
        'Pod p-0 does not start (FailedMount): MountVolume.SetUp failed for volume "cfg": '
        'configmap "x" not found.'
    )
    assert not_starting([_pod("p-0")], events[1:]) is None


def test_the_claims_a_spec_names_come_with_their_field() -> None:
    spec = _trainingjob(
        "ft",
        checkpoint={"pvc": "ckpt"},
        output={"uri": "pvc://models/out"},
        model={"name": "llama-3.1-8b", "uri": "pvc://datasets/base"},
    )["spec"]
    assert claim_references(spec) == [
        Reference("PersistentVolumeClaim", "datasets", "spec.model.uri"),
        Reference("PersistentVolumeClaim", "models", "spec.output.uri"),
        Reference("PersistentVolumeClaim", "ckpt", "spec.checkpoint.pvc"),
    ]


# On the emulated API server ----------------------------------------------------------------


@pytest.fixture
def world(kmock: kmock.KubernetesEmulator) -> World:
    for key, (kind, namespaced) in RESOURCES.items():
        kmock.resources[key] = {"kind": kind, "namespaced": namespaced}
    kmock.resources[PVC] = {"kind": "PersistentVolumeClaim", "namespaced": True}
    kmock.resources["v1/events"] = {"kind": "Event", "namespaced": True}
    for i in range(2):
        kmock.objects["v1/nodes", None, f"h100-{i}"] = _node(
            f"h100-{i}", "NVIDIA-H100-80GB-HBM3", 8
        )
    return World(kmock)


def _claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS},
    }


async def _pod_event(world: World, pod: dict[str, Any], type_: str = "MODIFIED") -> None:
    await asyncio.to_thread(
        on_pod_event, world.context, pod, type_, plural="trainingjobs", owner_of=owner_name
    )


@pytest.mark.asyncio
async def test_a_missing_dataset_claim_is_named_as_soon_as_a_pod_appears(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    await _pod_event(world, _pod("ft-a0-0-x"), "ADDED")

    status = await world.status("ft")
    running = _condition(status, "Running")
    assert (status["phase"], running["status"], running["reason"]) == (
        "Planned",
        "False",
        "MissingReference",
    )
    assert (
        running["message"]
        == status["message"]
        == (
            f"PersistentVolumeClaim {NS}/datasets named by spec.dataset.uri does not exist; "
            "the trainer pods wait for it and start once it is created."
        )
    )
    assert ("Warning", "MissingReference") in [(t, r) for t, r, _ in world.events]
    # The reconcile (a Job event, the resync) keeps the explanation while no pod is ready.
    again = await world.reconcile("ft")
    assert _condition(again, "Running")["reason"] == "MissingReference"


@pytest.mark.asyncio
async def test_the_schedulers_reason_replaces_waiting_and_goes_once_the_pods_schedule(
    world: World,
) -> None:
    world.server.objects[PVC, NS, "datasets"] = _claim("datasets")
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    stuck = _unschedulable("ft-a0-0-x", "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    world.server.objects["v1/pods", NS, "ft-a0-0-x"] = stuck
    await _pod_event(world, stuck)

    running = _condition(await world.status("ft"), "Running")
    assert (running["reason"], running["message"]) == (
        "PodsNotStarting",
        "Pod ft-a0-0-x cannot be scheduled: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
    )
    writes = world.kube.status_writes
    await _pod_event(world, stuck)  # the same pod status again: nothing to say
    assert world.kube.status_writes == writes

    scheduled = _pod("ft-a0-0-x", conditions=[{"type": "PodScheduled", "status": "True"}])
    world.server.objects["v1/pods", NS, "ft-a0-0-x"] = scheduled
    await _pod_event(world, scheduled)
    running = _condition(await world.status("ft"), "Running")
    assert (running["reason"], running["message"]) == (
        "WaitingForPods",
        "Waiting for the trainer pods to start: 0 of 2 trainer pod(s) ready.",
    )


@pytest.mark.asyncio
async def test_pods_of_other_jobs_and_running_training_jobs_are_left_alone(world: World) -> None:
    world.server.objects[PVC, NS, "datasets"] = _claim("datasets")
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    await world.set_job_status("ft-a0", {"ready": 2, "active": 2})
    await world.reconcile("ft")
    writes = world.kube.status_writes
    await _pod_event(world, _unschedulable("ft-a0-1-y", MISSING_PVC))
    await _pod_event(world, _unschedulable("other-0", MISSING_PVC) | {"metadata": {}})
    assert world.kube.status_writes == writes
    assert (await world.status("ft"))["phase"] == "Running"
