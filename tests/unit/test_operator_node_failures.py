"""Node failures: the gang restarts from its checkpoint without using spec.maxRestarts.

The decisions alone (which pod or node state is an infrastructure failure, the bound, the
avoided nodes, the cluster's MTBF), then the controller against kmock's in-memory API as
test_operator_trainingjob.py drives it: a node of a running job goes NotReady, a pod is
evicted, a node fails the same job twice.
"""

from __future__ import annotations

import copy
import datetime
import json
import types
from typing import Any

import pytest
from test_operator_trainingjob import NOW, NS, TJ, World, _condition, _trainingjob, world

from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.operator import checkpoint_interval, node_failures
from trainwright.operator.node_failures import ClusterFailures, NodeFailure
from trainwright.operator.trainingjob import on_node_event, on_trainer_pod_event
from trainwright.operator.transitions import MAX_INFRASTRUCTURE_RESTARTS
from trainwright.planner.checkpointing import PRIOR_GPU_MTBF_HOURS

__all__ = ["world"]  # the fixture, imported for pytest

HOUR = datetime.timedelta(hours=1)


def _pod(name: str, job: str, node: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "labels": {"batch.kubernetes.io/job-name": job, "trainwright.io/job": "ft"},
        },
        "spec": {"nodeName": node},
        "status": {"phase": "Running", **status},
    }


def _node_with_ready(name: str, ready: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


# The decisions ---------------------------------------------------------------------------


def test_a_node_whose_ready_condition_is_false_or_unknown_is_down() -> None:
    assert node_failures.node_down_reason(_node_with_ready("n", "True")) is None
    assert node_failures.node_down_reason(_node_with_ready("n", "False")) == "NodeNotReady"
    assert node_failures.node_down_reason(_node_with_ready("n", "Unknown")) == "NodeUnreachable"


def test_a_pod_stopped_by_the_cluster_is_a_disruption_and_a_finished_one_is_not() -> None:
    taint = _pod(
        "p",
        "ft-a0",
        "h100-1",
        conditions=[
            {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
        ],
    )
    found = node_failures.pod_disruption(taint)
    assert found == NodeFailure("DeletionByTaintManager", "h100-1", "p", "ft-a0")
    assert found.blames_node
    evicted = _pod("p", "ft-a0", "h100-1", phase="Failed", reason="Evicted")
    assert node_failures.pod_disruption(evicted) is not None
    assert not node_failures.pod_disruption(evicted).blames_node  # type: ignore[union-attr]
    assert node_failures.pod_disruption(_pod("p", "ft-a0", "h100-1"), deleted=True) is not None
    finished = _pod("p", "ft-a0", "h100-1", phase="Failed")
    assert node_failures.pod_disruption(finished, deleted=True) is None
    assert node_failures.pod_disruption(_pod("p", "ft-a0", "h100-1")) is None


def test_more_than_the_bound_within_the_window_fails_and_older_failures_do_not_count() -> None:
    failure = NodeFailure("NodeNotReady", "h100-1", "p", "ft-a5")

    def records(age: datetime.timedelta) -> list[dict[str, Any]]:
        stamp = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [
            {"node": f"n{i}", "reason": "NodeNotReady", "pod": "p", "attempt": i, "time": stamp}
            for i in range(MAX_INFRASTRUCTURE_RESTARTS)
        ]

    recent = {"nodeFailures": records(HOUR / 2), "infrastructureRestarts": 5}
    decision = node_failures.decide(recent, failure, attempt=5, now=NOW)
    assert (decision.restart, decision.reason) == (False, "InfrastructureRestartsExceeded")
    assert "6 infrastructure failures within 1 h" in decision.message
    old = {"nodeFailures": records(2 * HOUR), "infrastructureRestarts": 5}
    decision = node_failures.decide(old, failure, attempt=5, now=NOW)
    assert (decision.restart, decision.reason) == (True, "NodeFailure")
    assert decision.status["infrastructureRestarts"] == 6


def test_avoided_nodes_are_excluded_from_every_node_selector_term() -> None:
    manifest = {"spec": {"template": {"spec": {"nodeSelector": {"a": "b"}}}}}
    node_failures.with_avoided_nodes(manifest, ["h100-1", "h100-0"])
    terms = manifest["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/hostname",
                    "operator": "NotIn",
                    "values": ["h100-0", "h100-1"],
                }
            ]
        }
    ]


