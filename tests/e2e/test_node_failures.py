"""A node failure on the local control plane: the gang restarts without using a restart.

A running 2-pod TrainingJob on kwok's A100 nodes; one of its nodes is made NotReady the
way a node that stops reporting looks (kwok stops managing it, so nothing heart-beats it
back, and its Ready condition turns False). The operator's node watch restarts the whole
gang as attempt 1 at once (kube-controller-manager would evict the pods only after the
300 s default toleration), ``spec.maxRestarts`` untouched, naming the node. A node failing
the same job twice (avoided by node affinity) is covered by the unit tests.

The detection latency (NotReady patched → the next attempt in status) is printed (``-s``)
for the closing note.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator

import pytest

from e2e.cluster import FAKE_HOLD, Kube, wait_until
from e2e.operator_harness import (
    OperatorProcess,
    create,
    operator,
    status_of,
    trainingjob,
    wait_for_phase,
)

__all__ = ["operator"]  # the fixture, imported so pytest finds it

KWOK_MANAGED = "kwok.x-k8s.io/node"  # hack/k8s/cluster.sh: kwok manages nodes annotated =fake
A100_PAIR = {"gpuType": "A100-80GB-SXM", "gpus": 16, "nodes": 2, "gpusPerNode": 8}


def _ready(status: str, reason: str) -> dict[str, object]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": "e2e: the node stopped reporting",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


@pytest.fixture
def lost_nodes(kube: Kube) -> Iterator[list[str]]:
    """Nodes a test takes away from kwok; given back (Ready, managed) afterwards."""
    taken: list[str] = []
    yield taken
    for name in taken:
        kube.core_v1.patch_node_status(
            name, {"status": {"conditions": [_ready("True", "KubeletReady")]}}
        )
        kube.core_v1.patch_node(name, {"metadata": {"annotations": {KWOK_MANAGED: "fake"}}})


def _take_down(kube: Kube, name: str) -> None:
    kube.core_v1.patch_node(name, {"metadata": {"annotations": {KWOK_MANAGED: None}}})
    kube.core_v1.patch_node_status(
        name, {"status": {"conditions": [_ready("False", "KubeletNotReady")]}}
    )


def test_a_node_made_not_ready_restarts_the_gang_from_its_checkpoint_without_a_restart(
    kube: Kube, namespace: str, operator: OperatorProcess, lost_nodes: list[str]
) -> None:
    body = trainingjob(
        "survivor", resources=A100_PAIR, annotations={FAKE_HOLD: "true"}, max_restarts=0
    )
    create(kube, namespace, "trainingjobs", body)
    wait_for_phase(kube, namespace, "survivor", "Running", timeout_s=60)
    pods = kube.core_v1.list_namespaced_pod(
        namespace, label_selector="batch.kubernetes.io/job-name=survivor-a0"
    ).items
    assert len(pods) == 2
    lost = sorted(p.spec.node_name for p in pods)[0]

    lost_nodes.append(lost)
    started = time.monotonic()
    _take_down(kube, lost)
    status = wait_until(
        lambda: (
            (s := status_of(kube, namespace, "trainingjobs", "survivor")).get("attempt") == 1 and s
        ),
        timeout_s=30,
        what="the next attempt after the node went NotReady",
    )
    detected_s = time.monotonic() - started
    print(f"\nnode NotReady -> attempt 1 in status: {detected_s:.2f} s")

    assert (status.get("restarts", 0), status["infrastructureRestarts"]) == (0, 1)
    [failure] = status["nodeFailures"]
    assert (failure["node"], failure["reason"], failure["attempt"]) == (lost, "NodeNotReady", 0)
    # The condition moves on at once (the new gang waits for admission); the Event stays.
    events = wait_until(
        lambda: (
            kube.core_v1.list_namespaced_event(
                namespace, field_selector="involvedObject.name=survivor,reason=NodeFailure"
            ).items
        ),
        timeout_s=15,
        what="the NodeFailure Event",
    )
    assert events[0].type == "Warning"
    assert events[0].message.startswith(f"Node {lost} under trainer pod survivor-a0-")
    assert "is NotReady: restarting the whole gang as attempt 1" in events[0].message
    assert "spec.maxRestarts is not used" in events[0].message

    # maxRestarts is 0, yet the new gang runs, on the nodes that are still up.
    status = wait_for_phase(kube, namespace, "survivor", "Running", timeout_s=60)
    assert status["attempt"] == 1 and status.get("restarts", 0) == 0
    new_pods = kube.core_v1.list_namespaced_pod(
        namespace, label_selector="batch.kubernetes.io/job-name=survivor-a1"
    ).items
    assert len(new_pods) == 2 and lost not in {p.spec.node_name for p in new_pods}
