"""Saying why a TrainingJob's trainer pods do not start, within seconds.

A watch on trainer pods (``trainingjob.on_trainer_pod_event``) calls
:func:`on_pod_event` whenever a pod's status says something new (the scheduler
set ``PodScheduled=False``, an image pull failed, an init container crash-loops).
While the TrainingJob is ``Planned`` and its Job has no ready pod,
:func:`explain_waiting` checks, in order:

1. the PersistentVolumeClaims the spec names (``pvc://`` URIs, ``checkpoint.pvc``):
   a missing one gives ``Running=False`` reason ``MissingReference`` naming the claim
   and the field. This is a waiting condition, not a failure: the Job exists, its pods
   hold no GPU (the scheduler does not bind them), and the run starts by itself once
   the claim is created;
2. the pods' own status, then their Warning Events (:mod:`.diagnosis`): reason
   ``PodsNotStarting`` with the pod's name and the scheduler's or kubelet's words.

Once no pod is stuck any more the condition goes back to ``WaitingForPods``. The
reconcile keeps an explanation while no pod is ready (:func:`kept_explanation`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from trainwright.operator import lifecycle
from trainwright.operator.context import OperatorContext
from trainwright.operator.diagnosis import (
    EXPLAINED_REASONS,
    MISSING_REFERENCE,
    PODS_NOT_STARTING,
    claim_references,
    missing_reference_message,
    not_starting,
    pod_problem,
)
from trainwright.operator.status import (
    ConditionType,
    Phase,
    find_condition,
    set_condition,
    status_patch,
)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
WAITING_FOR_PODS = "WaitingForPods"
# At most this many pending pods' Events are read per pass (one request each).
MAX_EVENT_READS = 4

logger = logging.getLogger(__name__)

# What each trainer pod last said (uid -> signature): unchanged pod events are skipped.
_seen: dict[str, tuple[str | None, str | None]] = {}


def waiting_message(ready: int, pods: int) -> str:
    return f"Waiting for the trainer pods to start: {ready} of {pods} trainer pod(s) ready."


def kept_explanation(status: Mapping[str, Any], ready: int) -> tuple[str, str] | None:
    """The explanation the pod watch wrote, kept by the reconcile while no pod is ready."""
    running = find_condition(status.get("conditions") or [], ConditionType.RUNNING)
    if ready or running is None or running.get("status") != "False":
        return None
    if running.get("reason") not in EXPLAINED_REASONS:
        return None
    return str(running["reason"]), str(running.get("message") or "")


def diagnose(
    context: OperatorContext, namespace: str, spec: Mapping[str, Any], job_name: str
) -> tuple[str, str] | None:
    """(reason, one sentence) for a Job whose pods cannot start; None when none is stuck."""
    for reference in claim_references(spec):
        if context.kube.get_child(reference.kind, namespace, reference.name) is None:
            return MISSING_REFERENCE, missing_reference_message(reference, namespace)
    pods = context.kube.list_pods(namespace, f"{JOB_NAME_LABEL}={job_name}")
    problem = not_starting(pods)
    if problem is None:
        pending = [
            str(p["metadata"]["name"])
            for p in pods
            if (p.get("status") or {}).get("phase") in (None, "Pending")
        ]
        events: list[dict[str, Any]] = []
        for pod_name in sorted(pending)[:MAX_EVENT_READS]:
            events += context.kube.list_events(namespace, pod_name)
        problem = not_starting(pods, events)
    return None if problem is None else (PODS_NOT_STARTING, problem)


def explain_waiting(
    context: OperatorContext, namespace: str, name: str, *, plural: str, job: Mapping[str, Any]
) -> None:
    """Write why the current attempt's pods do not start (or that they no longer are stuck)."""

    def waiting_status() -> tuple[dict[str, Any], dict[str, Any]] | None:
        body = context.kube.get_custom(plural, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        status = dict(body.get("status") or {})
        current_job = (status.get("children") or {}).get("job")
        if status.get("phase") != Phase.PLANNED or current_job != job["metadata"]["name"]:
            return None
        return body, status

    if lifecycle.job_state(job) is not lifecycle.JobState.WAITING:
        return
    found = waiting_status()
    if found is None:
        return
    why = diagnose(context, namespace, found[0].get("spec") or {}, str(job["metadata"]["name"]))
    with context.locks.hold(namespace, name):
        found = waiting_status()
        if found is None:
            return
        body, status = found
        if why is None:
            kept = kept_explanation(status, 0)
            if kept is None:
                return
            plan = status.get("plan") or {}
            ready = int((job.get("status") or {}).get("ready") or 0)
            why = (WAITING_FOR_PODS, waiting_message(ready, int(plan.get("nodes") or 1)))
        reason, message = why
        generation = int(status.get("observedGeneration") or body["metadata"].get("generation"))
        conditions = set_condition(
            list(status.get("conditions") or []),
            type_=ConditionType.RUNNING,
            status=False,
            reason=reason,
            message=message,
            generation=generation,
            now=context.now(),
        )
        patch = status_patch(
            status,
            phase=Phase.PLANNED,
            conditions=conditions,
            generation=generation,
            extra={"message": message},
        )
        if patch is None:
            return
        context.kube.patch_status(plural, namespace, name, patch)
        old = find_condition(status.get("conditions") or [], ConditionType.RUNNING)
        if reason != WAITING_FOR_PODS and (old is None or old.get("reason") != reason):
            context.post_event(body, "Warning", reason, message)
            logger.info("TrainingJob %s/%s: %s: %s", namespace, name, reason, message)


def _uid(pod: Mapping[str, Any]) -> str:
    metadata = pod.get("metadata") or {}
    return str(metadata.get("uid") or metadata.get("name"))


def _signature(pod: Mapping[str, Any]) -> tuple[str | None, str | None]:
    return ((pod.get("status") or {}).get("phase"), pod_problem(pod))


def pod_news(pod: Mapping[str, Any], event_type: str | None) -> bool:
    """Whether :func:`on_pod_event` would look at this event: the pod is gone, or its phase
    or problem differs from the last one explained (most events of a starting pod do not)."""
    return event_type == "DELETED" or _seen.get(_uid(pod)) != _signature(pod)


def on_pod_event(
    context: OperatorContext,
    pod: Mapping[str, Any],
    event_type: str | None,
    *,
    plural: str,
    owner_of: Callable[[Mapping[str, Any]], str | None],
) -> None:
    """A trainer pod changed: explain its TrainingJob's wait if what the pod says changed."""
    metadata = pod.get("metadata") or {}
    uid = _uid(pod)
    if event_type == "DELETED":
        _seen.pop(uid, None)
        return
    signature = _signature(pod)
    if _seen.get(uid) == signature:
        return
    _seen[uid] = signature
    namespace = metadata.get("namespace")
    job_name = (metadata.get("labels") or {}).get(JOB_NAME_LABEL)
    if not namespace or not job_name:
        return
    job = context.kube.get_child("Job", str(namespace), str(job_name))
    owner = None if job is None else owner_of(job)
    if job is None or owner is None:
        return
    explain_waiting(context, str(namespace), owner, plural=plural, job=job)