def test_the_cluster_record_counts_gpu_hours_while_ready_and_ready_to_down_as_one_failure() -> None:
    record = ClusterFailures()
    record.observe(_node_with_ready("a", "True"), deleted=False, now=NOW)
    record.observe(_node_with_ready("b", "True", gpus=4), deleted=False, now=NOW)
    record.observe(_node_with_ready("a", "False"), deleted=False, now=NOW + HOUR)
    record.observe(_node_with_ready("a", "False"), deleted=False, now=NOW + 2 * HOUR)  # still
    seen = record.record(NOW + 2 * HOUR)
    # a: 8 GPUs x 1 h Ready; b: 4 GPUs x 2 h
    assert (seen.failures, seen.gpu_seconds) == (1, (8 + 8) * 3600.0)


def test_young_daly_takes_its_mtbf_from_the_failures_observed_in_the_cluster() -> None:
    job = TrainingJob.from_body(_trainingjob("ft", checkpoint={"intervalSteps": "auto"}))
    plan = PlanStatus.model_validate(
        {
            "gpuType": "H100-SXM",
            "numGpus": 16,
            "nodes": 2,
            "gpusPerNode": 8,
            "strategy": "fsdp",
            "microBatchSize": 1,
            "gradientAccumulationSteps": 1,
            "memoryPerGpuBytes": 1,
            "tokensPerSecond": 1.0,
        }
    )
    status = {"progress": {"checkpointSaveSeconds": 30.0, "stepSeconds": 2.0}}
    cluster = node_failures.FailureRecord(failures=3, gpu_seconds=1000 * 3600.0)
    tuned = checkpoint_interval.for_next_attempt(job, plan, status, NOW, cluster)
    assert tuned is not None and tuned.checkpoint_interval is not None
    chosen = tuned.checkpoint_interval
    rate = (1 + 3) / (PRIOR_GPU_MTBF_HOURS * 3600 + 1000 * 3600)
    assert chosen.mtbf_seconds == pytest.approx(1 / (16 * rate))
    assert (chosen.failures_observed, chosen.observed_gpu_hours) == (3, 1000.0)
    assert "3 node failure(s) observed in the cluster over 1,000 GPU-hours" in chosen.message
    assert chosen.steps == round((2 * 30.0 * chosen.mtbf_seconds) ** 0.5 / 2.0)


# The controller --------------------------------------------------------------------------


def _memo(world: World) -> types.SimpleNamespace:
    return types.SimpleNamespace(context=world.context)


async def _running_job(world: World, **spec: Any) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", **spec)
    await world.reconcile("ft")
    await world.set_job_status("ft-a0", {"active": 2, "ready": 2})
    assert (await world.reconcile("ft", full=False))["phase"] == "Running"


def _place_pods(world: World, job: str) -> None:
    for index in range(2):
        pod = _pod(f"{job}-{index}", job, f"h100-{index}")
        world.server.objects["v1/pods", NS, f"{job}-{index}"] = pod


async def _node_goes_down(world: World, name: str, ready: str = "False") -> dict[str, Any]:
    node = _node_with_ready(name, ready)
    world.server.objects["v1/nodes", None, name] = node
    await world.call(lambda: on_node_event(body=node, type="MODIFIED", memo=_memo(world)))
    return await world.status("ft")


@pytest.mark.asyncio
async def test_a_node_going_not_ready_restarts_the_gang_without_using_a_restart(
    world: World,
) -> None:
    await _running_job(world)
    _place_pods(world, "ft-a0")
    status = await _node_goes_down(world, "h100-1")
    assert status["phase"] == "Planned"
    assert (status["restarts"], status["infrastructureRestarts"], status["attempt"]) == (0, 1, 1)
    assert status["children"]["job"] == "ft-a1"
    assert await world.child("Job", "ft-a0") is None
    assert (await world.need("Job", "ft-a1"))["metadata"]["labels"]["trainwright.io/attempt"] == "1"
    running = _condition(status, "Running")
    assert running["reason"] == "NodeFailure"
    assert running["message"].startswith("Node h100-1 under trainer pod ft-a0-1 is NotReady")
    assert "spec.maxRestarts is not used" in running["message"]
    assert world.events[-1][:2] == ("Warning", "NodeFailure")
    assert [(r["node"], r["reason"], r["attempt"]) for r in status["nodeFailures"]] == [
        ("h100-1", "NodeNotReady", 0)
    ]
    assert status.get("avoidedNodes") == []
    # The same node event again (the old attempt's pods are gone): nothing more happens.
    await _node_goes_down(world, "h100-1")
    assert (await world.status("ft"))["attempt"] == 1


