"""The TrainingJob controller: plan, create the trainer's children, follow its Job.

Level-based: every trigger (the TrainingJob created, changed or found at
start-up; any event of one of its Jobs) runs the same :func:`reconcile`,
which reads the object afresh (a creation event's own body is already
fresh), compares what exists with what should, and acts only on the
difference. The plan is stored in ``status.plan`` before any
child is created, so an operator restarted mid-reconcile re-reads it instead
of planning again; child names are deterministic and creation treats
409 AlreadyExists as success, so a restart creates no duplicates.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf

import trainwright.operator.admission as admission
import trainwright.operator.dataset_check as dataset_check
import trainwright.operator.modelexport as modelexport
from trainwright.api.v1alpha1 import GROUP, VERSION, InvalidResourceError, PlanStatus, TrainingJob
from trainwright.api.v1alpha1.trainingjob import spec_digest
from trainwright.operator import checkpoint_interval as checkpoints
from trainwright.operator import lifecycle, node_failures
from trainwright.operator.calibration_store import calibration_for, record_from_status
from trainwright.operator.context import OperatorContext, as_body, context_from_memo
from trainwright.operator.inventory import Inventory, build_inventory
from trainwright.operator.lifecycle import Action, JobState
from trainwright.operator.node_failures import NodeFailure
from trainwright.operator.planning import plan_trainingjob
from trainwright.operator.progress import (
    COMPLETION_INDEX_LABEL,
    OVERFITTING_CONDITION,
    metrics_endpoint,
    overfitting_condition,
    progress_status,
)
from trainwright.operator.status import (
    ConditionType,
    Phase,
    conditions_equal_ignoring_time,
    find_condition,
    set_condition,
    status_patch,
    utc_timestamp,
)
from trainwright.operator.throughput import throughput_patch
from trainwright.operator.tracking import Work
from trainwright.operator.transitions import OUT_OF_RESTARTS_REASONS, PLANNING_REASONS, exit_rule
from trainwright.operator.usage import running_since, usage_patch
from trainwright.operator.waiting import (
    kept_explanation,
    on_pod_event,
    pod_news,
    waiting_message,
)
from trainwright.resources import (
    JOB_LABEL,
    config_map_name,
    headless_service,
    needs_service,
    service_name,
    trainer_configmap,
    trainer_job,
    trainer_job_name,
)
from trainwright.resources.names import label_value

KIND = "TrainingJob"
PLURAL = "trainingjobs"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# After an out-of-memory exit the next plan must fit in this share of the failed plan's
# estimate: the planner's memory tolerance (issue 2 judges it at +-15%).
OOM_HEADROOM = 0.85
# Job states whose pods free their devices: the gang gate looks again.
_FREEING = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.SUSPENDED.value)

logger = logging.getLogger(__name__)


# Handlers ----------------------------------------------------------------------------------


def _wanted(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> bool:
    """kopf's filter, run in its event loop: an event of a generation already reconciled is
    the echo of the operator's own status write, and costs no thread (tracking.Tracker)."""
    metadata = body.get("metadata", {})
    key = (str(metadata.get("namespace") or "default"), str(metadata.get("name")))
    return context_from_memo(memo).tracker.wants(key, type, metadata.get("generation"))


