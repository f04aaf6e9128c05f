"""Node failures: the whole gang restarts from its checkpoint, without using a restart.

A multi-node torchrun cannot lose a pod. When the node under a trainer pod goes
``NotReady``/``Unknown`` or is deleted, or the pod is evicted or deleted by something
other than the operator (its ``DisruptionTarget`` condition, ``status.reason``
``Evicted``/``NodeLost``), the operator deletes the attempt's Job and starts the next
attempt, which resumes from the newest checkpoint, as it does after a crash, except
that ``spec.maxRestarts`` is left alone: ``status.infrastructureRestarts`` counts these,
``status.nodeFailures`` lists them (node, reason, pod, attempt, time) and the
``Running`` condition and a Warning Event name the node and the reason.

Detection does not wait for the taint manager: trainer pods carry no toleration for
``node.kubernetes.io/not-ready``/``unreachable`` beyond the 300 s the
``DefaultTolerationSeconds`` admission plugin adds, so an unreachable node's pods would
be evicted only five minutes after kube-controller-manager marks the node ``Unknown``
(``--node-monitor-grace-period``, 50 s by default). The operator watches nodes and acts
on the first event whose ``Ready`` condition is not ``True``.

A node that failed the same job :data:`AVOID_NODE_AFTER_FAILURES` times is listed in
``status.avoidedNodes`` and kept out of later attempts by a required node affinity
(``kubernetes.io/hostname NotIn [...]``). More than :data:`MAX_INFRASTRUCTURE_RESTARTS`
within :data:`INFRASTRUCTURE_WINDOW_SECONDS` fails the run
(``InfrastructureRestartsExceeded``) rather than loop: the numbers and why are in
:mod:`trainwright.operator.transitions`, the home of every decision after a failure.

:class:`ClusterFailures` is the cluster's record for ``checkpoint.intervalSteps: auto``:
GPU nodes' failures the operator saw and the GPU-hours it watched them for.

Pure functions over the API's dicts, plus that record; no API calls.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trainwright.operator.status import utc_timestamp
from trainwright.operator.transitions import (
    AVOID_NODE_AFTER_FAILURES,
    INFRASTRUCTURE_RESTARTS_EXCEEDED,
    INFRASTRUCTURE_WINDOW_SECONDS,
    MAX_INFRASTRUCTURE_RESTARTS,
    NODE_FAILURE,
)
from trainwright.planner.lookup import device_node_keys

HOSTNAME_LABEL = "kubernetes.io/hostname"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
MAX_RECORDED_FAILURES = 20  # status.nodeFailures keeps the newest
# Reasons that blame the node (an eviction by the API, a drain or a scheduler preemption
# does not: the node is healthy and may run the next attempt).
NODE_REASONS = frozenset(
    {"NodeNotReady", "NodeUnreachable", "NodeDeleted", "NodeLost", "DeletionByTaintManager"}
)
# A pod's status.reason when the kubelet or the node controller ended it.
_POD_STATUS_REASONS = frozenset({"Evicted", "NodeLost", "NodeShutdown", "Terminated"})


@dataclasses.dataclass(frozen=True)
class NodeFailure:
    """What ended an attempt: the node (when one is to blame), the reason, the pod."""

    reason: str
    node: str | None = None
    pod: str | None = None
    job: str | None = None  # the trainer Job (attempt) the pod belonged to

    @property
    def blames_node(self) -> bool:
        return self.node is not None and self.reason in NODE_REASONS

    def sentence(self) -> str:
        what = {
            "NodeNotReady": "is NotReady",
            "NodeUnreachable": "stopped reporting (Ready Unknown)",
            "NodeDeleted": "was deleted",
        }.get(self.reason)
        if what is not None:
            pod = f" under trainer pod {self.pod}" if self.pod else ""
            return f"Node {self.node}{pod} {what}"
        where = f" on node {self.node}" if self.node else ""
        return f"Trainer pod {self.pod or '?'}{where} was stopped by the cluster ({self.reason})"


def node_down_reason(node: Mapping[str, Any]) -> str | None:
    """``NodeNotReady`` or ``NodeUnreachable`` from the node's Ready condition; None if Ready."""
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            status = condition.get("status")
            if status == "True":
                return None
            return "NodeUnreachable" if status == "Unknown" else "NodeNotReady"
    return None


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


def pod_disruption(pod: Mapping[str, Any], *, deleted: bool = False) -> NodeFailure | None:
    """Why the cluster (not the trainer, not the operator) stopped this pod; None if it did not.

    ``deleted``: the watch saw the pod go. The operator deletes pods only with their Job, after
    status names the next attempt, so the caller checks the pod is of the current attempt.
    """
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName")
    job = (metadata.get("labels") or {}).get(JOB_NAME_LABEL)

    def failure(reason: str) -> NodeFailure:
        return NodeFailure(reason, str(node) if node else None, _pod_name(pod), job)

    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return failure(str(condition.get("reason") or "DisruptionTarget"))
    if status.get("reason") in _POD_STATUS_REASONS:
        return failure(str(status["reason"]))
    if status.get("phase") in ("Succeeded", "Failed"):
        return None  # it ended by itself: the Job's failure handling reads its exit code
    if deleted or metadata.get("deletionTimestamp"):
        return failure("PodDeleted")
    return None


