"""The TrainingJob reconcile against kmock's in-memory Kubernetes API.

No kopf loop and no cluster: each test calls :func:`reconcile` the way a
handler does, then changes the world as the job controller or kwok would
(a Job's status, a failed pod) and reconciles again.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import time
import types
from collections.abc import Callable
from typing import Any

import kmock
import kopf
import pytest
from kubernetes import client

from trainwright.operator.admission import GangGate
from trainwright.operator.context import OperatorContext
from trainwright.operator.kube import Kube
from trainwright.operator.metrics import OperatorMetrics
from trainwright.operator.trainingjob import (
    _make_children,
    on_trainer_job_event,
    on_trainingjob_event,
    owner_name,
    reconcile,
    refresh_progress,
)
from trainwright_trainer.metrics import EvalRecord, TrainerMetrics

NS = "team-a"
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
RESOURCES = {
    "v1/nodes": ("Node", False),
    "v1/pods": ("Pod", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/services": ("Service", True),
    "batch/v1/jobs": ("Job", True),
    "trainwright.io/v1alpha1/trainingjobs": ("TrainingJob", True),
}
TJ = "trainwright.io/v1alpha1/trainingjobs"
pytestmark = pytest.mark.asyncio


class CountingKube(Kube):
    """Counts status writes, so a test can assert that a no-op reconcile writes nothing."""

    status_writes = 0
    reads = 0
    child_reads = 0

    def patch_status(self, plural: str, namespace: str, name: str, status: Any) -> Any:
        self.status_writes += 1
        return super().patch_status(plural, namespace, name, status)

    def get_custom(self, plural: str, namespace: str, name: str) -> Any:
        self.reads += 1
        return super().get_custom(plural, namespace, name)

    def get_child(self, kind: str, namespace: str, name: str) -> Any:
        self.child_reads += 1
        return super().get_child(kind, namespace, name)


class World:
    """The emulated API server plus the operator's context pointed at it."""

    def __init__(self, server: kmock.KubernetesEmulator) -> None:
        self.server = server
        configuration = client.Configuration()
        configuration.host = str(server.url).rstrip("/")
        self.kube = CountingKube(configuration)
        self.events: list[tuple[str, str, str]] = []
        self.context = OperatorContext(
            kube=self.kube,
            metrics=OperatorMetrics(),
            now=lambda: NOW,
            post_event=lambda _body, type_, reason, message: self.events.append(
                (type_, reason, message)
            ),
        )
        # The gang gate's passes run when a test says (admit), not on a thread.
        self.context.gang_gate = GangGate(
            self.kube,
            lambda namespace, name: reconcile(self.context, namespace, name, full=False),
            background=False,
        )

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def reconcile(
        self, name: str, *, full: bool = True, admit: bool = True
    ) -> dict[str, Any]:
        """Reconcile, then (``admit``) run a gang-gate pass as the operator's thread would."""
        await asyncio.to_thread(reconcile, self.context, NS, name, full=full)
        if admit:
            await self.admit()
        return await self.status(name)

    async def admit(self) -> None:
        """A gate pass; each Job it releases is reconciled, as its Job's event would."""
        gate = self.context.gang_gate
        assert gate is not None
        if gate.waiting():
            verdicts = await asyncio.to_thread(gate.run_pass)
            for (namespace, name), verdict in verdicts.items():
                if verdict.admitted:
                    await asyncio.to_thread(reconcile, self.context, namespace, name, full=False)

    async def status(self, name: str) -> dict[str, Any]:
        body = await self.call(self.kube.get_custom, "trainingjobs", NS, name)
        return dict(body.get("status") or {})

    async def child(self, kind: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self.call(self.kube.get_child, kind, NS, name)
        return found

    async def need(self, kind: str, name: str) -> dict[str, Any]:
        """A child that must exist; a test failure naming it when it does not."""
        found = await self.child(kind, name)
        if found is None:
            raise AssertionError(f"{kind} {name} does not exist")
        return found

    async def set_job_status(self, name: str, status: dict[str, Any]) -> None:
        job = await self.need("Job", name)
        self.server.objects["batch/v1/jobs", NS, name] = {**job, "status": status}


def _node(name: str, product: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}},
    }


