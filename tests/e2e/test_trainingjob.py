"""TrainingJobs on the local control plane, driven by the real operator process.

The scheduler places the trainer pods on kwok's fake GPU nodes; kwok finishes
them (or fails them with an exit code, through pod annotations); the job
controller and the garbage collector do the rest.
"""

from __future__ import annotations

from collections import Counter

from e2e.cluster import FAKE_EXIT_CODE, FAKE_HOLD, FAKE_RESULT, GPU_PRODUCT_LABEL, Kube, wait_until
from e2e.operator_harness import (
    OperatorProcess,
    condition,
    create,
    operator,
    owned_children,
    patch_spec,
    status_of,
    trainingjob,
    wait_for_phase,
)

__all__ = ["operator"]  # the fixture, imported so pytest finds it

H100_PRODUCT = "NVIDIA-H100-80GB-HBM3"


def _pods(kube: Kube, namespace: str, owner: str) -> list[dict[str, object]]:
    pods = kube.core_v1.list_namespaced_pod(namespace, label_selector=f"trainwright.io/job={owner}")
    return [kube.api_client.sanitize_for_serialization(p) for p in pods.items]


def test_a_pinned_job_runs_one_pod_per_node_on_the_planned_gpu_with_torchrun_arguments(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = trainingjob(
        "pinned",
        resources={"gpuType": "H100-SXM", "gpus": 16, "nodes": 2, "gpusPerNode": 8},
        annotations={FAKE_HOLD: "true"},
    )
    create(kube, namespace, "trainingjobs", body)
    status = wait_for_phase(kube, namespace, "pinned", "Running")
    plan = status["plan"]
    assert (plan["gpuType"], plan["nodes"], plan["gpusPerNode"]) == ("H100-SXM", 2, 8)
    assert plan["memoryPerGpuBytes"] > 0 and plan["tokensPerSecond"] > 0
    assert condition(status, "Planned")["status"] == "True"
    assert condition(status, "Planned")["observedGeneration"] == status["observedGeneration"]

    pods = wait_until(
        lambda: (
            [p for p in _pods(kube, namespace, "pinned") if p["spec"].get("nodeName")]
            if len(_pods(kube, namespace, "pinned")) == 2
            else None
        ),
        timeout_s=30,
        what="both trainer pods to be scheduled",
    )
    nodes = {n.metadata.name: n.metadata.labels for n in kube.nodes()}
    assert len({p["spec"]["nodeName"] for p in pods}) == 2
    for pod in pods:
        assert nodes[pod["spec"]["nodeName"]][GPU_PRODUCT_LABEL] == H100_PRODUCT
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        script = container["command"][-1]
        assert "--nnodes=2" in script and "--nproc-per-node=8" in script
        assert "--node-rank=${NODE_RANK}" in script
        assert "--master-addr=pinned-a0-0.pinned-workers" in script
        env = {e["name"]: e for e in container["env"]}
        assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert sorted(
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods
    ) == ["0", "1"]


def test_pods_that_complete_make_the_job_succeed(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    create(kube, namespace, "trainingjobs", trainingjob("done"))
    status = wait_for_phase(kube, namespace, "done", "Succeeded", timeout_s=90)
    assert condition(status, "Succeeded")["reason"] == "Completed"
    assert status["completionTime"]
    assert status["plan"]["gpuType"] in {"H100-SXM", "A100-80GB-SXM", "L4"}
    events = kube.core_v1.list_namespaced_event(
        namespace, field_selector="involvedObject.name=done,involvedObject.kind=TrainingJob"
    ).items
    assert {"Planned", "Completed"} <= {e.reason for e in events}


def test_a_config_error_exit_code_fails_the_job_without_a_restart(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = trainingjob("badconfig", annotations={FAKE_RESULT: "fail", FAKE_EXIT_CODE: "64"})
    create(kube, namespace, "trainingjobs", body)
    status = wait_for_phase(kube, namespace, "badconfig", "Failed", timeout_s=60)
    failed = condition(status, "Failed")
    assert failed["reason"] == "ConfigError"
    assert "exit code 64" in failed["message"]
    assert status["lastExitCode"] == 64
    assert status.get("restarts", 0) == 0


def test_retryable_failures_restart_until_max_restarts_then_fail(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = trainingjob(
        "flaky", annotations={FAKE_RESULT: "fail", FAKE_EXIT_CODE: "75"}, max_restarts=1
    )
    create(kube, namespace, "trainingjobs", body)
    status = wait_for_phase(kube, namespace, "flaky", "Failed", timeout_s=90)
    assert status["restarts"] == 1
    assert status["attempt"] == 1
    failed = condition(status, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "exit code 75" in failed["message"]
    wait_until(
        lambda: owned_children(kube, namespace, "flaky")["Job"] == ["flaky-a1"],
        timeout_s=30,
        what="only the last attempt's Job to remain",
    )


def test_an_out_of_memory_exit_replans_on_more_gpus_until_restarts_run_out(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = trainingjob(
        "oom",
        method="full",
        resources={"gpuType": "H100-SXM", "maxGpus": 16},
        annotations={FAKE_RESULT: "fail", FAKE_EXIT_CODE: "76"},
        max_restarts=1,
    )
    create(kube, namespace, "trainingjobs", body)
    status = wait_for_phase(kube, namespace, "oom", "Failed", timeout_s=120)
    assert (status["restarts"], status["attempt"], status["lastExitCode"]) == (1, 1, 76)
    assert condition(status, "Failed")["reason"] == "NeedsReplan"
    assert condition(status, "Planned")["reason"] == "Replanned"
    assert status["plan"]["numGpus"] == 8  # first planned on 4, re-planned with headroom
    events = kube.core_v1.list_namespaced_event(
        namespace, field_selector="involvedObject.name=oom,involvedObject.kind=TrainingJob"
    ).items
    assert {"Planned", "Replanned", "NeedsReplan"} <= {e.reason for e in events}
    wait_until(
        lambda: owned_children(kube, namespace, "oom")["Job"] == ["oom-a1"],
        timeout_s=30,
        what="only the re-planned attempt's Job to remain",
    )


def test_a_plan_that_does_not_fit_fails_and_says_what_memory_it_needs(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = trainingjob(
        "toobig",
        model="llama-3.1-70b",
        method="full",
        resources={"gpuType": "L4", "gpus": 1},
    )
    create(kube, namespace, "trainingjobs", body)
    status = wait_for_phase(kube, namespace, "toobig", "Failed")
    planned = condition(status, "Planned")
    assert planned["status"] == "False"
    assert planned["reason"] == "DoesNotFit"
    assert planned["message"].startswith("1 x L4 does not fit: each GPU would need ")
    assert owned_children(kube, namespace, "toobig") == {"Job": [], "ConfigMap": [], "Service": []}


def test_a_plan_larger_than_the_cluster_fails_with_what_the_cluster_has(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = trainingjob("huge", resources={"gpuType": "H100-SXM", "gpus": 64})
    create(kube, namespace, "trainingjobs", body)
    status = wait_for_phase(kube, namespace, "huge", "Failed")
    planned = condition(status, "Planned")
    assert planned["reason"] == "InsufficientCapacity"
    assert "H100-SXM node(s) with up to 8 GPUs" in planned["message"]


def test_suspend_stops_the_pods_and_an_edit_while_suspended_is_replanned_on_resume(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    pinned = {"gpuType": "H100-SXM", "gpus": 16}
    create(
        kube,
        namespace,
        "trainingjobs",
        trainingjob("pause", resources=pinned, annotations={FAKE_HOLD: "true"}),
    )
    wait_for_phase(kube, namespace, "pause", "Running")
    patch_spec(kube, namespace, "trainingjobs", "pause", {"suspend": True})
    status = wait_for_phase(kube, namespace, "pause", "Suspended")
    assert condition(status, "Suspended")["status"] == "True"
    job = kube.batch_v1.read_namespaced_job("pause-a0", namespace)
    assert job.spec.suspend is True
    wait_until(
        lambda: (
            not [p for p in _pods(kube, namespace, "pause") if p["status"]["phase"] == "Running"]
        ),
        timeout_s=30,
        what="the suspended job's pods to stop",
    )
    # Suspended, the inputs may change (the API server refuses that while Running).
    patch_spec(
        kube, namespace, "trainingjobs", "pause", {"resources": {"gpuType": "H100-SXM", "gpus": 8}}
    )
    patch_spec(kube, namespace, "trainingjobs", "pause", {"suspend": False})
    status = wait_for_phase(kube, namespace, "pause", "Running")
    assert condition(status, "Suspended")["status"] == "False"
    assert (status["plan"]["numGpus"], status["plan"]["nodes"]) == (8, 1)
    assert status["children"]["job"] == "pause-a1"
    assert "Re-planned for the edited spec" in condition(status, "Planned")["message"]
    wait_until(
        lambda: (
            {p["metadata"]["labels"]["job-name"] for p in _pods(kube, namespace, "pause")}
            == {"pause-a1"}
        ),
        timeout_s=60,
        what="only the re-planned attempt's pod to remain",
    )


def test_deleting_a_trainingjob_garbage_collects_its_children(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    create(kube, namespace, "trainingjobs", trainingjob("gone", annotations={FAKE_HOLD: "true"}))
    wait_for_phase(kube, namespace, "gone", "Running")
    # One node (8 GPUs at most): its ranks meet on 127.0.0.1, so no headless Service.
    assert {k: len(v) for k, v in owned_children(kube, namespace, "gone").items()} == {
        "Job": 1,
        "ConfigMap": 1,
        "Service": 0,
    }
    kube.kubectl("delete", "trainingjob", "gone", "-n", namespace, "--wait=true")
    wait_until(
        lambda: (
            owned_children(kube, namespace, "gone") == {"Job": [], "ConfigMap": [], "Service": []}
            and not _pods(kube, namespace, "gone")
        ),
        timeout_s=60,
        what="the Job, ConfigMap and pods to be garbage-collected",
    )


def test_killing_the_operator_mid_reconcile_leaves_exactly_one_set_of_children(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    names = [f"restart-{i}" for i in range(12)]
    for name in names:
        create(kube, namespace, "trainingjobs", trainingjob(name, annotations={FAKE_HOLD: "true"}))
    wait_until(
        lambda: any(status_of(kube, namespace, "trainingjobs", n).get("plan") for n in names),
        timeout_s=30,
        what="the first plan to be written",
    )
    operator.kill()
    operator.start()
    wait_until(
        lambda: all(owned_children(kube, namespace, n)["Job"] for n in names),
        timeout_s=90,
        what="every TrainingJob to have its Job after the restart",
    )
    counts = Counter(
        (kind, owner)
        for owner in names
        for kind, children in owned_children(kube, namespace, owner).items()
        for _ in children
    )
    assert set(counts.values()) == {1}
    # A ConfigMap and a Job each; no Service (one node each: ranks meet on 127.0.0.1).
    assert {kind for kind, _ in counts} == {"ConfigMap", "Job"}
    assert len(counts) == 2 * len(names)
