"""The cluster's calibration store: what TrainingJobs observed, read back to plan the next ones.

A ConfigMap (``trainwright-calibration`` in the operator's ``--calibration-namespace``)
whose ``observations.json`` key holds CONTRACTS.md's calibration file, so
``kubectl get cm trainwright-calibration -o jsonpath='{.data.observations\\.json}'``
and ``trainwright calibration export`` give a file ``trainwright plan --calibration``
reads. Each observation also carries ``job`` (namespace/name/uid: one entry per
TrainingJob, replaced when it is recorded again, so writes are idempotent),
``planned_tokens_per_second``, ``planned_memory_bytes`` and ``recorded``.

What is recorded: the steady tokens/s of a TrainingJob (the median of
``status.throughput`` once its readings span ``steady`` seconds, 5 minutes by
default) and rank 0's peak GPU memory (null on CPU), while it runs and again when
it has Succeeded. Only catalog models are recorded (the planner re-plans each
observation with the physics, which needs the architecture by name).

Bounded: the newest ``KEEP_PER_SHAPE`` (10) observations per shape (GPU, method,
strategy, model), at most ``MAX_OBSERVATIONS`` (300, about 100 KB) in all, newest kept.

Later TrainingJobs are planned with it (:func:`calibration_for`), unless the operator
runs with ``--no-calibration`` or the TrainingJob is annotated
``trainwright.io/calibration: "off"`` (then it is neither planned with nor recorded).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from trainwright.api.profiles import with_profile
from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.api.v1alpha1.trainingjob import ProgressStatus, ThroughputSample
from trainwright.operator.calibration_defaults import (
    DEFAULT_STEADY_SECONDS,
    DISABLE_ANNOTATION,
    KEEP_PER_SHAPE,
    MAX_OBSERVATIONS,
    STORE_KEY,
    STORE_NAME,
)
from trainwright.operator.kube import Kube
from trainwright.operator.throughput import steady_tokens_per_second
from trainwright.planner.calibration import Calibration, CalibrationError, parse_calibration

CACHE_SECONDS = 10.0
# A re-recording moves the stored figure only when it differs by more than this share.
RECORD_TOLERANCE = 0.02

logger = logging.getLogger(__name__)


def disabled_for(metadata: Mapping[str, Any]) -> bool:
    """The TrainingJob opted out (``trainwright.io/calibration: "off"``)."""
    annotations = metadata.get("annotations") or {}
    return str(annotations.get(DISABLE_ANNOTATION, "")).lower() in {"off", "false", "disabled"}


def shape_key(observation: Mapping[str, Any]) -> tuple[str, ...]:
    """What the store bounds by: kind, GPU, method (or precision), strategy, model."""
    return (
        str(observation.get("kind")),
        str(observation.get("gpu")),
        str(observation.get("method") or observation.get("precision")),
        str(observation.get("strategy", "")),
        str(observation.get("model")),
    )


def training_observation(
    job: TrainingJob,
    plan: PlanStatus,
    tokens_per_second: float,
    progress: ProgressStatus | None,
    *,
    now: datetime.datetime,
) -> dict[str, Any] | None:
    """The contract's training observation of ``job`` (plus its key); None for a model the
    catalog does not name (``model.configPath``), which the planner could not re-plan."""
    if job.spec.model.name is None or tokens_per_second <= 0:
        return None
    workload = with_profile(job.spec)
    uid = str(job.metadata.get("uid") or "")
    return {
        "kind": "training",
        "model": job.spec.model.name,
        "method": plan.method or workload.method,
        "gpu": plan.gpu_type,
        "num_gpus": plan.num_gpus,
        "strategy": plan.strategy,
        "micro_batch": plan.micro_batch_size,
        "seq_len": workload.training.seq_len,
        "precision": workload.training.precision,
        "tokens_per_second": round(tokens_per_second, 3),
        "peak_memory_bytes": progress.peak_memory_bytes if progress is not None else None,
        "planned_tokens_per_second": round(plan.tokens_per_second, 3),
        "planned_memory_bytes": plan.memory_per_gpu_bytes,
        "job": f"{job.namespace}/{job.name}/{uid}",
        "recorded": now.replace(microsecond=0).isoformat(),
    }


def merged(
    document: Mapping[str, Any],
    observation: Mapping[str, Any],
    *,
    keep_per_shape: int = KEEP_PER_SHAPE,
    keep_total: int = MAX_OBSERVATIONS,
) -> dict[str, Any]:
    """``document`` with ``observation`` in place of any of the same job, bounded (newest kept)."""
    others = [
        dict(o)
        for o in document.get("observations") or []
        if isinstance(o, Mapping) and o.get("job") != observation.get("job")
    ]
    ordered = [*others, dict(observation)]  # oldest first; the new one is the newest
    shape = shape_key(observation)
    same = [o for o in ordered if shape_key(o) == shape]
    dropped = {id(o) for o in same[:-keep_per_shape]} if len(same) > keep_per_shape else set()
    kept = [o for o in ordered if id(o) not in dropped][-keep_total:]
    return {"observations": kept}


def needs_recording(document: Mapping[str, Any], observation: Mapping[str, Any]) -> bool:
    """Whether the store lacks this job's observation or holds a figure off by > 2%."""
    for stored in document.get("observations") or []:
        if isinstance(stored, Mapping) and stored.get("job") == observation.get("job"):
            before = float(stored.get("tokens_per_second") or 0)
            after = float(observation["tokens_per_second"])
            return abs(after - before) > RECORD_TOLERANCE * max(before, 1e-9) or stored.get(
                "peak_memory_bytes"
            ) != observation.get("peak_memory_bytes")
    return True