def failure_of_pods(
    pods: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]
) -> NodeFailure | None:
    """The infrastructure failure behind a failed attempt: a disrupted pod, or a pod whose
    node is down or gone; None when the pods ended by themselves."""
    by_name = {str((n.get("metadata") or {}).get("name")): n for n in nodes}
    pods = list(pods)
    for pod in pods:
        found = pod_disruption(pod)
        if found is not None:
            return found
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            continue
        job = ((pod.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL)
        node = by_name.get(str(node_name))
        reason = "NodeDeleted" if node is None else node_down_reason(node)
        if reason is not None:
            return NodeFailure(reason, str(node_name), _pod_name(pod), job)
    return None


def pods_on_node(pods: Iterable[Mapping[str, Any]], node: str) -> list[Mapping[str, Any]]:
    """Trainer pods bound to ``node`` that have not finished."""
    return [
        pod
        for pod in pods
        if (pod.get("spec") or {}).get("nodeName") == node
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


@dataclasses.dataclass(frozen=True)
class InfrastructureDecision:
    """Restart the gang (``restart``) or fail; the condition's reason and sentence, and the
    status fields to write (``nodeFailures``, ``avoidedNodes``, ``infrastructureRestarts``)."""

    restart: bool
    reason: str
    message: str
    status: dict[str, Any]


def _parse_time(stamp: Any) -> datetime.datetime | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def avoided_nodes(records: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Nodes that failed the job at least :data:`AVOID_NODE_AFTER_FAILURES` times."""
    counts: dict[str, list[str]] = {}
    for record in records:
        node = record.get("node")
        if node and record.get("reason") in NODE_REASONS:
            counts.setdefault(str(node), []).append(str(record["reason"]))
    return [
        {
            "node": node,
            "reason": (
                f"Failed this job {len(reasons)} times ({', '.join(sorted(set(reasons)))}); "
                "later attempts avoid it."
            ),
        }
        for node, reasons in sorted(counts.items())
        if len(reasons) >= AVOID_NODE_AFTER_FAILURES
    ]


def decide(
    status: Mapping[str, Any], failure: NodeFailure, *, attempt: int, now: datetime.datetime
) -> InfrastructureDecision:
    """Restart the gang as attempt ``attempt + 1``, or fail when the bound is reached."""
    records = list(status.get("nodeFailures") or [])
    # Kept for avoidance even past MAX_RECORDED_FAILURES: an avoided node stays avoided.
    avoided_before = list(status.get("avoidedNodes") or [])
    record = {
        "node": failure.node,
        "reason": failure.reason,
        "pod": failure.pod,
        "attempt": attempt,
        "time": utc_timestamp(now),
    }
    records = [*records, record][-MAX_RECORDED_FAILURES:]
    avoided = {a["node"]: a for a in avoided_before} | {
        a["node"]: a for a in avoided_nodes(records)
    }
    window_start = now - datetime.timedelta(seconds=INFRASTRUCTURE_WINDOW_SECONDS)
    recent = sum(1 for r in records if (_parse_time(r.get("time")) or now) >= window_start)
    restarts = int(status.get("infrastructureRestarts") or 0)
    fields: dict[str, Any] = {"nodeFailures": records, "avoidedNodes": list(avoided.values())}
    what = failure.sentence()
    if recent > MAX_INFRASTRUCTURE_RESTARTS:
        message = (
            f"{what}: {recent} infrastructure failures within "
            f"{INFRASTRUCTURE_WINDOW_SECONDS / 3600:g} h (at most {MAX_INFRASTRUCTURE_RESTARTS} "
            "are restarted); the cluster keeps losing this job's nodes, so it fails rather than "
            "loop. See status.nodeFailures, fix the nodes, then raise spec.maxRestarts or "
            "re-apply."
        )
        return InfrastructureDecision(False, INFRASTRUCTURE_RESTARTS_EXCEEDED, message, fields)
    step = (status.get("progress") or {}).get("lastCheckpointStep")
    resume = f"the checkpoint of step {step}" if isinstance(step, int) else "the last checkpoint"
    message = (
        f"{what}: restarting the whole gang as attempt {attempt + 1} from {resume} "
        f"(infrastructure restart {restarts + 1}; spec.maxRestarts is not used)."
    )
    if (
        failure.node is not None
        and failure.node in avoided
        and failure.node not in {a["node"] for a in avoided_before}
    ):
        message += f" Node {failure.node} failed this job twice and is avoided from now on."
    fields["infrastructureRestarts"] = restarts + 1
    return InfrastructureDecision(True, NODE_FAILURE, message, fields)


def with_avoided_nodes(manifest: dict[str, Any], nodes: Sequence[str]) -> dict[str, Any]:
    """The trainer Job with a required node affinity keeping its pods off ``nodes``.

    The ``NotIn`` expression is added to every ``nodeSelectorTerms`` entry (terms are ORed,
    so each must exclude the nodes).
    """
    if not nodes:
        return manifest
    pod = manifest["spec"]["template"]["spec"]
    expression = {"key": HOSTNAME_LABEL, "operator": "NotIn", "values": sorted(set(nodes))}
    affinity = pod.setdefault("affinity", {})
    required = affinity.setdefault("nodeAffinity", {}).setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {}
    )
    terms = required.setdefault("nodeSelectorTerms", []) or [{}]
    for term in terms:
        term.setdefault("matchExpressions", []).append(dict(expression))
    required["nodeSelectorTerms"] = terms
    return manifest


def avoided_node_names(status: Mapping[str, Any]) -> list[str]:
    return [str(a["node"]) for a in status.get("avoidedNodes") or [] if a.get("node")]


# The cluster's failure record (Young/Daly's MTBF) ------------------------------------------


def node_devices(node: Mapping[str, Any]) -> int:
    """Allocatable GPUs (or the catalog's other devices) of a node; 0 for other nodes."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    for label, resource in device_node_keys():
        if labels.get(label):
            try:
                return int(str(allocatable.get(resource, 0)))
            except ValueError:
                return 0
    return 0


@dataclasses.dataclass(frozen=True)
class FailureRecord:
    """GPU-node failures seen and the GPU-seconds of GPU nodes watched while Ready."""

    failures: int
    gpu_seconds: float


def _node_signature(node: Mapping[str, Any]) -> tuple[Any, ...]:
    spec = node.get("spec") or {}
    taints = tuple(
        sorted((str(t.get("key")), str(t.get("effect"))) for t in spec.get("taints") or [])
    )
    labels = (node.get("metadata") or {}).get("labels") or {}
    return (
        node_down_reason(node),
        node_devices(node),
        bool(spec.get("unschedulable")),
        taints,
        tuple(sorted(labels.items())),
    )


class ClusterFailures:
    """Node failures the operator observed in the cluster, for the MTBF of
    ``checkpoint.intervalSteps: auto``: a GPU node's Ready→not Ready transition is one failure;
    each GPU node counts its devices x the seconds it was watched while Ready. Kept in the
    operator's memory and saved to a ConfigMap (failure_record.FailureRecordStore), so a
    restarted operator goes on from what the last one saw."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # node -> (ready, devices, when last seen)
        self._nodes: dict[str, tuple[bool, int, datetime.datetime]] = {}
        # node -> what of it the operator acts on, at its last observed event
        self._signatures: dict[str, tuple[Any, ...]] = {}
        self._failures = 0
        self._gpu_seconds = 0.0

    def changed(self, node: Mapping[str, Any]) -> bool:
        """Whether the node's readiness, devices or schedulability (cordon, taints) differ
        from its last observed event; a heartbeat that changes none of them is not news
        (the accounting of ready device-seconds runs to the next event or record)."""
        name = str((node.get("metadata") or {}).get("name") or "")
        with self._lock:
            return self._signatures.get(name) != _node_signature(node)

    def observe(
        self, node: Mapping[str, Any], *, deleted: bool, now: datetime.datetime
    ) -> str | None:
        """Account for one node event; the node's failure reason when it is down (or None)."""
        name = str((node.get("metadata") or {}).get("name") or "")
        reason = "NodeDeleted" if deleted else node_down_reason(node)
        devices = node_devices(node)
        with self._lock:
            before = self._nodes.get(name)
            if before is not None and before[0]:
                self._gpu_seconds += before[1] * max(0.0, (now - before[2]).total_seconds())
            was_ready = before is not None and before[0]
            if devices and was_ready and reason in ("NodeNotReady", "NodeUnreachable"):
                self._failures += 1
            if deleted:
                self._nodes.pop(name, None)
                self._signatures.pop(name, None)
            else:
                self._nodes[name] = (reason is None, devices, now)
                self._signatures[name] = _node_signature(node)
        return reason

    def watching(self) -> int:
        """Nodes this process has seen events of (none in a paused standby replica)."""
        with self._lock:
            return len(self._nodes)

    def restore(self, earlier: FailureRecord) -> None:
        """Add what an earlier operator process observed (FailureRecordStore.load)."""
        with self._lock:
            self._failures += earlier.failures
            self._gpu_seconds += earlier.gpu_seconds

    def record(self, now: datetime.datetime) -> FailureRecord:
        with self._lock:
            running = sum(
                devices * max(0.0, (now - seen).total_seconds())
                for ready, devices, seen in self._nodes.values()
                if ready
            )
            return FailureRecord(self._failures, self._gpu_seconds + running)
