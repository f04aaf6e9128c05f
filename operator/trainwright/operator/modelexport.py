"""The ModelExport controller: wait for the source, run one export Job, report what it wrote.

Level-based like the TrainingJob controller: every trigger (the ModelExport
created, changed or found at start-up; an event of its Job; its TrainingJob's
phase changing; a resync timer while it waits) runs :func:`reconcile`, which
reads the object afresh and acts on the difference:

1. Source: a TrainingJob source must exist and have Succeeded
   (``SourceReady=False`` with the reason while it has not; Failed if it failed
   or does not exist); a URI source is ready at once.
2. Version: ``status.version`` is decided once, before the Job exists, under a
   lock per (namespace, modelName): ``spec.version`` if no other export of that
   name holds it, else the next minor after the highest (``resources.export.next_version``).
3. Job: one ConfigMap and one Job, named after the ModelExport, created if absent
   (409 reads the existing one), adopted (owner references), so deleting the
   ModelExport removes them; the exported files are never deleted.
4. Result: the finished pod's termination message carries the exporter's summary
   (artifacts, sizes, sha256, checkpoint step, verification), copied into
   ``status.artifacts``, ``status.sizeBytes`` and ``status.lineage``.

A TrainingJob whose ``spec.export`` is set gets a ModelExport named
``<trainingjob>-export`` (owned by it) once it succeeds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf

from trainwright.api.v1alpha1 import GROUP, VERSION, InvalidResourceError, ModelExport, TrainingJob
from trainwright.api.v1alpha1.modelexport import ExportSource
from trainwright.operator import lifecycle
from trainwright.operator.context import OperatorContext, as_body, context_from_memo
from trainwright.operator.lifecycle import JobState
from trainwright.operator.status import (
    ConditionType,
    Phase,
    set_condition,
    status_patch,
    utc_timestamp,
)
from trainwright.resources.export import (
    EXPORT_LABEL,
    ExportInputs,
    artifacts_from_summary,
    export_configmap,
    export_job,
    export_job_name,
    last_line,
    model_location,
    model_params,
    next_version,
    parse_summary,
    training_checkpoint_uri,
    training_output_uri,
)
from trainwright_trainer.exitcodes import PERMANENT_EXIT_CODES

KIND = "ModelExport"
PLURAL = "modelexports"
TRAININGJOBS = "trainingjobs"
SOURCE_READY = "SourceReady"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# How often an export waiting for its TrainingJob is re-checked without any event.
RESYNC_SECONDS = 60.0

logger = logging.getLogger(__name__)

ConditionTuple = tuple[str, bool | None, str, str]


class _Outcome(Exception):
    """The source is not ready (``fail`` False: wait) or never will be (``fail`` True)."""

    def __init__(self, reason: str, message: str, *, fail: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.fail = fail


# Handlers ----------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_modelexport(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    reconcile(context_from_memo(memo), namespace or "default", name)


def _waiting(status: Any, **_: Any) -> bool:
    return status.get("phase") not in (Phase.SUCCEEDED, Phase.FAILED)


@kopf.timer(
    GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, when=_waiting
)
def resync_modelexport(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    reconcile(context_from_memo(memo), namespace or "default", name)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def on_modelexport_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """The Job and ConfigMap go with their owner (garbage collection); the files stay."""
    context = context_from_memo(memo)
    context.locks.discard(KIND, namespace or "default", name)
    _note_wait(context, namespace or "default", name, None)


@kopf.on.event("batch", "v1", "jobs", labels={EXPORT_LABEL: kopf.PRESENT})
def on_export_job_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    owner = export_owner(body)
    namespace = body.get("metadata", {}).get("namespace")
    if owner is not None and namespace is not None:
        reconcile(context_from_memo(memo), str(namespace), owner)


def trainingjob_changed(
    context: OperatorContext, namespace: str, name: str, body: Mapping[str, Any]
) -> None:
    """A TrainingJob's phase changed (the TrainingJob controller calls this after the write):
    on success it gets the export its spec asks for, and the exports waiting for it proceed
    or fail. Those come from memory (:func:`reconcile` notes what each waits for), not from a
    listing per phase change, which 1,000 TrainingJobs made thousands of."""
    if (body.get("status") or {}).get("phase") == Phase.SUCCEEDED:
        ensure_requested_export(context, body)
    with _WAITS_LOCK:
        waiting = [
            export
            for (export_namespace, export), sources in context.export_waits.items()
            if export_namespace == namespace and name in sources
        ]
    for export in waiting:
        reconcile(context, namespace, export)


def _source_jobs(body: Mapping[str, Any]) -> set[str]:
    spec = body.get("spec") or {}
    sources = [spec.get("source") or {}, *(spec.get("additionalSources") or [])]
    return {str(s["trainingJob"]) for s in sources if s.get("trainingJob")}


def export_owner(job: Mapping[str, Any]) -> str | None:
    """The ModelExport that owns a Job, from its controller owner reference."""
    for reference in (job.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("kind") == KIND and str(reference.get("apiVersion", "")).startswith(
            f"{GROUP}/"
        ):
            return str(reference["name"])
    return None


def requested_export(trainingjob: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ModelExport a succeeded TrainingJob asks for in ``spec.export``, or None."""
    wanted = (trainingjob.get("spec") or {}).get("export")
    if not wanted:
        return None
    name = str(trainingjob["metadata"]["name"])
    spec: dict[str, Any] = {
        "source": {"trainingJob": name},
        "formats": list(wanted.get("formats") or ["safetensors"]),
        "output": dict(wanted["output"]),
    }
    for key in ("modelName", "quantization"):
        if wanted.get(key) is not None:
            spec[key] = wanted[key]
    if "ollama" in spec["formats"]:
        ollama = {"modelName": f"{wanted.get('modelName') or name}:latest"}
        if wanted.get("systemPrompt"):
            ollama["systemPrompt"] = wanted["systemPrompt"]
        spec["ollama"] = ollama
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": f"{name}-export", "namespace": trainingjob["metadata"]["namespace"]},
        "spec": spec,
    }