@pytest.mark.asyncio
async def test_a_node_that_fails_the_job_twice_is_avoided_by_the_next_attempt(
    world: World,
) -> None:
    await _running_job(world)
    _place_pods(world, "ft-a0")
    await _node_goes_down(world, "h100-1")
    world.server.objects["v1/nodes", None, "h100-1"] = _node_with_ready("h100-1", "True")
    await world.set_job_status("ft-a1", {"active": 2, "ready": 2})
    await world.reconcile("ft", full=False)
    for index in range(2):
        del world.server.objects["v1/pods", NS, f"ft-a0-{index}"]
    _place_pods(world, "ft-a1")
    status = await _node_goes_down(world, "h100-1", ready="Unknown")
    assert (status["restarts"], status["infrastructureRestarts"], status["attempt"]) == (0, 2, 2)
    assert [a["node"] for a in status["avoidedNodes"]] == ["h100-1"]
    assert "NodeNotReady, NodeUnreachable" in status["avoidedNodes"][0]["reason"]
    assert "h100-1 failed this job twice and is avoided" in _condition(status, "Running")["message"]
    job = await world.need("Job", "ft-a2")
    affinity = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    [term] = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["h100-1"]}
    ]


@pytest.mark.asyncio
async def test_an_evicted_pod_that_failed_its_job_restarts_without_using_a_restart(
    world: World,
) -> None:
    await _running_job(world, maxRestarts=0)
    world.server.objects["v1/pods", NS, "ft-a0-0"] = _pod(
        "ft-a0-0", "ft-a0", "h100-0", phase="Failed", reason="Evicted"
    )
    failed = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}
    await world.set_job_status("ft-a0", failed)
    status = await world.reconcile("ft", full=False)
    assert status["phase"] == "Planned"
    assert (status["restarts"], status["infrastructureRestarts"]) == (0, 1)
    assert (
        "Trainer pod ft-a0-0 on node h100-0 was stopped by the cluster (Evicted)"
        in (status["message"])
    )


@pytest.mark.asyncio
async def test_a_crash_beside_a_lost_node_is_the_node_failure(world: World) -> None:
    await _running_job(world, maxRestarts=0)
    world.server.objects["v1/nodes", None, "h100-1"] = _node_with_ready("h100-1", "Unknown")
    peer = _pod("ft-a0-0", "ft-a0", "h100-0", phase="Failed")
    peer["status"]["containerStatuses"] = [
        {"name": "trainer", "state": {"terminated": {"exitCode": 75}}}
    ]
    world.server.objects["v1/pods", NS, "ft-a0-0"] = peer
    world.server.objects["v1/pods", NS, "ft-a0-1"] = _pod("ft-a0-1", "ft-a0", "h100-1")
    failed = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}
    await world.set_job_status("ft-a0", failed)
    await world.call(lambda: world.kube.nodes(max_age_seconds=0))  # the node list as it is now
    status = await world.reconcile("ft", full=False)
    assert (status["phase"], status["restarts"], status["infrastructureRestarts"]) == (
        "Planned",
        0,
        1,
    )
    assert status["nodeFailures"][0]["reason"] == "NodeUnreachable"


@pytest.mark.asyncio
async def test_pods_deleted_while_the_job_is_suspended_are_not_a_failure(world: World) -> None:
    await _running_job(world)
    job = await world.need("Job", "ft-a0")
    job["spec"]["suspend"] = True  # Kueue preempted it, or spec.suspend
    world.server.objects["batch/v1/jobs", NS, "ft-a0"] = job
    pod = _pod("ft-a0-0", "ft-a0", "h100-0")
    await world.call(lambda: on_trainer_pod_event(body=pod, type="DELETED", memo=_memo(world)))
    status = await world.status("ft")
    assert (status["attempt"], status.get("infrastructureRestarts", 0)) == (0, 0)


