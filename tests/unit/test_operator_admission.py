"""Gang admission: whole gangs or nothing, with Kueue (spec.queue) and without it.

The pure decisions (placing gangs on free devices, first come first served per device
type, reading a Kueue Workload) are checked directly; the controller's use of them
against kmock's in-memory API, as tests/unit/test_operator_trainingjob.py does.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import pytest
from test_operator_trainingjob import NS, TJ, World, _condition, _trainingjob
from test_operator_trainingjob import world as world  # the fixture

from trainwright.api.v1alpha1 import InvalidResourceError, TrainingJob
from trainwright.operator.admission import (
    Gang,
    GangGate,
    Verdict,
    decide,
    free_devices,
    kueue_verdict,
    place,
    with_queue_position,
)
from trainwright.resources import trainer_job
from trainwright.resources.queueing import (
    JOB_UID_LABEL,
    PRIORITY_CLASS_LABEL,
    QUEUE_NAME_LABEL,
)

H100 = "NVIDIA-H100-80GB-HBM3"
KUEUE = "kueue.x-k8s.io/v1beta2"
ONE_H100 = {"gpuType": "H100-SXM", "gpus": 8}


def _gang(name: str, pods: int, *, created: str, gpu: str = "H100-SXM", per_pod: int = 8) -> Gang:
    return Gang(NS, name, f"{name}-a0", gpu, pods, per_pod, created)


def _node(name: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": H100}},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}},
    }


def _pod(name: str, gpus: int, *, node: str | None, job: str = "other") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeSelector": {"nvidia.com/gpu.product": H100},
        "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"batch.kubernetes.io/job-name": job},
        },
        "spec": spec,
        "status": {"phase": "Running" if node else "Pending"},
    }


HANDLER_CONTEXT: contextvars.ContextVar[str] = contextvars.ContextVar("handler_context")


class _NoFreeDevices:
    def nodes_and_pods(self, *, max_age_seconds: float) -> tuple[list[Any], list[Any]]:
        return [_node("n1", gpus=8)], [_pod("busy", 8, node="n1")]


def test_the_background_pass_reconciles_in_the_context_of_the_handler_that_kicked_it() -> None:
    """The reconcile a pass calls posts Events through kopf, whose poster lives in context
    variables of the handler: a bare thread raised LookupError (settings_var) there."""
    seen: list[str] = []
    called = threading.Event()

    def changed(namespace: str, name: str) -> None:
        seen.append(HANDLER_CONTEXT.get("missing"))
        called.set()

    gate = GangGate(_NoFreeDevices(), changed)  # type: ignore[arg-type]
    HANDLER_CONTEXT.set("kopf handler")
    try:
        assert gate.wait(_gang("waits", 1, created="2026-01-01T00:00:00Z")) is None
        assert called.wait(30)
    finally:
        gate.stop()
    assert seen == ["kopf handler"]
    verdict = gate.wait(_gang("waits", 1, created="2026-01-01T00:00:00Z"))
    assert verdict is not None and not verdict.admitted


# Placing gangs -------------------------------------------------------------------------------


def test_a_gang_fits_only_when_every_pod_has_a_node() -> None:
    assert place([8, 8], 2, 8) == [0, 0]
    assert place([8, 4, 4], 2, 8) is None  # 16 GPUs free, but only one node takes 8
    assert place([4, 8, 2], 2, 2) == [2, 8, 0]  # best fit: the fullest nodes first


def test_bound_and_pending_pods_both_hold_devices() -> None:
    nodes = [_node("h0"), _node("h1"), _node("h2")]
    pods = [_pod("a", 8, node="h0"), _pod("b", 8, node=None)]
    assert free_devices(nodes, pods) == {"H100-SXM": [0, 0, 8]}


def test_a_released_gang_whose_pods_are_not_seen_yet_holds_its_devices() -> None:
    nodes = [_node("h0"), _node("h1")]
    assert free_devices(nodes, [], reserved=[_gang("x", 1, created="t0")]) == {"H100-SXM": [0, 8]}


def test_a_16_gpu_gang_waits_with_8_free_and_later_gangs_of_its_type_wait_behind_it() -> None:
    free = {"H100-SXM": [8, 0], "L4": [4]}
    verdicts = decide(
        [
            _gang("small-later", 1, created="2026-03-01T12:00:05Z"),
            _gang("wide", 2, created="2026-03-01T12:00:00Z"),
            _gang("l4", 1, created="2026-03-01T12:00:09Z", gpu="L4", per_pod=4),
        ],
        free,
    )
    wide = verdicts[(NS, "wide")]
    assert (wide.admitted, wide.reason) == (False, "WaitingForCapacity")
    assert wide.message == (
        "Waiting for free H100-SXM: the gang needs 2 pod(s) x 8 H100-SXM (16 devices) at "
        "once; 8 are free now, room for 1 such pod(s). First in the H100-SXM queue."
    )
    later = verdicts[(NS, "small-later")]
    assert not later.admitted  # it would fit, but a wider gang came first (no starvation)
    assert "earlier jobs waiting for H100-SXM start first" in later.message
    assert verdicts[(NS, "l4")].admitted  # another device type is another queue


def test_two_gangs_that_each_fit_alone_are_not_both_released_onto_the_same_devices() -> None:
    verdicts = decide([_gang("a", 1, created="t1"), _gang("b", 1, created="t2")], {"H100-SXM": [8]})
    assert [verdicts[(NS, n)].admitted for n in ("a", "b")] == [True, False]


# Kueue's Workload ----------------------------------------------------------------------------


def _workload(*conditions: tuple[str, str, str, str], active: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE,
        "kind": "Workload",
        "metadata": {"name": "job-ft-a0-1a2b3", "namespace": NS},
        "spec": {"active": active, "queueName": "team-a"},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions
            ]
        },
    }


QUOTA_MESSAGE = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu "
    "in flavor h100, 8 more needed"
)


def test_a_workload_waiting_for_quota_says_which_quota_in_its_queue() -> None:
    waiting = _workload(("QuotaReserved", "False", "Pending", QUOTA_MESSAGE))
    verdict = kueue_verdict(waiting, queue="team-a", job_name="ft-a0")
    assert verdict == Verdict(
        False, "WaitingForAdmission", f"Waiting in Kueue LocalQueue team-a: {QUOTA_MESSAGE}."
    )
    assert not kueue_verdict(None, queue="team-a", job_name="ft-a0").admitted


def test_a_preempted_workload_is_queued_as_preempted_and_an_admitted_one_may_start() -> None:
    preempted = _workload(
        ("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: u1)"),
        ("QuotaReserved", "False", "Pending", QUOTA_MESSAGE),
    )
    verdict = kueue_verdict(preempted, queue="team-a", job_name="ft-a0")
    assert (verdict.admitted, verdict.reason) == (False, "Preempted")
    assert "resumes from its last checkpoint" in verdict.message
    assert QUOTA_MESSAGE in verdict.message
    stopped = _workload(("Evicted", "True", "PodsReadyTimeout", "Exceeded the PodsReady timeout"))
    assert kueue_verdict(stopped, queue="team-a", job_name="ft-a0").reason == "Evicted"
    admitted = _workload(
        ("QuotaReserved", "True", "QuotaReserved", ""), ("Admitted", "True", "", "")
    )
    assert kueue_verdict(admitted, queue="team-a", job_name="ft-a0").admitted


# The API and the Job -------------------------------------------------------------------------


def test_a_queued_job_carries_kueues_labels_and_is_created_suspended() -> None:
    body = _trainingjob("ft", queue="team-a", priorityClass="high")
    job = TrainingJob.from_body(body)
    plan_world = trainer_job(job, _plan(), attempt=0)
    labels = plan_world["metadata"]["labels"]
    assert (labels[QUEUE_NAME_LABEL], labels[PRIORITY_CLASS_LABEL]) == ("team-a", "high")
    assert plan_world["spec"]["suspend"] is True
    # The pods keep the planned product: Kueue only assigns a flavour with that label.
    selector = plan_world["spec"]["template"]["spec"]["nodeSelector"]
    assert selector["nvidia.com/gpu.product"] == H100


def test_a_priority_class_without_a_queue_is_refused_naming_both_fields() -> None:
    with pytest.raises(InvalidResourceError, match="priorityClass is only allowed with queue"):
        TrainingJob.from_body(_trainingjob("ft", priorityClass="high"))


def _plan() -> Any:
    from trainwright.api.v1alpha1 import PlanStatus

    return PlanStatus(
        gpu_type="H100-SXM",
        gpu_product=H100,
        num_gpus=16,
        nodes=2,
        gpus_per_node=8,
        strategy="fsdp",
        micro_batch_size=4,
        gradient_accumulation_steps=1,
        memory_per_gpu_bytes=60 * 2**30,
        tokens_per_second=1000.0,
    )


# The controller ------------------------------------------------------------------------------


def _kueue(world: World) -> None:
    world.server.resources[f"{KUEUE}/localqueues"] = {"kind": "LocalQueue", "namespaced": True}
    world.server.resources[f"{KUEUE}/workloads"] = {"kind": "Workload", "namespaced": True}


@pytest.mark.asyncio
async def test_without_a_queue_a_gang_that_does_not_fit_stays_queued_then_starts(
    world: World,
) -> None:
    # Another job holds one of the two H100 nodes: 8 of the 16 GPUs the gang needs are free.
    world.server.objects["v1/pods", NS, "other-0"] = _pod("other-0", 8, node="h100-0")
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    status = await world.reconcile("ft")
    job = await world.need("Job", "ft-a0")
    assert job["spec"]["suspend"] is True  # no pod of it exists, none is bound
    assert status["phase"] == "Queued"
    admitted = _condition(status, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "WaitingForCapacity")
    assert "8 are free now" in admitted["message"]
    assert "needs 2 pod(s) x 8 H100-SXM (16 devices)" in status["message"]

    del world.server.objects["v1/pods", NS, "other-0"]  # the other job finished
    status = await world.reconcile("ft")
    assert (await world.need("Job", "ft-a0"))["spec"]["suspend"] is False
    assert status["phase"] == "Planned"
    assert _condition(status, "Admitted")["status"] == "True"


@pytest.mark.asyncio
async def test_a_suspended_job_stays_suspended_and_queues_again_when_resumed(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", suspend=True)
    status = await world.reconcile("ft")
    assert status["phase"] == "Suspended"
    assert (await world.need("Job", "ft-a0"))["spec"]["suspend"] is True
    assert world.context.gang_gate is not None and world.context.gang_gate.waiting() == 0
    world.server.objects[TJ, NS, "ft"] = {
        **_trainingjob("ft", suspend=False),
        "status": status,
    }
    status = await world.reconcile("ft", admit=False)
    assert status["phase"] == "Queued"
    status = await world.reconcile("ft")
    assert status["phase"] == "Planned"


@pytest.mark.asyncio
async def test_a_missing_local_queue_fails_planning_with_its_name(world: World) -> None:
    _kueue(world)
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", queue="team-z")
    status = await world.reconcile("ft")
    assert status["phase"] == "Failed"
    failed = _condition(status, "Failed")
    assert failed["reason"] == "QueueNotFound"
    assert failed["message"].startswith(
        f"spec.queue names LocalQueue team-z, which does not exist in namespace {NS}"
    )
    assert await world.child("Job", "ft-a0") is None


@pytest.mark.asyncio
async def test_with_a_queue_the_operator_never_unsuspends_and_follows_the_workload(
    world: World,
) -> None:
    _kueue(world)
    world.server.objects[f"{KUEUE}/localqueues", NS, "team-a"] = {
        "apiVersion": KUEUE,
        "kind": "LocalQueue",
        "metadata": {"name": "team-a", "namespace": NS},
    }
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", queue="team-a")
    status = await world.reconcile("ft")
    job = await world.need("Job", "ft-a0")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][QUEUE_NAME_LABEL] == "team-a"
    assert status["phase"] == "Queued"
    assert _condition(status, "Admitted")["reason"] == "WaitingForAdmission"

    uid = job["metadata"].get("uid") or "job-uid"
    job["metadata"]["uid"] = uid
    world.server.objects["batch/v1/jobs", NS, "ft-a0"] = job
    workload = _workload(("QuotaReserved", "False", "Pending", QUOTA_MESSAGE))
    workload["metadata"]["labels"] = {JOB_UID_LABEL: uid}
    world.server.objects[f"{KUEUE}/workloads", NS, "job-ft-a0-1a2b3"] = workload
    status = await world.reconcile("ft")
    assert status["message"] == f"Waiting in Kueue LocalQueue team-a: {QUOTA_MESSAGE}."
    assert (await world.need("Job", "ft-a0"))["spec"]["suspend"] is True  # Kueue's call

    # Kueue admits and unsuspends; pods come up; then Kueue preempts it for a higher priority.
    await world.set_job_status("ft-a0", {"active": 2, "ready": 2})
    job = await world.need("Job", "ft-a0")
    world.server.objects["batch/v1/jobs", NS, "ft-a0"] = {
        **job,
        "spec": {**job["spec"], "suspend": False},
    }
    running = await world.reconcile("ft")
    assert running["phase"] == "Running"
    world.server.objects[f"{KUEUE}/workloads", NS, "job-ft-a0-1a2b3"] = {
        **workload,
        "status": _workload(
            ("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: u1)"),
            ("QuotaReserved", "False", "Pending", QUOTA_MESSAGE),
        )["status"],
    }
    job = await world.need("Job", "ft-a0")
    world.server.objects["batch/v1/jobs", NS, "ft-a0"] = {
        **job,
        "spec": {**job["spec"], "suspend": True},
        "status": {"active": 0, "ready": 0},
    }
    queued = await world.reconcile("ft")
    assert queued["phase"] == "Queued"
    assert _condition(queued, "Admitted")["reason"] == "Preempted"
    assert _condition(queued, "Running")["status"] == "False"
    assert (queued["restarts"], queued["attempt"]) == (0, 0)  # no restart used, same Job
    assert queued["startTime"] == running["startTime"]
    assert ("Warning", "Preempted") in [(t, r) for t, r, _ in world.events]


@pytest.mark.asyncio
async def test_suspending_a_queued_job_deactivates_its_workload(world: World) -> None:
    _kueue(world)
    world.server.objects[f"{KUEUE}/localqueues", NS, "team-a"] = {
        "apiVersion": KUEUE,
        "kind": "LocalQueue",
        "metadata": {"name": "team-a", "namespace": NS},
    }
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", queue="team-a")
    status = await world.reconcile("ft")
    job = await world.need("Job", "ft-a0")
    job["metadata"]["uid"] = "job-uid"
    world.server.objects["batch/v1/jobs", NS, "ft-a0"] = job
    workload = _workload(("Admitted", "True", "Admitted", ""))
    workload["metadata"]["labels"] = {JOB_UID_LABEL: "job-uid"}
    world.server.objects[f"{KUEUE}/workloads", NS, "job-ft-a0-1a2b3"] = workload
    world.server.objects[TJ, NS, "ft"] = {
        **_trainingjob("ft", queue="team-a", suspend=True),
        "status": status,
    }
    status = await world.reconcile("ft")
    assert status["phase"] == "Suspended"
    stored = await world.need("Workload", "job-ft-a0-1a2b3")
    assert stored["spec"]["active"] is False  # Kueue stops it; suspending the Job would be undone
    # Kueue evicts the deactivated Workload and suspends the Job.
    world.server.objects[f"{KUEUE}/workloads", NS, "job-ft-a0-1a2b3"] = {
        **stored,
        "status": _workload(("Evicted", "True", "Deactivated", "The workload is deactivated"))[
            "status"
        ],
    }
    world.server.objects[TJ, NS, "ft"] = {**_trainingjob("ft", queue="team-a"), "status": status}
    status = await world.reconcile("ft")
    stored = await world.need("Workload", "job-ft-a0-1a2b3")
    assert stored["spec"]["active"] is True
    assert status["phase"] == "Queued"
    assert _condition(status, "Admitted")["reason"] == "WaitingForAdmission"  # not "Evicted"


@pytest.mark.asyncio
async def test_a_pass_survives_a_job_deleted_while_its_gang_waited(world: World) -> None:
    for name in ("gone", "next"):
        world.server.objects[TJ, NS, name] = _trainingjob(name, resources=ONE_H100)
        await world.reconcile(name, admit=False)
    del world.server.objects["batch/v1/jobs", NS, "gone-a0"]
    await world.admit()  # releasing "gone" fails; "next" is still released
    assert (await world.need("Job", "next-a0"))["spec"]["suspend"] is False
    # The reconcile puts the missing Job back, suspended, and it waits again.
    assert (await world.need("Job", "gone-a0"))["spec"]["suspend"] is True
    gate = world.context.gang_gate
    assert gate is not None and gate.waiting() == 1


@pytest.mark.asyncio
async def test_a_node_event_looks_again_at_the_gangs_that_wait(world: World) -> None:
    import kopf

    from trainwright.operator.trainingjob import on_node_event

    gate = world.context.gang_gate
    assert gate is not None
    kicks: list[str] = []
    gate.kick = lambda: kicks.append("kick")  # type: ignore[method-assign]
    node = {
        "metadata": {"name": "h100-2"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    memo = kopf.Memo(context=world.context)
    await world.call(lambda: on_node_event(body=kopf.Body(node), type="ADDED", memo=memo))
    assert kicks == []  # nobody waits: nothing to do
    gate.wait(_gang("ft", 2, created="t0"))
    kicks.clear()
    await world.call(lambda: on_node_event(body=kopf.Body(node), type="ADDED", memo=memo))
    assert kicks == ["kick"]


@pytest.mark.asyncio
async def test_a_gang_that_fits_starts_without_a_queued_status_write(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    status = await world.reconcile("ft", admit=False)
    assert status["phase"] == "Planned"  # until the gate's pass says otherwise
    writes = world.kube.status_writes
    await world.admit()
    assert (await world.need("Job", "ft-a0"))["spec"]["suspend"] is False
    assert world.kube.status_writes == writes  # released: still Planned, waiting for pods


def _pending(*names: str) -> list[dict[str, Any]]:
    """Kueue's visibility API answer: pending Workloads in order, positions 0-based."""
    return [
        {"metadata": {"name": n}, "positionInLocalQueue": i, "positionInClusterQueue": i + 3}
        for i, n in enumerate(names)
    ]


def test_a_waiting_workload_says_its_place_in_both_queues_counting_from_one() -> None:
    waiting = Verdict(False, "WaitingForAdmission", "Waiting in Kueue LocalQueue team-a: quota.")
    placed = with_queue_position(waiting, _pending("job-a-1", "job-b-2"), "job-b-2")
    assert placed.message == (
        "Waiting in Kueue LocalQueue team-a: quota. "
        "Position 2 of 2 in its LocalQueue, 5 in the ClusterQueue."
    )
    assert (placed.admitted, placed.reason) == (False, "WaitingForAdmission")


def test_no_position_is_claimed_without_the_visibility_api_or_once_admitted() -> None:
    waiting = Verdict(False, "WaitingForAdmission", "Waiting.")
    assert with_queue_position(waiting, None, "job-a-1") == waiting  # API not served
    assert with_queue_position(waiting, _pending("other"), "job-a-1") == waiting  # not listed
    admitted = Verdict(True, "Admitted", "Kueue admitted the gang.")
    assert with_queue_position(admitted, _pending("job-a-1"), "job-a-1") == admitted