@kopf.on.event(GROUP, VERSION, PLURAL, when=_wanted)
def on_trainingjob_event(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    """A TrainingJob found at start-up, created, edited or deleted.

    Raw events, not kopf's on.create/update/resume and timers: those cost every object a
    finalizer and kopf's bookkeeping annotations (three PATCHes) and a task per timer, and
    this controller needs neither (tracking.py says why). A new object's body is current
    until the operator first writes its status; otherwise the reconcile reads it afresh.
    """
    context = context_from_memo(memo)
    metadata = body.get("metadata", {})
    namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name"))
    if type == "DELETED":
        _forget(context, namespace, name)
        return
    context.tracker.start(functools.partial(_periodic, context))
    if body.get("status"):
        reconcile(context, namespace, name)
        return
    # A new TrainingJob: its plan now, its children once no other plan is being made
    # (plan_first.py: under a burst, every plan first).
    with context.plan_first.planning():
        planned = reconcile(
            context, namespace, name, body=copy.deepcopy(dict(body)), plan_only=True
        )
    if planned is not None:
        key = (namespace, name)
        passes = context.tracker.passes(key)
        context.plan_first.later(functools.partial(_make_children, context, key, planned, passes))


@dataclasses.dataclass(frozen=True)
class Planned:
    """What a plan-only pass leaves for its children's pass: the TrainingJob as the plan
    left it, and the Events it held back (the Planned one)."""

    body: dict[str, Any]
    events: tuple[tuple[str, str, str], ...]


def _make_children(
    context: OperatorContext, key: tuple[str, str], planned: Planned, passes: int | None
) -> None:
    """The rest of a new TrainingJob's first pass, after its plan (plan_first.py). The
    TrainingJob as the plan left it is current unless another pass ran since (an edit, its
    deletion): then it is read afresh."""
    for event in planned.events:
        context.post_event(planned.body, *event)
    if context.tracker.passes(key) == passes:
        reconcile(context, *key, body=planned.body, children_absent=True)
    else:
        reconcile(context, *key)


def _periodic(context: OperatorContext, key: tuple[str, str], work: Work) -> None:
    """The tracker's periodic passes: a retry after an error; the resync safety net (a Job
    event whose reconcile failed is not delivered again); the progress of a Running job;
    the Workload's message of one queued in Kueue (a Workload's changes fire no event of the
    Job)."""
    namespace, name = key
    if work is Work.PROGRESS:
        refresh_progress(context, namespace, name)
    else:
        reconcile(context, namespace, name, full=work is Work.RETRY)


def _forget(context: OperatorContext, namespace: str, name: str) -> None:
    """Children go with their owner (garbage collection); only the operator's memory of it
    and its gauges need forgetting."""
    context.metrics.forget_trainingjob(namespace, name)
    context.locks.discard(namespace, name)
    context.tracker.forget((namespace, name))
    if context.gang_gate is not None:
        context.gang_gate.forget(namespace, name, deleted=True)
        context.gang_gate.kick()  # its pods' devices are freed


def refresh_progress(context: OperatorContext, namespace: str, name: str) -> None:
    """Read rank 0's ``/progress`` and write ``status.progress`` if it changed, with the
    ``Overfitting`` condition once the trainer reports it.

    The trainer is read without the object's lock (a slow pod must not hold up its
    reconcile); the lock is taken to check the same attempt still runs and to write.
    """

    def running_attempt() -> tuple[dict[str, Any], str, int, dict[str, Any]] | None:
        body = context.kube.get_custom(PLURAL, namespace, name)
        status = dict((body or {}).get("status") or {})
        job_name = (status.get("children") or {}).get("job")
        if body is None or status.get("phase") != Phase.RUNNING or not job_name:
            return None
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        return status, str(job_name), generation, body

    found = running_attempt()
    if found is None:
        return
    pods = context.kube.list_pods(
        namespace, f"{JOB_NAME_LABEL}={found[1]},{COMPLETION_INDEX_LABEL}=0"
    )
    endpoints = [e for e in map(metrics_endpoint, pods) if e is not None]
    if context.progress_endpoint is not None:  # --progress-endpoint: rank 0 reached elsewhere
        endpoints = [context.progress_endpoint]
    document = context.fetch_progress(*endpoints[0]) if endpoints else None
    progress = progress_status(document, now=context.now()) if document else None
    with context.locks.hold(namespace, name):
        current = running_attempt()
        if current is None or current[1] != found[1]:
            return
        patch = _progress_patch(context, current[0], progress, current[2]) if progress else {}
        # The pods hold their GPUs whether or not rank 0 answered: usage accrues either way.
        patch |= usage_patch(current[3], current[0], progress, now=context.now())
        if patch:
            context.kube.patch_status(PLURAL, namespace, name, patch)
            context.metrics.set_usage(namespace, name, patch.get("usage"))
    if "throughput" in patch:
        body = current[3] | {"status": current[0] | patch}
        record_from_status(context.calibration_store, body, now=context.now())


def _progress_patch(
    context: OperatorContext, status: Mapping[str, Any], progress: Any, generation: int
) -> dict[str, Any]:
    """``status.progress``, the ``Overfitting`` condition and the throughput readings for a
    reading of rank 0's progress; only what changed."""
    patch: dict[str, Any] = {}
    manifest = progress.to_manifest()
    if status.get("progress") != manifest:
        patch["progress"] = manifest
    conditions = _overfitting_conditions(context, status, progress, generation)
    if conditions is not None:
        patch["conditions"] = conditions
    if "progress" in patch:  # a new reading (the same one twice is not two)
        patch |= throughput_patch(
            status,
            patch.get("conditions"),
            progress,
            generation=generation,
            now=context.now(),
            window=context.throughput_window,
        )
    return patch


def _overfitting_conditions(
    context: OperatorContext, status: Mapping[str, Any], progress: Any, generation: int
) -> list[dict[str, Any]] | None:
    """The conditions with ``Overfitting`` set from the progress; None when nothing changes.

    It appears once the trainer reports overfitting and stays (True or False) after.
    """
    found = overfitting_condition(progress)
    current = list(status.get("conditions") or [])
    if found is None or (not found[0] and find_condition(current, OVERFITTING_CONDITION) is None):
        return None
    value, reason, message = found
    updated = set_condition(
        current,
        type_=OVERFITTING_CONDITION,
        status=value,
        reason=reason,
        message=message,
        generation=generation,
        now=context.now(),
    )
    return None if conditions_equal_ignoring_time(current, updated) else updated


_GATE_LOCK = threading.Lock()


def gang_gate(context: OperatorContext) -> admission.GangGate:
    """The context's gang gate, made on first use with the reconcile as its callback."""
    with _GATE_LOCK:
        if context.gang_gate is None:
            context.gang_gate = admission.GangGate(
                context.kube,
                lambda namespace, name: reconcile(context, namespace, name, full=False),
            )
        return context.gang_gate


def _job_news(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> bool:
    """A trainer Job event that changes something the TrainingJob reports (see
    :func:`lifecycle.job_signature`); kopf runs this in its event loop, so the job
    controller's many other status updates cost no thread."""
    if type == "DELETED":
        return True
    key = (str(body.get("metadata", {}).get("namespace")), str(body["metadata"]["name"]))
    return context_from_memo(memo).job_signatures.get(key) != lifecycle.job_signature(body)


@kopf.on.event("batch", "v1", "jobs", labels={JOB_LABEL: kopf.PRESENT}, when=_job_news)
def on_trainer_job_event(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    """A trainer Job changed (pods ready, done, failed, deleted): reconcile its owner."""
    owner = owner_name(body)
    namespace = body.get("metadata", {}).get("namespace")
    if owner is None or namespace is None or not _job_news(body, type, memo):
        return
    context = context_from_memo(memo)
    key = (str(namespace), str(body["metadata"]["name"]))
    signature = lifecycle.job_signature(body)
    job = None if type == "DELETED" else copy.deepcopy(dict(body))
    reconcile(context, key[0], owner, full=False, job=job)
    if context.gang_gate is not None and (type == "DELETED" or signature[0] in _FREEING):
        context.gang_gate.kick()  # its pods leave their devices: a waiting gang may fit
    if type == "DELETED":
        context.job_signatures.pop(key, None)
    else:
        context.job_signatures[key] = signature


@kopf.on.event("batch", "v1", "jobs", labels={dataset_check.CHECK_LABEL: kopf.PRESENT})
def on_dataset_check_event(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    """A dataset check Job finished: its TrainingJob reads the report, then plans or fails."""
    owner = owner_name(body)
    namespace = body.get("metadata", {}).get("namespace")
    if owner is None or namespace is None or type == "DELETED":
        return
    if lifecycle.job_state(body) in (JobState.SUCCEEDED, JobState.FAILED):
        reconcile(context_from_memo(memo), str(namespace), owner)


def _pod_news(body: kopf.Body, type: str | None, **_: Any) -> bool:
    """A trainer pod event worth a thread: the cluster disrupted the pod, or what it says
    about starting changed (kopf runs this in its event loop)."""
    return node_failures.pod_disruption(body, deleted=type == "DELETED") is not None or pod_news(
        body, type
    )


@kopf.on.event("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT}, when=_pod_news)
def on_trainer_pod_event(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    """A trainer pod's status changed: if it cannot start, its TrainingJob says why
    (trainwright.operator.waiting) within seconds, with the pod's name; if the cluster evicted
    or deleted it, the gang restarts (trainwright.operator.node_failures)."""
    context = context_from_memo(memo)
    failure = node_failures.pod_disruption(body, deleted=type == "DELETED")
    if failure is not None and failure.job:
        namespace = str(body.get("metadata", {}).get("namespace") or "default")
        _restart_for(context, namespace, failure)
    on_pod_event(context, body, type, plural=PLURAL, owner_of=owner_name)


def _node_news(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> bool:
    """A node event that changes its readiness, devices or schedulability (kopf runs this in
    its event loop: the kubelets' heartbeats, every node every few seconds, cost no thread)."""
    return type == "DELETED" or context_from_memo(memo).node_failures.changed(dict(body))


@kopf.on.event("", "v1", "nodes", when=_node_news)
def on_node_event(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
    """A node went NotReady/Unknown or was deleted: every TrainingJob with a trainer pod on it
    restarts its gang now, not after the taint manager's 5-minute eviction."""
    context = context_from_memo(memo)
    if context.gang_gate is not None and context.gang_gate.waiting():
        context.gang_gate.kick()  # a node added, back, or gone: waiting gangs fit differently
    name = str(body.get("metadata", {}).get("name") or "")
    reason = context.node_failures.observe(dict(body), deleted=type == "DELETED", now=context.now())
    if reason is None or not name:
        return
    pods = context.kube.list_pods_on_node(name, JOB_LABEL)
    for pod in node_failures.pods_on_node(pods, name):
        metadata = pod.get("metadata") or {}
        job_name = (metadata.get("labels") or {}).get(JOB_NAME_LABEL)
        if job_name and not metadata.get("deletionTimestamp"):  # not an old attempt's
            failure = NodeFailure(reason, name, str(metadata.get("name")), str(job_name))
            _restart_for(context, str(metadata.get("namespace") or "default"), failure)


def _restart_for(context: OperatorContext, namespace: str, failure: NodeFailure) -> None:
    """Reconcile the TrainingJob whose trainer Job ``failure.job`` lost a pod."""
    trainer = context.kube.get_child("Job", namespace, str(failure.job))
    owner = None if trainer is None else owner_name(trainer)
    if trainer is not None and owner is not None:
        reconcile(context, namespace, owner, full=False, job=trainer, infrastructure=failure)


def owner_name(job: Mapping[str, Any]) -> str | None:
    """The TrainingJob that owns a Job, from its controller owner reference."""
    for reference in (job.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("kind") == KIND and str(reference.get("apiVersion", "")).startswith(
            f"{GROUP}/"
        ):
            return str(reference["name"])
    return None


# Reconcile ---------------------------------------------------------------------------------


def reconcile(
    context: OperatorContext,
    namespace: str,
    name: str,
    *,
    full: bool = True,
    body: dict[str, Any] | None = None,
    job: dict[str, Any] | None = None,
    infrastructure: NodeFailure | None = None,
    plan_only: bool = False,
    children_absent: bool = False,
) -> Planned | None:
    """Bring one TrainingJob and its children to where its spec and status say.

    ``full`` also re-checks the ConfigMap and Service while the Job exists;
    Job events skip that (they were created before the Job) and pass the Job
    they carry as ``job``. ``body`` skips reading the TrainingJob (a creation
    event's body, before any status exists); otherwise it is read afresh.
    ``infrastructure``: a node or pod of the Job ``infrastructure.job`` was lost.

    ``plan_only``: a pass that makes a new plan ends once it is written and returns the
    TrainingJob as written with the Events it held back, for a later pass with
    ``children_absent`` (nothing of the plan exists yet: created without reading first) to
    make its children; otherwise None.
    """
    key = (namespace, name)
    with context.locks.hold(namespace, name), context.metrics.reconcile(KIND):
        try:
            current = body if body is not None else context.kube.get_custom(PLURAL, namespace, name)
            if current is None:  # gone (its DELETED event may have been missed): no more passes
                context.tracker.forget(key)
                return None
            if current["metadata"].get("deletionTimestamp"):
                return None
            done = _Reconcile(
                context,
                current,
                full=full,
                known_job=job,
                lost=infrastructure,
                plan_only=plan_only,
                children_absent=children_absent,
            )
            done.run()
        except kopf.TemporaryError as error:
            context.tracker.failed(key, error.delay)
            raise
        except Exception:
            context.tracker.failed(key)
            raise
        generation = int(current["metadata"].get("generation") or 1)
        context.tracker.observe(key, generation, done.status, current.get("spec") or {})
    if done.status.get("phase") != (current.get("status") or {}).get("phase"):
        # Exports wait for this job's success (outside its lock: they read it afresh).
        modelexport.trainingjob_changed(context, namespace, name, current | {"status": done.status})
    if not done.stopped_at_plan:
        for event in done.held_events or ():  # a plan-only pass that made no plan
            context.post_event(current, *event)
        return None
    return Planned(current | {"status": done.status}, tuple(done.held_events or ()))


class _Reconcile:
    """One pass over one TrainingJob; each method handles one concern."""

    def __init__(
        self,
        context: OperatorContext,
        body: dict[str, Any],
        *,
        full: bool,
        known_job: dict[str, Any] | None = None,
        lost: NodeFailure | None = None,
        plan_only: bool = False,
        children_absent: bool = False,
    ) -> None:
        self.context = context
        self.known_job = known_job
        self.lost = lost  # an infrastructure failure the node or pod watch saw
        self.kube = context.kube
        self.body = body
        self.full = full
        self.namespace = str(body["metadata"]["namespace"])
        self.name = str(body["metadata"]["name"])
        self.generation = int(body["metadata"].get("generation") or 1)
        self.status: dict[str, Any] = dict(body.get("status") or {})
        # Planned in this pass, or in the plan-only pass just before: no child exists yet.
        self.fresh_plan = children_absent
        self.plan_only = plan_only
        self.stopped_at_plan = False  # plan_only and a new plan was written: children later
        # A plan-only pass's Events, posted by the children's pass (after the burst of plans).
        self.held_events: list[tuple[str, str, str]] | None = [] if plan_only else None
        self.replanned = False  # the spec changed under a stored plan: a new attempt
        self.first_attempt = 0
        # A Failed run given more restarts: this pass clears Failed, saying why.
        self.resumed: str | None = None
        self.digest: str | None = None  # spec_digest of the parsed spec

    # Entry ---------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            job = TrainingJob.from_body(self.body)
        except InvalidResourceError as exc:
            if not self._terminal_and_final():
                self._fail_planning("InvalidSpec", str(exc), plan=None)
            return
        self.digest = spec_digest(job.spec)
        if self._spec_changed():
            self._discard_plan()
        elif self._restarts_raised(job):
            self.resumed = f"spec.maxRestarts raised to {job.spec.max_restarts}"
            logger.info(
                "%s %s/%s: spec.maxRestarts raised; resuming", KIND, self.namespace, self.name
            )
        elif self._terminal_and_final():
            self._record_metrics()
            return
        if not self.status.get("plan") and not self._dataset_ready(job):
            return
        plan = self._ensure_plan(job)
        if plan is None:
            return
        if self.plan_only and self.fresh_plan:
            self.stopped_at_plan = True
            return
        attempt = int(self.status.get("attempt") or 0)
        trainer = self._ensure_children(job, plan, attempt)
        self._delete_stale_attempts(job, attempt)
        self._follow(job, plan, attempt, trainer)

    def _terminal_and_final(self) -> bool:
        """Succeeded stays; Failed stays unless planning failed and the spec changed since."""
        phase = self.status.get("phase")
        if phase == Phase.SUCCEEDED:
            return True
        if phase != Phase.FAILED:
            return False
        planned = find_condition(self.status.get("conditions") or [], ConditionType.PLANNED)
        if planned is None or planned.get("status") == "True":
            return True
        retry = planned.get("reason") in PLANNING_REASONS and self.generation > int(
            planned.get("observedGeneration") or 0
        )
        if retry:
            self.status.pop("plan", None)
        return not retry

    def _restarts_raised(self, job: TrainingJob) -> bool:
        """A run that failed for want of restarts, and spec.maxRestarts now allows another.

        The failed attempt is followed again, so the usual failure handling starts
        the next attempt from the last checkpoint (or re-plans after exit code 76).
        """
        if self.status.get("phase") != Phase.FAILED or not self.status.get("plan"):
            return False
        failed = find_condition(self.status.get("conditions") or [], ConditionType.FAILED)
        if failed is None or failed.get("reason") not in OUT_OF_RESTARTS_REASONS:
            return False
        edited_since = self.generation > int(failed.get("observedGeneration") or 0)
        return edited_since and job.spec.max_restarts > int(self.status.get("restarts") or 0)

    def _spec_changed(self) -> bool:
        """The spec was edited after its plan was made, and no trainer pod is running.

        The API server freezes the plan's inputs while the job is Running; Planned
        (pods not yet up), Suspended and Failed runs follow an edit. A Succeeded run
        is done: training again is a new TrainingJob.
        """
        stored = self.status.get("specDigest")
        phase = self.status.get("phase")
        if not stored or not self.status.get("plan"):
            return False
        if phase in (Phase.SUCCEEDED, Phase.RUNNING):
            return False
        return bool(stored != self.digest)

    def _discard_plan(self) -> None:
        """Delete the current attempt's Job and trainer config; the next attempt re-plans.

        The Service is kept: its name and selector depend only on the TrainingJob.
        """
        children = self.status.get("children") or {}
        if children.get("job"):
            self.kube.delete_job(self.namespace, str(children["job"]))
        if children.get("configMap"):
            self.kube.delete_child("ConfigMap", self.namespace, str(children["configMap"]))
        self.status.pop("plan", None)
        self.replanned = True
        # A new Job name when one existed: the old one may still be terminating.
        attempt = int(self.status.get("attempt") or 0)
        self.first_attempt = attempt + 1 if children.get("job") else attempt

    # Plan ----------------------------------------------------------------------------------

    def _dataset_ready(self, job: TrainingJob) -> bool:
        """Whether planning may go on: the dataset check passed, was skipped or is off.

        While the check's CPU pod runs the job stays Pending; a dataset the trainer would
        refuse ends it Failed (DataError) before any trainer Job exists
        (trainwright.operator.dataset_check).
        """
        outcome = dataset_check.run_check(
            self.context, job, self.status, generation=self.generation, create=self._create
        )
        if outcome is None or outcome.status == self.status.get("dataset"):
            return outcome is None or outcome.state in (dataset_check.PASSED, dataset_check.SKIPPED)
        extra: dict[str, Any] = {"dataset": outcome.status}
        checked = dataset_check.condition(outcome)
        if outcome.state == dataset_check.FAILED:
            message = dataset_check.data_error_message(job, outcome.status)
            extra |= {
                "message": message,
                "specDigest": self.digest,
                "completionTime": utc_timestamp(self.context.now()),
            }
            self._write(
                Phase.FAILED,
                [
                    checked,
                    (ConditionType.PLANNED, False, "DataError", message),
                    (ConditionType.FAILED, True, "DataError", message),
                ],
                extra=extra,
            )
            return False
        self._write(Phase.PENDING, [checked], extra=extra | {"message": outcome.message})
        return outcome.state != dataset_check.CHECKING

    def _ensure_plan(self, job: TrainingJob) -> PlanStatus | None:
        stored = self.status.get("plan")
        if stored:
            return PlanStatus.model_validate(stored)
        if job.spec.queue is not None:
            missing = admission.missing_queue_message(self.kube, self.namespace, job.spec.queue)
            if missing is not None:
                self._fail_planning(admission.QUEUE_NOT_FOUND, missing, plan=None)
                return None
        # A plan is checked against what the cluster can hold (busy GPUs only make the
        # gang wait); with gpuType: auto and a deadline, also against what is free now.
        # The dataset check's token count, when it measured one, sizes duration and cost.
        planning, measured = dataset_check.planning_job(job, self.status)
        outcome = plan_trainingjob(
            planning,
            self._planning_inventory(job),
            calibration=calibration_for(self.context.calibration_store, job),
        )
        if outcome.plan is None or outcome.reason != "Planned":
            self._fail_planning(outcome.reason, outcome.message, plan=outcome.plan)
            return None
        plan = checkpoints.initial(job, outcome.plan)
        self.fresh_plan = True
        attempt = self.first_attempt
        children = {
            "configMap": config_map_name(job.name),
            "job": trainer_job_name(job.name, attempt, nodes=plan.nodes),
        }
        if needs_service(plan):
            children["service"] = service_name(job.name)
        message = outcome.message if measured is None else f"{outcome.message} {measured}"
        if self.replanned:
            message = f"Re-planned for the edited spec: {message}"
        conditions: list[tuple[str, bool | None, str, str]] = [
            # What the follow step will say once the Job exists, so it writes nothing.
            (ConditionType.RUNNING, False, "WaitingForPods", waiting_message(0, plan.nodes)),
            (ConditionType.PLANNED, True, "Planned", message),
        ]
        if self._has_condition(ConditionType.FAILED):
            # An edited spec cured an earlier failure (of the plan, or of the run).
            conditions.insert(0, (ConditionType.FAILED, False, "Replanned", message))
        extra: dict[str, Any] = {
            "plan": plan.to_manifest(),
            "attempt": attempt,
            "restarts": 0,
            "children": children,
            "specDigest": self.digest,
            "message": waiting_message(0, plan.nodes),
        }
        if self.replanned:
            # A new run of the edited spec: what the last one ended with no longer applies.
            extra |= {"lastExitCode": None, "completionTime": None}
        self._write(Phase.PLANNED, conditions, extra=extra)
        return plan

    def _planning_inventory(self, job: TrainingJob) -> Inventory:
        """The cluster's GPUs; free ones counted only where the plan may use them (a
        GPU type free now over a cheaper busy one before a deadline), since that lists
        every pod."""
        budget = job.spec.budget
        deadline = budget.deadline_seconds if budget is not None else None
        if job.spec.resources.gpu_type == "auto" and deadline is not None:
            return build_inventory(*self.kube.nodes_and_pods())
        return self.context.node_inventory.of(self.kube.nodes())

    def _fail_planning(self, reason: str, message: str, *, plan: PlanStatus | None) -> None:
        # The digest of the spec this failure is about: the next edit plans again.
        extra: dict[str, Any] = {"message": message, "specDigest": self.digest}
        if plan is not None:
            extra["plan"] = plan.to_manifest()
        self._write(
            Phase.FAILED,
            [
                (ConditionType.PLANNED, False, reason, message),
                (ConditionType.FAILED, True, reason, message),
            ],
            extra=extra,
        )

    # Children ------------------------------------------------------------------------------

    def _ensure_children(self, job: TrainingJob, plan: PlanStatus, attempt: int) -> dict[str, Any]:
        """ConfigMap, Service, then this attempt's Job: each read first, created if absent.

        Right after planning nothing can exist yet, so creation goes first (409
        still reads the existing object): three reads fewer per new TrainingJob. A Job
        event's pass (not ``full``) with the Job there builds nothing: the trainer config's
        YAML is most of the CPU of building the children.
        """
        existing: dict[str, Any] | None = None
        if not self.fresh_plan:
            name = trainer_job_name(job.name, attempt, nodes=plan.nodes)
            if self.known_job is not None and self.known_job["metadata"]["name"] == name:
                existing = self.known_job
            else:
                existing = self.kube.get_child("Job", self.namespace, name)
            if existing is not None and not self.full:
                return existing
        config_map = trainer_configmap(job, plan)
        manifests = [config_map]
        if needs_service(plan):
            manifests.append(headless_service(job))
        if self.fresh_plan:
            # Independent of each other: created at once, one round trip instead of three
            # (a Job whose ConfigMap is a moment late only has its pods wait for the mount).
            trainer = self._trainer_job(job, plan, attempt, config_map)
            created = self.kube.concurrently(
                [functools.partial(self._create, m) for m in (*manifests, trainer)]
            )
            return self._followed(job, created[-1])
        for manifest in manifests:
            if self.kube.get_child(manifest["kind"], self.namespace, manifest["metadata"]["name"]):
                continue
            self._create(manifest)
        if existing is not None:
            return existing
        return self._followed(job, self._create(self._trainer_job(job, plan, attempt, config_map)))

    def _followed(self, job: TrainingJob, created: dict[str, Any]) -> dict[str, Any]:
        """A Job this pass created and goes on to follow: its creation event carries nothing
        new, so its signature is noted as handled (on_trainer_job_event's filter skips it,
        one TrainingJob read fewer per new job). Not for a Job Kueue admits: Kueue makes its
        Workload a moment after the Job, too late for this pass to find it, and the creation
        event's pass finds it (the queue's name and position in the status at once)."""
        if job.spec.queue is None:
            key = (self.namespace, str(created["metadata"]["name"]))
            self.context.job_signatures[key] = lifecycle.job_signature(created)
        return created

    def _trainer_job(
        self,
        job: TrainingJob,
        plan: PlanStatus,
        attempt: int,
        config_map: dict[str, Any],
    ) -> dict[str, Any]:
        """This attempt's Job (its pods' config hash of ``config_map``), kept off the nodes
        that failed this job twice."""
        manifest = trainer_job(
            job, plan, attempt, default_image=self.context.trainer_image, config_map=config_map
        )
        avoided = node_failures.avoided_node_names(self.status)
        return node_failures.with_avoided_nodes(manifest, avoided)

    def _create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        kopf.adopt(manifest, owner=as_body(self.body))
        created = self.kube.create_child(manifest)
        owners = created["metadata"].get("ownerReferences") or []
        if not any(ref.get("uid") == self.body["metadata"].get("uid") for ref in owners):
            # A deleted TrainingJob of the same name still owns it; the garbage
            # collector removes it shortly, and its deletion event reconciles again.
            raise kopf.TemporaryError(
                f"{manifest['kind']} {self.namespace}/{manifest['metadata']['name']} still "
                "belongs to a deleted TrainingJob of the same name; waiting for its removal",
                delay=2,
            )
        logger.debug(
            "%s %s/%s: %s %s is there",
            KIND,
            self.namespace,
            self.name,
            manifest["kind"],
            manifest["metadata"]["name"],
        )
        return created

    def _delete_stale_attempts(self, job: TrainingJob, attempt: int) -> None:
        """Jobs of earlier attempts (a restart interrupted before it deleted them)."""
        if not self.full or attempt == 0:
            return
        for stale in self.kube.list_children(
            "Job", self.namespace, f"{JOB_LABEL}={label_value(job.name)}"
        ):
            labels = stale["metadata"].get("labels") or {}
            if labels.get("trainwright.io/attempt") != str(attempt):
                self.kube.delete_job(self.namespace, stale["metadata"]["name"])

    # Follow the Job ------------------------------------------------------------------------

    def _follow(
        self, job: TrainingJob, plan: PlanStatus, attempt: int, trainer: dict[str, Any]
    ) -> None:
        state = lifecycle.job_state(trainer)
        if state in (JobState.WAITING, JobState.RUNNING, JobState.SUSPENDED):
            state = self._sync_suspend(job, trainer, state)
        if state is JobState.SUSPENDED and not job.spec.suspend:
            if self._queued(job, plan, trainer):  # neither Kueue nor the gang gate let it go yet
                return
            state = JobState.WAITING
        elif self.context.gang_gate is not None:
            self.context.gang_gate.forget(self.namespace, self.name)
        if self.lost is not None and self._lost_from(trainer, state):
            self._after_node_failure(job, plan, attempt, str(self.lost.job), self.lost)
            return
        if state is JobState.FAILED:
            self._after_failure(job, plan, attempt, trainer)
            return
        phase, conditions, extra = self._report(state, plan, trainer)
        self._write(phase, conditions, extra=extra)

    def _lost_from(self, trainer: dict[str, Any], state: JobState) -> bool:
        """The lost node or pod belongs to this attempt, which is starting or running."""
        if self.lost is None or self.lost.job != trainer["metadata"]["name"]:
            return False
        suspended = bool((trainer.get("spec") or {}).get("suspend"))
        return state in (JobState.WAITING, JobState.RUNNING) and not suspended

    def _sync_suspend(self, job: TrainingJob, trainer: dict[str, Any], state: JobState) -> JobState:
        """spec.suspend: true stops the Job; false never unsuspends it here: Kueue
        (spec.queue) or the gang gate releases a suspended Job once its gang fits."""
        if not job.spec.suspend:
            return state
        if job.spec.queue is not None:
            # Kueue would restart a Job suspended under an admitted Workload: deactivate it.
            workload = admission.find_workload(self.kube, self.namespace, trainer)
            if workload is not None:
                admission.set_workload_active(self.kube, self.namespace, workload, False)
        if not (trainer.get("spec") or {}).get("suspend"):
            self.kube.set_job_suspend(self.namespace, trainer["metadata"]["name"], True)
        return JobState.SUSPENDED

    def _queued(self, job: TrainingJob, plan: PlanStatus, trainer: dict[str, Any]) -> bool:
        """Phase Queued while the suspended Job waits for Kueue or for free devices.

        False when the gang may start (Kueue admitted it, or the gate released it and the
        Job's unsuspension is on its way): the caller reports it as waiting for pods.
        """
        job_name = str(trainer["metadata"]["name"])
        if job.spec.queue is not None:
            workload = admission.find_workload(self.kube, self.namespace, trainer)
            if workload is not None:  # deactivated while spec.suspend was true
                admission.set_workload_active(self.kube, self.namespace, workload, True)
            verdict = admission.kueue_verdict(workload, queue=job.spec.queue, job_name=job_name)
            if workload is not None and not verdict.admitted:
                pending = self.kube.pending_workloads(self.namespace, job.spec.queue)
                name = str(workload["metadata"]["name"])
                verdict = admission.with_queue_position(verdict, pending, name)
        else:
            gang = admission.Gang(
                self.namespace,
                self.name,
                job_name,
                plan.gpu_type,
                plan.nodes,
                plan.gpus_per_node,
                str(self.body["metadata"].get("creationTimestamp") or ""),
            )
            found = gang_gate(self.context).wait(gang)
            if found is None and self.status.get("phase") == Phase.PLANNED:
                # The gate's pass follows within a second: most gangs fit, so "Planned,
                # waiting for pods" stays until it says otherwise (one status write fewer).
                return True
            verdict = found or admission.Verdict(
                False,
                admission.WAITING_FOR_CAPACITY,
                f"Waiting for the gang check: {plan.nodes} pod(s) x {plan.gpus_per_node} "
                f"{plan.gpu_type} must all fit on free devices before the Job starts.",
            )
        if verdict.admitted:
            return False
        conditions: list[tuple[str, bool | None, str, str]] = [
            (ConditionType.RUNNING, False, verdict.reason, verdict.message)
        ]
        if self._has_condition(ConditionType.SUSPENDED):
            conditions.append((ConditionType.SUSPENDED, False, "Resumed", "Resumed."))
        conditions.append((ConditionType.ADMITTED, False, verdict.reason, verdict.message))
        extra: dict[str, Any] = {"message": verdict.message}
        if self.resumed:  # a Failed run given more restarts, its new attempt queued
            conditions, extra = self._resumed(
                conditions, extra, f"{self.resumed}: {verdict.message}"
            )
        preempted = verdict.reason in (admission.PREEMPTED, admission.EVICTED)
        self._write(
            Phase.QUEUED,
            conditions,
            extra=extra,
            event_type="Warning" if preempted else None,
        )
        return True

    def _report(
        self, state: JobState, plan: PlanStatus, trainer: dict[str, Any]
    ) -> tuple[Phase, list[tuple[str, bool | None, str, str]], dict[str, Any]]:
        """Phase, conditions and extra status for a Job that has not failed."""
        ready = int((trainer.get("status") or {}).get("ready") or 0)
        pods = f"{ready} of {plan.nodes} trainer pod(s) ready"
        now = utc_timestamp(self.context.now())
        extra: dict[str, Any] = {}
        conditions: list[tuple[str, bool | None, str, str]] = []
        if state is JobState.SUCCEEDED:
            message = f"Training finished: all {plan.nodes} trainer pod(s) completed."
            conditions = [
                (ConditionType.RUNNING, False, "Completed", message),
                (ConditionType.SUCCEEDED, True, "Completed", message),
            ]
            extra = {"completionTime": self.status.get("completionTime") or now}
        elif state is JobState.SUSPENDED:
            message = "Suspended by spec.suspend; the trainer pods are stopped."
            conditions = [
                (ConditionType.RUNNING, False, "Suspended", message),
                (ConditionType.SUSPENDED, True, "Suspended", message),
            ]
        elif state is JobState.RUNNING:
            message = f"Training: {pods}."
            conditions = [(ConditionType.RUNNING, True, "PodsReady", message)]
            extra = {"startTime": self.status.get("startTime") or now}
        else:
            message = waiting_message(ready, plan.nodes)
            conditions = [(ConditionType.RUNNING, False, "WaitingForPods", message)]
            kept = kept_explanation(self.status, ready)  # why the pods do not start
            if kept is not None:
                message = kept[1]
                conditions = [(ConditionType.RUNNING, False, *kept)]
        if state is not JobState.SUSPENDED and self._has_condition(ConditionType.SUSPENDED):
            conditions.append((ConditionType.SUSPENDED, False, "Resumed", "Resumed."))
        if state in (JobState.WAITING, JobState.RUNNING) and self._has_condition(
            ConditionType.ADMITTED
        ):  # after Queued; first in the list: the last one is announced
            conditions.insert(0, self._admitted_condition(plan))
        extra["message"] = message
        if self.resumed:  # the failed Job was already gone: its attempt was created again
            conditions, extra = self._resumed(conditions, extra, f"{self.resumed}: {message}")
        return lifecycle.phase_for_job_state(state), conditions, extra

    def _admitted_condition(self, plan: PlanStatus) -> tuple[str, bool | None, str, str]:
        queue = (self.body.get("spec") or {}).get("queue")
        message = (
            f"Kueue admitted the whole gang in LocalQueue {queue}."
            if queue
            else f"All {plan.nodes} trainer pod(s) fit on free {plan.gpu_type}; the gang started."
        )
        return ConditionType.ADMITTED, True, admission.ADMITTED, message

    def _resumed(
        self,
        conditions: list[tuple[str, bool | None, str, str]],
        extra: dict[str, Any],
        message: str,
    ) -> tuple[list[tuple[str, bool | None, str, str]], dict[str, Any]]:
        """What a pass that resumed a Failed run writes besides its own conditions."""
        cleared = (ConditionType.FAILED, False, "MaxRestartsRaised", message)
        return [cleared, *conditions], extra | {"message": message, "completionTime": None}

    def _has_condition(self, type_: str) -> bool:
        return find_condition(self.status.get("conditions") or [], type_) is not None

    def _after_failure(
        self, job: TrainingJob, plan: PlanStatus, attempt: int, trainer: dict[str, Any]
    ) -> None:
        trainer_name = str(trainer["metadata"]["name"])
        pods = self.kube.list_pods(self.namespace, f"{JOB_NAME_LABEL}={trainer_name}")
        exit_code = lifecycle.failed_exit_code(pods)
        if exit_rule(exit_code).action is Action.RESTART:  # a crash: did the cluster cause it?
            lost = node_failures.failure_of_pods(pods, self.kube.nodes())
            if lost is not None:
                self._after_node_failure(job, plan, attempt, trainer_name, lost)
                return
        decision = lifecycle.decide_after_failure(
            exit_code=exit_code,
            restarts=int(self.status.get("restarts") or 0),
            max_restarts=job.spec.max_restarts,
            job_reason=lifecycle.job_failure_reason(trainer),
        )
        extra: dict[str, Any] = {"lastExitCode": exit_code, "message": decision.message}
        if decision.action is Action.FAIL:
            self._fail_run(decision.reason, decision.message, extra)
            return
        conditions: list[tuple[str, bool | None, str, str]] = [
            (ConditionType.RUNNING, False, decision.reason, decision.message)
        ]
        if self.resumed:
            resumed = f"{self.resumed}: {decision.message}"
            conditions = [(ConditionType.RUNNING, False, decision.reason, resumed)]
            conditions, extra = self._resumed(conditions, extra, resumed)
        if decision.action is Action.RESTART:
            # intervalSteps: auto: the next attempt saves at Young/Daly's measured interval.
            tuned = checkpoints.for_next_attempt(job, plan, self.status, *self._failures())
            self._start_next_attempt(
                job,
                tuned or plan,
                attempt,
                trainer_name,
                conditions,
                extra,
                new_plan=tuned is not None,
            )
            return
        # REPLAN (exit 76): the estimate that ran out of memory was short by an unknown
        # amount; the next plan must fit in OOM_HEADROOM of it, which can take more GPUs,
        # a sharded strategy or another GPU type where the spec leaves them open.
        capacity = plan.memory_capacity_bytes or plan.memory_per_gpu_bytes
        fraction = min(1.0, OOM_HEADROOM * plan.memory_per_gpu_bytes / max(capacity, 1))
        inventory = self.context.node_inventory.of(self.kube.nodes())
        outcome = plan_trainingjob(
            dataset_check.planning_job(job, self.status)[0],
            inventory,
            memory_fraction=fraction,
            calibration=calibration_for(self.context.calibration_store, job),
        )
        new = outcome.plan if outcome.reason == "Planned" else None
        if new is not None:
            new = checkpoints.for_next_attempt(
                job, new, self.status, *self._failures()
            ) or checkpoints.initial(job, new)
        if new is None or lifecycle.same_gpus_and_strategy(new, plan):
            # A plan no different from the failed one would fail the same way.
            found = "the same layout" if new is not None else outcome.message
            message = (
                f"{lifecycle.NEEDS_REPLAN_ADVICE} Planning again with at most {fraction:.0%} of "
                f"each GPU's memory found {found.rstrip('.')}."
            )
            self._fail_run("NeedsReplan", message, extra | {"message": message})
            return
        conditions.append(
            (ConditionType.PLANNED, True, "Replanned", f"After exit code 76: {outcome.message}")
        )
        self._start_next_attempt(job, new, attempt, trainer_name, conditions, extra, new_plan=True)

    def _failures(self) -> tuple[Any, node_failures.FailureRecord]:
        """Now, and the cluster's node failures (the MTBF of checkpoint.intervalSteps: auto)."""
        now = self.context.now()
        return now, self.context.node_failures.record(now)

    def _after_node_failure(
        self, job: TrainingJob, plan: PlanStatus, attempt: int, trainer_name: str, lost: NodeFailure
    ) -> None:
        """The cluster lost a node or a pod of this attempt: the whole gang restarts from its
        checkpoint without using spec.maxRestarts, or the run fails past the bound."""
        decision = node_failures.decide(self.status, lost, attempt=attempt, now=self.context.now())
        extra = decision.status | {"message": decision.message}
        if not decision.restart:
            self._fail_run(decision.reason, decision.message, extra)
            return
        tuned = checkpoints.for_next_attempt(job, plan, self.status, *self._failures())
        self._start_next_attempt(
            job,
            tuned or plan,
            attempt,
            trainer_name,
            [(ConditionType.RUNNING, False, decision.reason, decision.message)],
            extra,
            new_plan=tuned is not None,
            uses_restart=False,
        )

    def _fail_run(self, reason: str, message: str, extra: dict[str, Any]) -> None:
        extra = extra | {"completionTime": utc_timestamp(self.context.now())}
        self._write(
            Phase.FAILED,
            [
                (ConditionType.RUNNING, False, reason, message),
                (ConditionType.FAILED, True, reason, message),
            ],
            extra=extra,
        )

    def _start_next_attempt(
        self,
        job: TrainingJob,
        plan: PlanStatus,
        attempt: int,
        trainer_name: str,
        conditions: list[tuple[str, bool | None, str, str]],
        extra: dict[str, Any],
        *,
        new_plan: bool = False,
        uses_restart: bool = True,
    ) -> None:
        """Attempt N+1 on ``plan``, resuming from the checkpoint; the failed Job goes.
        ``uses_restart``: counts against spec.maxRestarts (not after a node failure).

        Status names the next attempt before anything is deleted or created: if the
        operator dies in between, the next reconcile creates that attempt and deletes
        this one as stale. A new plan also replaces the trainer config, removed first
        so that reconcile recreates it from the new plan.
        """
        if new_plan:
            self.kube.delete_child("ConfigMap", self.namespace, config_map_name(job.name))
        next_attempt = attempt + 1
        next_name = trainer_job_name(job.name, next_attempt, nodes=plan.nodes)
        extra = extra | {
            "restarts": int(self.status.get("restarts") or 0) + int(uses_restart),
            "attempt": next_attempt,
            "children": {**(self.status.get("children") or {}), "job": next_name},
        }
        if new_plan:
            extra["plan"] = plan.to_manifest()
        self._write(Phase.PLANNED, conditions, extra=extra, event_type="Warning")
        self.kube.delete_job(self.namespace, trainer_name)
        config_map = trainer_configmap(job, plan)
        if new_plan:
            self._create(config_map)
        self._create(self._trainer_job(job, plan, next_attempt, config_map))

    # Status --------------------------------------------------------------------------------

    def _write(
        self,
        phase: Phase,
        conditions: list[tuple[str, bool | None, str, str]],
        *,
        extra: dict[str, Any] | None = None,
        event_type: str | None = None,
    ) -> None:
        """Patch status if it changed; post an Event when the phase or a reason changes.

        A write that ends a running attempt (Running turns False: done, failed, restarted,
        preempted) also accounts its usage up to now in the same patch: the progress
        timer's last tick may be up to its interval old, and a short run may have had none.
        """
        now = self.context.now()
        ends_run = any(t == ConditionType.RUNNING and v is False for t, v, _, _ in conditions)
        if ends_run and running_since(self.status) is not None:
            extra = (extra or {}) | usage_patch(self.body, self.status, None, now=now)
        current = list(self.status.get("conditions") or [])
        updated = current
        for type_, value, reason, message in conditions:
            updated = set_condition(
                updated,
                type_=type_,
                status=value,
                reason=reason,
                message=message,
                generation=self.generation,
                now=now,
            )
        patch = status_patch(
            self.status, phase=phase, conditions=updated, generation=self.generation, extra=extra
        )
        if patch is not None:
            self.kube.patch_status(PLURAL, self.namespace, self.name, patch)
            self._announce(phase, conditions, event_type)
            self.status |= patch
        self._record_metrics()

    def _announce(
        self,
        phase: Phase,
        conditions: list[tuple[str, bool | None, str, str]],
        event_type: str | None,
    ) -> None:
        old_phase = self.status.get("phase")
        type_, _, reason, message = conditions[-1]
        old = find_condition(self.status.get("conditions") or [], type_)
        if old_phase == phase and old is not None and old.get("reason") == reason:
            return
        if reason == "WaitingForPods":  # the Planned event just said it; not worth another
            return
        warning = event_type == "Warning" or phase is Phase.FAILED
        event = ("Warning" if warning else "Normal", reason, message)
        if self.held_events is not None:
            self.held_events.append(event)
        else:
            self.context.post_event(self.body, *event)
        logger.info("%s %s/%s: %s: %s", KIND, self.namespace, self.name, phase.value, message)

    def _record_metrics(self) -> None:
        metrics = self.context.metrics
        phase = self.status.get("phase")
        if phase in set(Phase):
            metrics.set_phase(self.namespace, self.name, Phase(phase))
        plan = self.status.get("plan")
        if plan:
            metrics.set_plan(
                self.namespace,
                self.name,
                gpus=int(plan.get("numGpus") or 0),
                cost_usd=plan.get("estimatedCostUsd"),
            )
        metrics.set_trainingjob_status(self.namespace, self.name, self.status)