def document_of(config_map: Mapping[str, Any] | None) -> dict[str, Any]:
    """The calibration document a ConfigMap holds; an empty one if absent or unreadable."""
    text = ((config_map or {}).get("data") or {}).get(STORE_KEY)
    if not text:
        return {"observations": []}
    try:
        document = json.loads(text)
    except ValueError:
        logger.warning("%s: %s is not JSON; starting an empty store", STORE_NAME, STORE_KEY)
        return {"observations": []}
    return document if isinstance(document, dict) else {"observations": []}


@dataclasses.dataclass
class CalibrationStore:
    """Reads and writes the store ConfigMap; reads are cached for ``CACHE_SECONDS``."""

    kube: Kube
    namespace: str
    name: str = STORE_NAME
    steady_seconds: float = DEFAULT_STEADY_SECONDS
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _cache: tuple[float, dict[str, Any]] | None = None

    @property
    def source(self) -> str:
        return f"configmap {self.namespace}/{self.name}"

    def _path(self, name: str | None = None) -> str:
        base = f"/api/v1/namespaces/{self.namespace}/configmaps"
        return f"{base}/{name}" if name else base

    def _read(self) -> tuple[dict[str, Any], str | None]:
        try:
            body = self.kube.request("GET", self._path(self.name))
        except ApiException as exc:
            if exc.status == 404:
                return {"observations": []}, None
            raise
        return document_of(body), str((body.get("metadata") or {}).get("resourceVersion"))

    def document(self) -> dict[str, Any]:
        with self._lock:
            if self._cache is not None and time.monotonic() - self._cache[0] < CACHE_SECONDS:
                return self._cache[1]
        try:
            document, _ = self._read()
        except ApiException as exc:  # forbidden, or the API server busy: plan with physics
            logger.warning(
                "calibration store %s unreadable (%s); planning without it", self.source, exc.reason
            )
            document = {"observations": []}
        with self._lock:
            self._cache = (time.monotonic(), document)
        return document

    def calibration(self) -> Calibration | None:
        """The store as the planner's calibration; None (and a warning) if it is malformed."""
        try:
            return parse_calibration(self.document(), source=self.source)
        except CalibrationError as exc:
            logger.warning("calibration store ignored: %s", exc)
            return None

    def record(self, observation: Mapping[str, Any], *, attempts: int = 5) -> bool:
        """Write ``observation`` (idempotent; retried on a concurrent write). True if written."""
        if not needs_recording(self.document(), observation):
            return False  # the cached store already holds it: no read, no write
        for _ in range(attempts):
            try:
                document, version = self._read()
            except ApiException as exc:
                logger.warning("calibration store %s not read: %s", self.source, exc.reason)
                return False
            if not needs_recording(document, observation):
                return False
            data = {STORE_KEY: json.dumps(merged(document, observation), indent=1)}
            try:
                if version is None:
                    self.kube.request(
                        "POST",
                        self._path(),
                        body={
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {
                                "name": self.name,
                                "labels": {"app.kubernetes.io/part-of": "trainwright"},
                            },
                            "data": data,
                        },
                    )
                else:
                    # The resourceVersion makes the patch fail with 409 if another write won.
                    self.kube.request(
                        "PATCH",
                        self._path(self.name),
                        body={"metadata": {"resourceVersion": version}, "data": data},
                        content_type="application/merge-patch+json",
                    )
            except ApiException as exc:
                if exc.status == 409:
                    continue
                # Forbidden (RBAC), or the API server failing: the run goes on unrecorded.
                logger.warning("calibration store %s not written: %s", self.source, exc.reason)
                return False
            with self._lock:
                self._cache = None
            return True
        logger.warning("calibration store: %d concurrent writes in a row; gave up", attempts)
        return False


def calibration_for(store: CalibrationStore | None, job: TrainingJob) -> Calibration | None:
    """What to plan ``job`` with: None when calibration is off for the operator or the job."""
    if store is None or disabled_for(job.metadata):
        return None
    return store.calibration()


def record_from_status(
    store: CalibrationStore | None,
    body: Mapping[str, Any],
    *,
    now: datetime.datetime,
    finished: bool = False,
) -> bool:
    """Record the TrainingJob ``body`` if its readings are steady (or it ``finished``)."""
    if store is None or disabled_for(body.get("metadata") or {}):
        return False
    status = body.get("status") or {}
    if not status.get("plan"):
        return False
    try:
        job = TrainingJob.from_body(body)
        plan = PlanStatus.model_validate(status["plan"])
        samples: Sequence[ThroughputSample] = [
            ThroughputSample.model_validate(s) for s in status.get("throughput") or []
        ]
        progress = (
            ProgressStatus.model_validate(status["progress"]) if status.get("progress") else None
        )
    except Exception as exc:  # a status this version cannot read: nothing to learn from
        logger.debug("not recording %s: %s", (body.get("metadata") or {}).get("name"), exc)
        return False
    # A finished run counts what it read, however short; a running one once it is steady.
    steady = steady_tokens_per_second(samples, steady=0.0 if finished else store.steady_seconds)
    if steady is None and finished and progress is not None and progress.tokens_per_second:
        steady = progress.tokens_per_second
    if steady is None:
        return False
    observation = training_observation(job, plan, steady, progress, now=now)
    if observation is None:
        return False
    try:
        parse_calibration({"observations": [observation]}, source=store.source)
    except CalibrationError as exc:
        logger.info("not recording %s/%s: %s", job.namespace, job.name, exc)
        return False
    return store.record(observation)