@pytest.mark.asyncio
async def test_a_pod_the_taint_manager_deletes_restarts_the_gang_from_the_pod_watch(
    world: World,
) -> None:
    await _running_job(world)
    pod = _pod(
        "ft-a0-1",
        "ft-a0",
        "h100-1",
        conditions=[
            {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
        ],
    )
    await world.call(lambda: on_trainer_pod_event(body=pod, type="MODIFIED", memo=_memo(world)))
    status = await world.status("ft")
    assert (status["restarts"], status["infrastructureRestarts"], status["attempt"]) == (0, 1, 1)
    assert status["nodeFailures"][0]["reason"] == "DeletionByTaintManager"
    assert _condition(status, "Running")["message"].startswith(
        "Trainer pod ft-a0-1 on node h100-1 was stopped by the cluster (DeletionByTaintManager)"
    )


@pytest.mark.asyncio
async def test_a_ready_node_event_restarts_nothing(world: World) -> None:
    await _running_job(world)
    _place_pods(world, "ft-a0")
    status = await _node_goes_down(world, "h100-1", ready="True")
    assert (status["attempt"], status.get("infrastructureRestarts", 0)) == (0, 0)
    assert status["phase"] == "Running"


def test_a_heartbeat_is_no_news_but_readiness_cordon_taints_and_devices_are() -> None:
    failures = ClusterFailures()
    node = _node_with_ready("h100-0", "True")
    assert failures.changed(node)  # never seen
    failures.observe(node, deleted=False, now=NOW)
    beat = copy.deepcopy(node)
    for condition in beat["status"]["conditions"]:
        condition["lastHeartbeatTime"] = "2026-01-01T00:10:00Z"
    assert not failures.changed(beat)
    assert failures.changed(_node_with_ready("h100-0", "False"))
    cordoned = copy.deepcopy(node)
    cordoned.setdefault("spec", {})["unschedulable"] = True
    assert failures.changed(cordoned)
    tainted = copy.deepcopy(node)
    tainted.setdefault("spec", {})["taints"] = [{"key": "maintenance", "effect": "NoSchedule"}]
    assert failures.changed(tainted)
    fewer = copy.deepcopy(node)
    fewer["status"]["allocatable"]["nvidia.com/gpu"] = "4"
    assert failures.changed(fewer)


@pytest.mark.asyncio
async def test_the_failure_record_survives_an_operator_restart(world: World) -> None:
    """Saved to the ConfigMap by one process, loaded by the next: the MTBF goes on."""
    from trainwright.operator.failure_record import STORE_KEY, STORE_NAME, FailureRecordStore

    first = ClusterFailures()
    store = FailureRecordStore(world.kube, NS, first, now=lambda: NOW + 2 * HOUR)
    assert not await world.call(store.save)  # has seen no node: a standby writes nothing
    first.observe(_node_with_ready("h100-0", "True"), deleted=False, now=NOW)
    first.observe(_node_with_ready("h100-0", "False"), deleted=False, now=NOW + HOUR)
    assert await world.call(store.save)
    saved = json.loads((await world.need("ConfigMap", STORE_NAME))["data"][STORE_KEY])
    # One failure; 8 GPUs watched Ready for the hour before it (none after: the node is down).
    assert (saved["failures"], saved["gpuSeconds"]) == (1, 8 * 3600.0)
    second = ClusterFailures()  # a new operator process
    loaded = await world.call(FailureRecordStore(world.kube, NS, second).load)
    assert loaded == first.record(NOW + 2 * HOUR) == second.record(NOW)
    assert loaded is not None and (loaded.failures, loaded.gpu_seconds) == (1, 8 * 3600.0)
    # The next save replaces the record (a merge patch of the same ConfigMap).
    second.observe(_node_with_ready("h100-1", "True"), deleted=False, now=NOW)
    assert await world.call(FailureRecordStore(world.kube, NS, second, now=lambda: NOW).save)
    again = await world.call(FailureRecordStore(world.kube, NS, ClusterFailures()).load)
    assert again == loaded


@pytest.mark.asyncio
async def test_a_malformed_failure_record_is_ignored_not_fatal(world: World) -> None:
    from trainwright.operator.failure_record import STORE_KEY, STORE_NAME, FailureRecordStore

    world.server.objects["v1/configmaps", NS, STORE_NAME] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": STORE_NAME, "namespace": NS},
        "data": {STORE_KEY: "not json"},
    }
    failures = ClusterFailures()
    assert await world.call(FailureRecordStore(world.kube, NS, failures).load) is None
    assert failures.record(NOW).failures == 0