def _trainingjob(name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://datasets/alpaca.jsonl", "tokens": 2_000_000},
        "resources": {"gpuType": "H100-SXM", "gpus": 16},
        "maxRestarts": 1,
    }
    body.update(spec)
    return {
        "apiVersion": "trainwright.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": body,
    }


def _failed_pod(job: str, exit_code: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job}-0-x", "namespace": NS, "labels": {"job-name": job}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": exit_code}}}
            ],
        },
    }


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


@pytest.fixture
def world(kmock: kmock.KubernetesEmulator) -> World:
    for key, (kind, namespaced) in RESOURCES.items():
        kmock.resources[key] = {"kind": kind, "namespaced": namespaced}
    for i in range(2):
        kmock.objects["v1/nodes", None, f"h100-{i}"] = _node(
            f"h100-{i}", "NVIDIA-H100-80GB-HBM3", 8
        )
    for i in range(2):
        kmock.objects["v1/nodes", None, f"l4-{i}"] = _node(f"l4-{i}", "NVIDIA-L4", 4)
    return World(kmock)


async def test_a_new_job_is_planned_and_gets_three_adopted_children(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    status = await world.reconcile("ft")
    assert status["phase"] == "Planned"
    plan = status["plan"]
    assert (plan["gpuType"], plan["nodes"], plan["gpusPerNode"]) == ("H100-SXM", 2, 8)
    assert plan["gpuProduct"] == "NVIDIA-H100-80GB-HBM3"
    assert status["observedGeneration"] == 1
    assert status["children"] == {
        "configMap": "ft-trainer",
        "service": "ft-workers",
        "job": "ft-a0",
    }
    assert _condition(status, "Planned")["status"] == "True"
    job = await world.need("Job", "ft-a0")
    assert job["spec"]["completions"] == 2
    assert job["spec"]["completionMode"] == "Indexed"
    for kind, name in (("ConfigMap", "ft-trainer"), ("Service", "ft-workers"), ("Job", "ft-a0")):
        child = await world.need(kind, name)
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("TrainingJob", "ft", True)
    assert ("Normal", "Planned") in [(t, r) for t, r, _ in world.events]
    assert owner_name(job) == "ft"


async def _eventually(found: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := await found():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


async def test_a_new_jobs_children_wait_while_another_plan_is_made_then_need_no_reads(
    world: World,
) -> None:
    """The creation event's pass writes the plan and stops; its children are made once no
    plan is being made, from the TrainingJob as the plan left it (plan_first.py)."""
    body = _trainingjob("ft")
    world.server.objects[TJ, NS, "ft"] = body
    memo = types.SimpleNamespace(context=world.context)

    async def _stored(resource: str, name: str) -> Any:  # read without the counted client
        try:
            return world.server.objects[resource, NS, name]
        except KeyError:
            return None

    with world.context.plan_first.planning():  # another job's plan is being made
        await world.call(
            functools.partial(on_trainingjob_event, body=kopf.Body(body), type="ADDED", memo=memo)
        )
        status = await world.status("ft")
        assert status["phase"] == "Planned"
        assert status["children"]["job"] == "ft-a0"
        await asyncio.sleep(0.3)
        assert await world.child("Job", "ft-a0") is None
        assert world.context.plan_first.waiting() == 1
        assert world.events == []  # the Planned Event waits with the children
        world.kube.reads = world.kube.child_reads = 0
    job = await _eventually(lambda: _stored("batch/v1/jobs", "ft-a0"))
    assert job["spec"]["completions"] == 2
    assert await _eventually(lambda: _stored("v1/services", "ft-workers"))
    assert await _eventually(lambda: _stored("v1/configmaps", "ft-trainer"))
    # The plan was the only status write; the children were created without reading
    # anything first (the plan's pass made nothing).
    assert world.kube.status_writes == 1
    assert (world.kube.reads, world.kube.child_reads) == (0, 0)
    assert [(type_, reason) for type_, reason, _ in world.events] == [("Normal", "Planned")]
    world.context.plan_first.stop()


async def test_a_childrens_pass_after_another_pass_reads_the_trainingjob_afresh(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    planned = await world.call(
        functools.partial(
            reconcile, world.context, NS, "ft", body=_trainingjob("ft"), plan_only=True
        )
    )
    assert planned is not None and planned.body["status"]["phase"] == "Planned"
    assert await world.child("Job", "ft-a0") is None
    passes = world.context.tracker.passes((NS, "ft"))
    # The user deleted it meanwhile: the deletion event's pass forgot it.
    del world.server.objects[TJ, NS, "ft"]
    world.context.tracker.forget((NS, "ft"))
    await world.call(_make_children, world.context, (NS, "ft"), planned, passes)
    assert world.kube.reads == 1  # read afresh: gone, so nothing is made
    assert await world.child("Job", "ft-a0") is None
    assert await world.child("ConfigMap", "ft-trainer") is None


async def test_a_plan_only_pass_that_cannot_plan_fails_and_says_so_at_once(world: World) -> None:
    body = _trainingjob("big", resources={"gpuType": "H100-SXM", "gpus": 64})
    world.server.objects[TJ, NS, "big"] = body
    planned = await world.call(
        functools.partial(reconcile, world.context, NS, "big", body=body, plan_only=True)
    )
    assert planned is None  # nothing left for a children's pass
    status = await world.status("big")
    assert status["phase"] == "Failed"
    assert [type_ for type_, _, _ in world.events] == ["Warning"]


async def test_a_single_node_job_gets_no_service_its_ranks_meet_on_localhost(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "one"] = _trainingjob(
        "one", resources={"gpuType": "H100-SXM", "gpus": 4}
    )
    status = await world.reconcile("one")
    assert status["plan"]["nodes"] == 1
    assert status["children"] == {"configMap": "one-trainer", "job": "one-a0"}
    assert await world.child("Service", "one-workers") is None
    pod = (await world.need("Job", "one-a0"))["spec"]["template"]["spec"]
    assert "subdomain" not in pod
    trainer = pod["containers"][0]
    assert "--master-addr=127.0.0.1" in " ".join(trainer["command"] + trainer.get("args", []))
    assert {"name": "MASTER_ADDR", "value": "127.0.0.1"} in trainer["env"]


async def test_reconciling_an_unchanged_job_writes_nothing(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    writes, events = world.kube.status_writes, len(world.events)
    await world.reconcile("ft")
    await world.reconcile("ft", full=False)
    assert world.kube.status_writes == writes
    assert len(world.events) == events


async def test_a_restart_after_the_plan_was_stored_reuses_it_and_creates_only_what_is_missing(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    first = await world.reconcile("ft")
    # The operator died after writing the plan and the ConfigMap, before the rest.
    del world.server.objects["batch/v1/jobs", NS, "ft-a0"]
    del world.server.objects["v1/services", NS, "ft-workers"]
    # Another inventory now: a fresh plan would differ, the stored one must win.
    for i in range(2):
        del world.server.objects["v1/nodes", None, f"h100-{i}"]
    second = await world.reconcile("ft")
    assert second["plan"] == first["plan"]
    # Recreated from the stored plan: two nodes, the old inventory's H100s.
    job = await world.need("Job", "ft-a0")
    assert job["spec"]["completions"] == first["plan"]["nodes"] == 2
    service = await world.need("Service", "ft-workers")
    assert service["spec"]["clusterIP"] == "None"


async def test_ready_pods_make_it_running_and_completion_makes_it_succeed(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    await world.set_job_status("ft-a0", {"active": 2, "ready": 2})
    status = await world.reconcile("ft", full=False)
    assert status["phase"] == "Running"
    assert status["startTime"] == "2026-03-01T12:00:00Z"
    assert _condition(status, "Running")["message"] == "Training: 2 of 2 trainer pod(s) ready."
    await world.set_job_status(
        "ft-a0", {"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]}
    )
    world.context.now = lambda: NOW + datetime.timedelta(minutes=9)  # before any progress tick
    status = await world.reconcile("ft", full=False)
    assert status["phase"] == "Succeeded"
    assert _condition(status, "Succeeded")["reason"] == "Completed"
    assert status["completionTime"] == "2026-03-01T12:09:00Z"
    # The run's usage is accounted when it ends, not only on the progress timer's ticks:
    # 16 H100 for the 9 minutes it ran.
    assert status["usage"]["gpuHours"] == pytest.approx(16 * 9 / 60)
    assert status["usage"]["costUsd"] == pytest.approx(
        status["plan"]["usdPerHour"] * 9 / 60, rel=1e-9
    )
    assert (
        world.context.metrics.registry.get_sample_value(
            "trainwright_trainingjobs", {"phase": "Succeeded"}
        )
        == 1
    )


async def test_a_retryable_exit_code_starts_the_next_attempt_then_fails_at_the_limit(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    failed = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}
    await world.set_job_status("ft-a0", failed)
    world.server.objects["v1/pods", NS, "p0"] = _failed_pod("ft-a0", 75)
    status = await world.reconcile("ft", full=False)
    assert (status["restarts"], status["attempt"], status["lastExitCode"]) == (1, 1, 75)
    assert status["children"]["job"] == "ft-a1"
    assert await world.child("Job", "ft-a0") is None
    job = await world.need("Job", "ft-a1")
    assert job["metadata"]["labels"]["trainwright.io/attempt"] == "1"
    assert _condition(status, "Running")["reason"] == "Restarting"

    await world.set_job_status("ft-a1", failed)
    world.server.objects["v1/pods", NS, "p0"] = _failed_pod("ft-a1", 137)
    status = await world.reconcile("ft", full=False)
    assert status["phase"] == "Failed"
    assert _condition(status, "Failed")["reason"] == "BackoffLimitExceeded"
    assert status["lastExitCode"] == 137
    assert world.events[-1][:2] == ("Warning", "BackoffLimitExceeded")


async def test_raising_max_restarts_resumes_a_run_that_used_them_all(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", maxRestarts=0)
    await world.reconcile("ft")
    failed = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}
    await world.set_job_status("ft-a0", failed)
    world.server.objects["v1/pods", NS, "p0"] = _failed_pod("ft-a0", 137)
    done = await world.reconcile("ft", full=False)
    assert _condition(done, "Failed")["reason"] == "BackoffLimitExceeded"
    assert await world.reconcile("ft") == done  # the same spec stays failed

    world.server.objects[TJ, NS, "ft"] = _edited("ft", 2, done, maxRestarts=2)
    status = await world.reconcile("ft")
    assert status["phase"] == "Planned"
    assert (status["restarts"], status["attempt"]) == (1, 1)
    assert _condition(status, "Failed")["status"] == "False"
    assert _condition(status, "Failed")["reason"] == "MaxRestartsRaised"
    assert "raised to 2" in status["message"] and "completionTime" not in status
    assert status["plan"] == done["plan"]  # maxRestarts is not a re-plan
    assert await world.child("Job", "ft-a0") is None
    job = await world.need("Job", "ft-a1")
    assert job["metadata"]["labels"]["trainwright.io/attempt"] == "1"

    await world.set_job_status("ft-a1", {"ready": 2, "active": 2})
    running = await world.reconcile("ft", full=False)
    assert running["phase"] == "Running"
    assert _condition(running, "Failed")["status"] == "False"


async def test_raising_max_restarts_after_the_failed_job_was_removed_runs_it_again(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", maxRestarts=0)
    await world.reconcile("ft")
    failed = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}
    await world.set_job_status("ft-a0", failed)
    done = await world.reconcile("ft", full=False)
    del world.server.objects["batch/v1/jobs", NS, "ft-a0"]  # e.g. by ttlSecondsAfterFinished
    world.server.objects[TJ, NS, "ft"] = _edited("ft", 2, done, maxRestarts=1)
    status = await world.reconcile("ft", admit=False)
    assert status["phase"] == "Queued"  # its Job created again, suspended until the gang fits
    assert _condition(status, "Failed")["reason"] == "MaxRestartsRaised"
    assert _condition(status, "Failed")["status"] == "False"
    assert status["message"].startswith("spec.maxRestarts raised to 1: ")
    assert "completionTime" not in status
    status = await world.reconcile("ft")
    assert status["phase"] == "Planned"
    assert _condition(status, "Failed")["reason"] == "MaxRestartsRaised"
    assert (await world.need("Job", "ft-a0")).get("status") in (None, {})


async def test_a_needs_replan_exit_code_fails_with_advice(world: World) -> None:
    # DDP pinned: on the same 16 GPUs a re-plan could only shrink the micro-batch.
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", strategy="ddp")
    await world.reconcile("ft")
    await world.set_job_status(
        "ft-a0", {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}
    )
    world.server.objects["v1/pods", NS, "p0"] = _failed_pod("ft-a0", 76)
    status = await world.reconcile("ft", full=False)
    failed = _condition(status, "Failed")
    assert (status["phase"], failed["reason"]) == ("Failed", "NeedsReplan")
    assert "fsdp or zero3" in failed["message"]
    assert status.get("restarts", 0) == 0
    # a restart is left (maxRestarts 1) but nothing was edited: it stays failed
    assert await world.reconcile("ft") == status


async def test_suspend_sets_the_job_suspended_and_resume_clears_it(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    world.server.objects[TJ, NS, "ft"] = {
        **_trainingjob("ft", suspend=True),
        "metadata": {"name": "ft", "namespace": NS, "uid": "uid-ft", "generation": 2},
        "status": await world.status("ft"),
    }
    status = await world.reconcile("ft")
    job = await world.need("Job", "ft-a0")
    assert job["spec"]["suspend"] is True
    assert status["phase"] == "Suspended"
    assert _condition(status, "Suspended")["observedGeneration"] == 2
    world.server.objects[TJ, NS, "ft"] = {
        **_trainingjob("ft", suspend=False),
        "metadata": {"name": "ft", "namespace": NS, "uid": "uid-ft", "generation": 3},
        "status": status,
    }
    status = await world.reconcile("ft")
    job = await world.need("Job", "ft-a0")
    assert job["spec"]["suspend"] is False
    assert status["phase"] == "Planned"
    assert _condition(status, "Suspended")["status"] == "False"


async def test_a_model_too_big_for_the_pinned_gpu_fails_with_the_memory_it_needs(
    world: World,
) -> None:
    body = _trainingjob(
        "big",
        model={"name": "llama-3.1-70b"},
        method="full",
        resources={"gpuType": "L4", "gpus": 1},
    )
    world.server.objects[TJ, NS, "big"] = body
    status = await world.reconcile("big")
    assert status["phase"] == "Failed"
    planned = _condition(status, "Planned")
    assert planned["reason"] == "DoesNotFit"
    assert planned["message"].startswith("1 x L4 does not fit: each GPU would need ")
    assert await world.child("Job", "big-a0") is None


async def test_more_gpus_than_the_cluster_has_fails_with_insufficient_capacity(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "wide"] = _trainingjob(
        "wide", resources={"gpuType": "H100-SXM", "gpus": 32}
    )
    status = await world.reconcile("wide")
    planned = _condition(status, "Planned")
    assert (status["phase"], planned["reason"]) == ("Failed", "InsufficientCapacity")
    assert "the H100-SXM nodes hold only 2 pod(s) of 8 GPUs" in planned["message"]
    assert await world.child("ConfigMap", "wide-trainer") is None


async def test_auto_picks_a_gpu_type_the_cluster_has_and_fits_its_node_width(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "auto"] = _trainingjob(
        "auto", resources={"gpuType": "auto", "maxGpus": 8}
    )
    status = await world.reconcile("auto")
    plan = status["plan"]
    assert plan["gpuType"] in {"H100-SXM", "L4"}
    limit = {"H100-SXM": 8, "L4": 4}[plan["gpuType"]]
    assert plan["gpusPerNode"] <= limit
    assert plan["nodes"] * plan["gpusPerNode"] == plan["numGpus"]


async def test_an_invalid_spec_fails_with_one_sentence_naming_the_field(world: World) -> None:
    world.server.objects[TJ, NS, "bad"] = _trainingjob("bad", method="sgd-magic")
    status = await world.reconcile("bad")
    planned = _condition(status, "Planned")
    assert (status["phase"], planned["reason"]) == ("Failed", "InvalidSpec")
    assert planned["message"].startswith("TrainingJob spec.method: must be one of")


async def test_a_deleted_or_deleting_job_is_left_alone(world: World) -> None:
    await world.call(reconcile, world.context, NS, "missing")
    body = _trainingjob("going")
    body["metadata"]["deletionTimestamp"] = "2026-03-01T12:00:00Z"
    world.server.objects[TJ, NS, "going"] = body
    status = await world.reconcile("going")
    assert status == {}
    assert await world.child("ConfigMap", "going-trainer") is None


async def test_fixing_the_spec_after_a_failed_plan_plans_again(world: World) -> None:
    world.server.objects[TJ, NS, "wide"] = _trainingjob(
        "wide", resources={"gpuType": "H100-SXM", "gpus": 32}
    )
    failed = await world.reconcile("wide")
    assert failed["phase"] == "Failed"
    assert await world.reconcile("wide") == failed  # the same generation stays failed
    world.server.objects[TJ, NS, "wide"] = {
        **_trainingjob("wide", resources={"gpuType": "H100-SXM", "gpus": 16}),
        "metadata": {"name": "wide", "namespace": NS, "uid": "uid-wide", "generation": 2},
        "status": failed,
    }
    status = await world.reconcile("wide")
    assert status["phase"] == "Planned"
    assert status["plan"]["numGpus"] == 16
    assert _condition(status, "Failed")["status"] == "False"
    assert _condition(status, "Planned")["observedGeneration"] == 2
    job = await world.need("Job", "wide-a0")
    assert job["spec"]["completions"] == status["plan"]["nodes"] == 2


async def test_job_events_that_change_nothing_reported_are_skipped(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    job = await world.need("Job", "ft-a0")
    memo = kopf.Memo(context=world.context)

    async def deliver(event_type: str, body: dict[str, Any]) -> None:
        await world.call(
            lambda: on_trainer_job_event(body=kopf.Body(body), type=event_type, memo=memo)
        )

    reads = world.kube.reads
    await deliver("ADDED", job)
    await deliver("MODIFIED", {**job, "status": {"active": 2}})  # same state, no pod ready
    assert world.kube.reads == reads + 1
    ready = {**job, "status": {"active": 2, "ready": 2}}
    await deliver("MODIFIED", ready)
    assert world.kube.reads == reads + 2
    assert (await world.status("ft"))["phase"] == "Running"


async def test_the_creation_event_of_a_job_its_pass_created_costs_no_read(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft", admit=False)
    created = await world.need("Job", "ft-a0")
    assert created["spec"]["suspend"] is True  # the gang gate has not let it go yet
    memo = kopf.Memo(context=world.context)
    reads = world.kube.reads
    for event_type, body in (
        ("ADDED", created),  # what the pass that created it already followed
        ("MODIFIED", {**created, "spec": {**created["spec"], "suspend": False}}),
    ):
        await world.call(
            functools.partial(
                on_trainer_job_event, body=kopf.Body(body), type=event_type, memo=memo
            )
        )
    assert world.kube.reads == reads + 1  # only the release was news


def _edited(name: str, generation: int, status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """The TrainingJob as the API server holds it after a user's edit."""
    body = _trainingjob(name, **spec)
    body["metadata"]["generation"] = generation
    return {**body, "status": status}


async def test_editing_a_suspended_job_replans_it_and_replaces_its_job_and_config(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    planned = await world.reconcile("ft")
    world.server.objects[TJ, NS, "ft"] = _edited("ft", 2, planned, suspend=True)
    suspended = await world.reconcile("ft")
    assert suspended["phase"] == "Suspended"
    assert suspended["specDigest"] == planned["specDigest"]  # suspend is not an edit
    old_config = await world.need("ConfigMap", "ft-trainer")
    world.server.objects[TJ, NS, "ft"] = _edited(
        "ft",
        3,
        suspended,
        suspend=True,
        resources={"gpuType": "H100-SXM", "gpus": 8},
        dataset={"uri": "pvc://datasets/alpaca-v2.jsonl", "tokens": 2_000_000},
    )
    status = await world.reconcile("ft")
    assert status["plan"]["numGpus"] == 8 and status["plan"]["nodes"] == 1
    assert (status["attempt"], status["restarts"]) == (1, 0)
    assert status["children"]["job"] == "ft-a1"
    assert status["specDigest"] != planned["specDigest"]
    assert status["phase"] == "Suspended"
    assert "Re-planned for the edited spec" in _condition(status, "Planned")["message"]
    assert await world.child("Job", "ft-a0") is None
    job = await world.need("Job", "ft-a1")
    assert job["spec"]["suspend"] is True
    assert job["spec"]["completions"] == 1
    new_config = await world.need("ConfigMap", "ft-trainer")
    assert "alpaca-v2.jsonl" in new_config["data"]["config.yaml"]
    assert "alpaca-v2.jsonl" not in old_config["data"]["config.yaml"]


async def test_a_config_error_is_cured_by_editing_the_spec(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    await world.set_job_status(
        "ft-a0", {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}
    )
    world.server.objects["v1/pods", NS, "p0"] = _failed_pod("ft-a0", 64)
    failed = await world.reconcile("ft", full=False)
    assert (failed["phase"], _condition(failed, "Failed")["reason"]) == ("Failed", "ConfigError")
    assert await world.reconcile("ft") == failed  # the same spec stays failed
    world.server.objects[TJ, NS, "ft"] = _edited(
        "ft", 2, failed, dataset={"uri": "pvc://datasets/alpaca-fixed.jsonl", "tokens": 2_000_000}
    )
    status = await world.reconcile("ft")
    assert status["phase"] == "Planned"
    assert _condition(status, "Failed")["status"] == "False"
    assert _condition(status, "Failed")["reason"] == "Replanned"
    assert (status["attempt"], status["restarts"]) == (1, 0)
    assert "lastExitCode" not in status and "completionTime" not in status
    job = await world.need("Job", "ft-a1")
    assert job["metadata"]["labels"]["trainwright.io/attempt"] == "1"
    assert job["spec"]["completions"] == status["plan"]["nodes"]
    config = await world.need("ConfigMap", "ft-trainer")
    assert "alpaca-fixed.jsonl" in config["data"]["config.yaml"]


async def test_a_succeeded_job_ignores_later_edits(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    await world.set_job_status(
        "ft-a0", {"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]}
    )
    done = await world.reconcile("ft", full=False)
    assert done["phase"] == "Succeeded"
    world.server.objects[TJ, NS, "ft"] = _edited(
        "ft", 2, done, resources={"gpuType": "H100-SXM", "gpus": 8}
    )
    status = await world.reconcile("ft")
    assert status["phase"] == "Succeeded"
    assert status["plan"] == done["plan"]
    assert status["specDigest"] == done["specDigest"]
    job = await world.need("Job", "ft-a0")
    assert job["status"]["succeeded"] == 2
    assert await world.child("Job", "ft-a1") is None


async def test_running_out_of_memory_replans_with_headroom_on_more_gpus(world: World) -> None:
    world.server.objects[TJ, NS, "full"] = _trainingjob(
        "full", method="full", resources={"gpuType": "H100-SXM", "maxGpus": 16}, maxRestarts=2
    )
    first = await world.reconcile("full")
    plan = first["plan"]
    assert plan["memoryPerGpuBytes"] <= plan["memoryCapacityBytes"]
    await world.set_job_status(
        "full-a0", {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}
    )
    world.server.objects["v1/pods", NS, "p0"] = _failed_pod("full-a0", 76)
    status = await world.reconcile("full", full=False)
    new = status["plan"]
    assert status["phase"] == "Planned"
    assert (status["attempt"], status["restarts"], status["lastExitCode"]) == (1, 1, 76)
    assert _condition(status, "Running")["reason"] == "Replanning"
    assert _condition(status, "Planned")["reason"] == "Replanned"
    # The new plan fits in 85% of what the failed one estimated, on other GPUs or sharding.
    assert new["memoryPerGpuBytes"] <= 0.85 * plan["memoryPerGpuBytes"]
    assert (new["numGpus"], new["strategy"]) != (plan["numGpus"], plan["strategy"])
    assert await world.child("Job", "full-a0") is None
    job = await world.need("Job", "full-a1")
    assert job["spec"]["completions"] == new["nodes"]
    config = await world.need("ConfigMap", "full-trainer")
    assert f"micro_batch_size: {new['microBatchSize']}" in config["data"]["config.yaml"]
    assert ("Warning", "Replanned") in [(t, r) for t, r, _ in world.events]


def _rank0_pod(job: str, ip: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-0-abcde",
            "namespace": NS,
            "labels": {
                "batch.kubernetes.io/job-name": job,
                "batch.kubernetes.io/job-completion-index": "0",
            },
        },
        "spec": {
            "containers": [
                {"name": "trainer", "ports": [{"name": "metrics", "containerPort": port}]}
            ]
        },
        "status": {"phase": "Running", "podIP": ip},
    }


async def test_a_running_job_shows_the_trainers_progress_from_rank_0(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    await world.set_job_status("ft-a0", {"active": 2, "ready": 2})
    assert (await world.reconcile("ft", full=False))["phase"] == "Running"
    trainer = TrainerMetrics(enabled=True, port=0, progress_path=None, total_steps=500)
    trainer._start_server("127.0.0.1", 0)
    try:
        trainer.record_step(
            step=120,
            epoch=0,
            loss=1.875,
            learning_rate=2e-4,
            grad_norm=0.5,
            tokens_per_second=41_000.0,
            mfu_ratio=0.3,
            eta_seconds=950.0,
        )
        trainer.observe_checkpoint(2.0, step=100)
        world.server.objects["v1/pods", NS, "ft-a0-0"] = _rank0_pod(
            "ft-a0", "127.0.0.1", trainer.port
        )
        await world.call(refresh_progress, world.context, NS, "ft")
        progress = (await world.status("ft"))["progress"]
        writes = world.kube.status_writes
        await world.call(refresh_progress, world.context, NS, "ft")
        assert world.kube.status_writes == writes  # unchanged progress is not written again
    finally:
        trainer.close()
    assert progress["step"] == 120 and progress["totalSteps"] == 500
    assert progress["loss"] == 1.875 and progress["tokensPerSecond"] == 41_000.0
    assert progress["etaSeconds"] == 950.0 and progress["lastCheckpointStep"] == 100
    # The trainer gone (restarting, or out of reach): the last progress stays.
    await world.call(refresh_progress, world.context, NS, "ft")
    assert (await world.status("ft"))["progress"] == progress


async def test_an_overfitting_trainer_sets_the_overfitting_condition_with_advice(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    await world.set_job_status("ft-a0", {"active": 2, "ready": 2})
    assert (await world.reconcile("ft", full=False))["phase"] == "Running"
    trainer = TrainerMetrics(enabled=True, port=0, progress_path=None, total_steps=500)
    trainer._start_server("127.0.0.1", 0)
    step = {"epoch": 0, "learning_rate": 2e-4, "grad_norm": 0.5, "mfu_ratio": 0.0}
    try:
        trainer.record_step(step=200, loss=0.4, tokens_per_second=1.0, eta_seconds=9.0, **step)
        trainer.record_eval(EvalRecord(200, 1.9, 6.69, 100, 1.5, overfitting=True))
        world.server.objects["v1/pods", NS, "ft-a0-0"] = _rank0_pod(
            "ft-a0", "127.0.0.1", trainer.port
        )
        await world.call(refresh_progress, world.context, NS, "ft")
        status = await world.status("ft")
    finally:
        trainer.close()
    [condition] = [c for c in status["conditions"] if c["type"] == "Overfitting"]
    assert status["progress"]["evalLoss"] == 1.9 and status["progress"]["bestStep"] == 100
    assert status["progress"]["overfitting"] is True
    assert (condition["status"], condition["reason"]) == ("True", "EvalLossRising")
    assert "best checkpoint is step 100 (eval loss 1.5000" in condition["message"]


async def test_a_job_found_gone_is_forgotten_by_the_tracker(world: World) -> None:
    """A DELETED event missed while the watch reconnected: the next pass finds nothing and
    the job gets no more periodic passes."""
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    assert len(world.context.tracker) == 1
    del world.server.objects[TJ, NS, "ft"]
    await world.call(reconcile, world.context, NS, "ft")
    assert len(world.context.tracker) == 0