def ensure_requested_export(context: OperatorContext, trainingjob: Mapping[str, Any]) -> None:
    manifest = requested_export(trainingjob)
    if manifest is None:
        return
    kopf.adopt(manifest, owner=as_body(dict(trainingjob)))
    context.kube.create_custom(PLURAL, manifest)


# Reconcile ---------------------------------------------------------------------------------


def reconcile(context: OperatorContext, namespace: str, name: str) -> None:
    """Bring one ModelExport and its Job to where its spec and status say."""
    with context.locks.hold(KIND, namespace, name), context.metrics.reconcile(KIND):
        current = context.kube.get_custom(PLURAL, namespace, name)
        if current is None or current["metadata"].get("deletionTimestamp"):
            _note_wait(context, namespace, name, None)
            return
        done = _Reconcile(context, current)
        done.run()
        _note_wait(context, namespace, name, current if _waiting(done.status) else None)


_WAITS_LOCK = threading.Lock()


def _note_wait(
    context: OperatorContext, namespace: str, name: str, waiting: Mapping[str, Any] | None
) -> None:
    """Remember which TrainingJobs an unfinished export waits for (or forget it)."""
    with _WAITS_LOCK:
        if waiting is None:
            context.export_waits.pop((namespace, name), None)
        else:
            context.export_waits[(namespace, name)] = frozenset(_source_jobs(waiting))


