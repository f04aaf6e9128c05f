"""Saying why trainer pods do not start: one sentence with the pod's or object's name.

Pure functions over what the API server returns (pods, their Events, the claims a
spec names); :mod:`trainwright.operator.waiting` fetches them and writes the
TrainingJob's condition. Only states that will not cure themselves are reported:
a pod the scheduler cannot place (its ``PodScheduled`` condition: a missing
PersistentVolumeClaim, an untolerated taint, too few GPUs of the product), an image
that cannot be pulled, a container that cannot be created, an init container that
keeps crashing, or a Warning Event saying the same. A pod still pulling or starting
says nothing: the TrainingJob keeps ``WaitingForPods``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from trainwright.resources.storage import PVC_SCHEME

# Condition reasons (transitions.TRANSITIONS lists them).
PODS_NOT_STARTING = "PodsNotStarting"
MISSING_REFERENCE = "MissingReference"
EXPLAINED_REASONS = frozenset({PODS_NOT_STARTING, MISSING_REFERENCE})

IMAGE_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CREATE_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)
# Warning Events of a pod that explain why it does not start (kube-scheduler, kubelet).
EVENT_REASONS = frozenset(
    {
        "FailedScheduling",
        "FailedMount",
        "FailedAttachVolume",
        "FailedCreatePodSandBox",
        "Failed",
        "BackOff",
        "InspectFailed",
        "ErrImageNeverPull",
    }
)


@dataclasses.dataclass(frozen=True)
class Reference:
    """An object the spec names that must exist before the pods can start."""

    kind: str
    name: str
    field: str  # the spec field that names it, e.g. spec.dataset.uri


def claim_references(spec: Mapping[str, Any]) -> list[Reference]:
    """The PersistentVolumeClaims a TrainingJob spec (its manifest form) names:
    every ``pvc://CLAIM/...`` string, and ``checkpoint.pvc``; one per claim, first field wins."""
    found: dict[str, Reference] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif isinstance(value, str) and value.startswith(PVC_SCHEME):
            claim = value[len(PVC_SCHEME) :].partition("/")[0]
            if claim:
                found.setdefault(claim, Reference("PersistentVolumeClaim", claim, path))

    walk(spec, "spec")
    claim = (spec.get("checkpoint") or {}).get("pvc")
    if isinstance(claim, str) and claim:
        found.setdefault(claim, Reference("PersistentVolumeClaim", claim, "spec.checkpoint.pvc"))
    return list(found.values())


def missing_reference_message(missing: Reference, namespace: str) -> str:
    return (
        f"{missing.kind} {namespace}/{missing.name} named by {missing.field} does not exist; "
        "the trainer pods wait for it and start once it is created."
    )


def _first_sentence(message: str) -> str:
    """The scheduler's message without its preemption post-script."""
    head = message.split(" preemption:", 1)[0].strip()
    return head.rstrip(".") + "."


def _container_problem(pod_name: str, status: Mapping[str, Any], *, init: bool) -> str | None:
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    detail = str(waiting.get("message") or reason).strip().rstrip(".")
    which = f"{'init container' if init else 'container'} {status.get('name', '?')}"
    if reason in IMAGE_REASONS:
        image = status.get("image") or "its image"
        return f"Pod {pod_name} cannot pull {image} for {which} ({reason}): {detail}."
    if reason in CREATE_REASONS:
        return f"Pod {pod_name} cannot create {which} ({reason}): {detail}."
    if reason == "CrashLoopBackOff":
        restarts = int(status.get("restartCount") or 0)
        last = ((status.get("lastState") or {}).get("terminated") or {}).get("exitCode")
        code = f", last exit code {last}" if last is not None else ""
        return f"Pod {pod_name}: {which} keeps crashing ({restarts} restarts{code})."
    return None


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why this pod cannot start, from its own status; None while it may still start."""
    name = str((pod.get("metadata") or {}).get("name") or "?")
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") in ("Unschedulable", "SchedulerError")
        ):
            why = _first_sentence(str(condition.get("message") or condition.get("reason")))
            return f"Pod {name} cannot be scheduled: {why}"
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for container in status.get(key) or []:
            problem = _container_problem(name, container, init=init)
            if problem is not None:
                return problem
    return None


def event_problem(pod_name: str, events: Iterable[Mapping[str, Any]]) -> str | None:
    """The latest Warning Event of the pod that says why it does not start."""
    relevant = [
        e
        for e in events
        if e.get("type") == "Warning"
        and e.get("reason") in EVENT_REASONS
        and (e.get("involvedObject") or {}).get("name") == pod_name
    ]
    if not relevant:
        return None
    latest = max(
        relevant,
        key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")),
    )
    why = _first_sentence(str(latest.get("message") or latest.get("reason")))
    return f"Pod {pod_name} does not start ({latest.get('reason')}): {why}"


def not_starting(
    pods: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]] = ()
) -> str | None:
    """The first pod (by name) that cannot start, in one sentence; None when none is stuck.

    A pod's own status wins over Events (it is current; Events may be old).
    """
    ordered = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name")))
    events = list(events)
    for pod in ordered:
        problem = pod_problem(pod)
        if problem is not None:
            return problem
    for pod in ordered:
        if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            continue
        problem = event_problem(str((pod.get("metadata") or {}).get("name")), events)
        if problem is not None:
            return problem
    return None