class _Reconcile:
    """One pass over one ModelExport."""

    def __init__(self, context: OperatorContext, body: dict[str, Any]) -> None:
        self.context = context
        self.kube = context.kube
        self.body = body
        self.namespace = str(body["metadata"]["namespace"])
        self.name = str(body["metadata"]["name"])
        self.generation = int(body["metadata"].get("generation") or 1)
        self.status: dict[str, Any] = dict(body.get("status") or {})

    def run(self) -> None:
        if self._final():
            return
        try:
            export = ModelExport.from_body(self.body)
        except InvalidResourceError as exc:
            self._fail("InvalidSpec", str(exc))
            return
        if not export.spec.merge_adapter and set(export.spec.formats) != {"adapter"}:
            self._fail("InvalidSpec", "spec.mergeAdapter: false exports only the adapter format")
            return
        job = self.kube.get_child("Job", self.namespace, export_job_name(self.name))
        if job is not None and job["metadata"].get("deletionTimestamp"):
            raise kopf.TemporaryError("the failed export Job is still being deleted", delay=5)
        if job is None:
            self._start(export)
        else:
            self._follow(export, job)

    def _final(self) -> bool:
        """Succeeded stays; Failed stays until the spec is edited (then it starts over)."""
        phase = self.status.get("phase")
        if phase == Phase.SUCCEEDED:
            return True
        if phase != Phase.FAILED:
            return False
        if self.generation <= int(self.status.get("observedGeneration") or 0):
            return True
        job_name = export_job_name(self.name)
        self.kube.delete_job(self.namespace, job_name)
        self.kube.delete_child("ConfigMap", self.namespace, job_name)
        return False

    # Source --------------------------------------------------------------------------------

    def _trainingjob(self, name: str) -> tuple[TrainingJob, dict[str, Any]]:
        body = self.kube.get_custom(TRAININGJOBS, self.namespace, name)
        if body is None:
            raise _Outcome(
                "TrainingJobNotFound",
                f"spec.source.trainingJob: TrainingJob {name} does not exist in namespace "
                f"{self.namespace}.",
                fail=True,
            )
        phase = (body.get("status") or {}).get("phase") or "Pending"
        if phase == Phase.FAILED:
            raise _Outcome(
                "TrainingJobFailed",
                f"spec.source.trainingJob: TrainingJob {name} failed; there is no model to export.",
                fail=True,
            )
        if phase != Phase.SUCCEEDED:
            raise _Outcome(
                "TrainingJobNotFinished",
                f"Waiting for TrainingJob {name} to succeed (it is {phase}).",
                fail=False,
            )
        try:  # the spec alone: status is the operator's, read as plain data below
            job = TrainingJob.from_body({"metadata": body["metadata"], "spec": body.get("spec")})
        except InvalidResourceError as exc:
            raise _Outcome(
                "TrainingJobInvalid", f"spec.source.trainingJob: {exc}", fail=True
            ) from None
        return job, dict(body.get("status") or {})

    def _source_uri(self, source: ExportSource) -> tuple[str, TrainingJob | None, dict[str, Any]]:
        if source.uri is not None:
            return source.uri, None, {}
        job, status = self._trainingjob(str(source.training_job))
        uri = training_output_uri(job)
        if uri is None:
            raise _Outcome(
                "SourceNotPersisted",
                f"spec.source.trainingJob: TrainingJob {job.name} kept its output in the pod's "
                "emptyDir, which is gone; give it spec.output.uri or spec.checkpoint.pvc.",
                fail=True,
            )
        return uri, job, status

    def _inputs(self, export: ModelExport) -> ExportInputs:
        spec = export.spec
        source_uri, job, job_status = self._source_uri(spec.source)
        extra = tuple(
            (self._source_uri(s)[0], 1.0 if s.weight is None else s.weight)
            for s in spec.additional_sources
        )
        # Unset for an adapter URI: its adapter_config.json names its base.
        base = spec.base_model or (job.spec.model if job is not None else None)
        plan = job_status.get("plan") or {}
        lineage: dict[str, Any] = {
            "trainingJob": job.name if job else None,
            "namespace": self.namespace,
            "attempt": job_status.get("attempt"),
            "plan": {k: plan[k] for k in ("gpuType", "numGpus", "strategy") if k in plan} or None,
            "checkpointStep": (job_status.get("progress") or {}).get("lastCheckpointStep"),
            "datasetUri": job.spec.dataset.uri if job else None,
            "baseModel": model_location(base) if base is not None else None,
        }
        return ExportInputs(
            source_uri=source_uri,
            base_uri=model_location(base) if base is not None else None,
            version=str(self.status.get("version") or ""),
            model_name=self._model_name(export, job),
            extra_sources=extra,
            source_weight=1.0 if spec.source.weight is None else spec.source.weight,
            params=model_params(base),
            lineage={k: v for k, v in lineage.items() if v is not None},
            # The run's train_log.jsonl: the card's losses wherever the output went.
            checkpoint_uri=training_checkpoint_uri(job) if job is not None else None,
        )

    def _model_name(self, export: ModelExport, job: TrainingJob | None) -> str:
        if export.spec.model_name:
            return export.spec.model_name
        return job.name if job is not None else self.name

    # Version -------------------------------------------------------------------------------

    def _version(self, export: ModelExport, model_name: str) -> str:
        """Decide this export's version once (under a lock per model name)."""
        if self.status.get("version"):
            return str(self.status["version"])
        with self.context.locks.hold("version", self.namespace, model_name):
            taken = [
                str((item.get("status") or {}).get("version"))
                for item in self.kube.list_custom(PLURAL, self.namespace)
                if item["metadata"]["name"] != self.name
                and (item.get("status") or {}).get("modelName") == model_name
                and (item.get("status") or {}).get("version")
            ]
            version = next_version(taken, export.spec.version)
            self._write(
                Phase.PENDING,
                [(SOURCE_READY, True, "SourceReady", "The source is ready; starting the export.")],
                extra={"modelName": model_name, "version": version},
            )
        return version

    # Job -----------------------------------------------------------------------------------

    def _start(self, export: ModelExport) -> None:
        try:
            inputs = self._inputs(export)
        except _Outcome as outcome:
            if outcome.fail:
                self._fail(outcome.reason, outcome.message, source=True)
            else:
                self._write(
                    Phase.PENDING,
                    [(SOURCE_READY, False, outcome.reason, outcome.message)],
                    extra={"message": outcome.message},
                )
            return
        try:
            version = self._version(export, inputs.model_name)
        except ValueError as exc:
            self._fail("DuplicateVersion", str(exc))
            return
        inputs = dataclasses.replace(inputs, version=version)
        self._create(export_configmap(export, inputs))
        job = self._create(export_job(export, inputs, default_image=self.context.trainer_image))
        lineage = self._lineage_status(inputs)
        message = f"Exporting {', '.join(export.spec.formats)} as {inputs.model_name} {version}."
        self._write(
            Phase.RUNNING,
            [
                (SOURCE_READY, True, "SourceReady", "The source is ready."),
                (ConditionType.RUNNING, True, "JobCreated", message),
            ],
            extra={
                "job": job["metadata"]["name"],
                "lineage": lineage,
                "message": message,
                "startTime": self.status.get("startTime") or utc_timestamp(self.context.now()),
            },
        )

    @staticmethod
    def _lineage_status(inputs: ExportInputs) -> dict[str, Any]:
        lineage = inputs.lineage
        plan = lineage.get("plan") or {}
        status = {
            "trainingJob": lineage.get("trainingJob"),
            "attempt": lineage.get("attempt"),
            "gpuType": plan.get("gpuType"),
            "numGpus": plan.get("numGpus"),
            "strategy": plan.get("strategy"),
            "checkpointStep": lineage.get("checkpointStep"),
            "datasetUri": lineage.get("datasetUri"),
            "baseModel": lineage.get("baseModel"),
            "sourceUri": inputs.source_uri,
        }
        return {k: v for k, v in status.items() if v is not None}

    def _create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        kopf.adopt(manifest, owner=as_body(self.body))
        created = self.kube.create_child(manifest)
        owners = created["metadata"].get("ownerReferences") or []
        if not any(ref.get("uid") == self.body["metadata"].get("uid") for ref in owners):
            raise kopf.TemporaryError(
                f"{manifest['kind']} {self.namespace}/{manifest['metadata']['name']} still "
                "belongs to a deleted ModelExport of the same name; waiting for its removal",
                delay=2,
            )
        return created

    def _follow(self, export: ModelExport, job: dict[str, Any]) -> None:
        state = lifecycle.job_state(job)
        if state is JobState.SUCCEEDED:
            self._succeeded(export, job)
        elif state is JobState.FAILED:
            self._job_failed(job)
        else:
            message = "The export Job is running."
            self._write(
                Phase.RUNNING,
                [(ConditionType.RUNNING, True, "JobRunning", message)],
                extra={"job": job["metadata"]["name"]},
            )

    def _terminated(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        pods = self.kube.list_pods(self.namespace, f"{JOB_NAME_LABEL}={job['metadata']['name']}")
        found = []
        for pod in pods:
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (container.get("state") or {}).get("terminated")
                if terminated:
                    found.append(dict(terminated))
        return found

    def _succeeded(self, export: ModelExport, job: dict[str, Any]) -> None:
        summaries = [parse_summary(t.get("message")) for t in self._terminated(job)]
        summary = next((s for s in summaries if s is not None), None)
        if summary is None:
            self._fail(
                "SummaryMissing",
                "The export Job completed but its pod left no summary in its termination "
                "message; see manifest.json in the output.",
            )
            return
        artifacts = artifacts_from_summary(summary, export.spec.output.uri)
        lineage = dict(self.status.get("lineage") or {})
        if summary.get("checkpointStep") is not None:
            lineage["checkpointStep"] = int(summary["checkpointStep"])
        size = sum(a["sizeBytes"] for a in artifacts)
        version = self.status.get("version")
        message = (
            f"Exported {self.status.get('modelName')} {version}: "
            f"{', '.join(a['format'] for a in artifacts)} ({size} bytes)."
        )
        done: list[ConditionTuple] = [
            (ConditionType.RUNNING, False, "Completed", message),
            (ConditionType.SUCCEEDED, True, "Completed", message),
        ]
        self._write(
            Phase.SUCCEEDED,
            done,
            extra={
                "artifacts": artifacts,
                "sizeBytes": size,
                "verified": bool(summary.get("verified")),
                "lineage": lineage,
                "message": message,
                "completionTime": utc_timestamp(self.context.now()),
            },
        )

    def _job_failed(self, job: dict[str, Any]) -> None:
        """Failed: the exporter's own sentence (its log tail), or its summary when it wrote
        the files but verification failed (exit 65 after the summary)."""
        terminated = self._terminated(job)
        summaries = [parse_summary(t.get("message")) for t in terminated]
        if any(s is not None and not s.get("verified") for s in summaries):
            self._fail(
                "VerificationFailed",
                "The export was written but its verification failed (logits or GGUF check); "
                "manifest.json in the output has the figures.",
            )
            return
        permanent = any(t.get("exitCode") in PERMANENT_EXIT_CODES for t in terminated)
        reason = "InvalidInput" if permanent else lifecycle.job_failure_reason(job)
        said = next((last_line(t.get("message")) for t in terminated if t.get("message")), "")
        message = said or f"The export Job failed ({lifecycle.job_failure_reason(job)})."
        self._fail(reason, message)

    # Status --------------------------------------------------------------------------------

    def _fail(self, reason: str, message: str, *, source: bool = False) -> None:
        conditions: list[ConditionTuple] = [(ConditionType.FAILED, True, reason, message)]
        if source:
            conditions.insert(0, (SOURCE_READY, False, reason, message))
        else:
            conditions.insert(0, (ConditionType.RUNNING, False, reason, message))
        self._write(
            Phase.FAILED,
            conditions,
            extra={"message": message, "completionTime": utc_timestamp(self.context.now())},
        )

    def _write(
        self,
        phase: Phase,
        conditions: list[ConditionTuple],
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        now = self.context.now()
        updated = list(self.status.get("conditions") or [])
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
        if patch is None:
            return
        if "completionTime" in patch and self.status.get("phase") == phase.value:
            patch.pop("completionTime")  # the same outcome again is not a new completion
            if not patch:
                return
        self.kube.patch_status(PLURAL, self.namespace, self.name, patch)
        if self.status.get("phase") != phase.value:
            type_, _, reason, message = conditions[-1]
            event = "Warning" if phase is Phase.FAILED else "Normal"
            self.context.post_event(self.body, event, reason, message)
            logger.info("%s %s/%s: %s: %s", KIND, self.namespace, self.name, phase.value, message)
        self.status |= patch
