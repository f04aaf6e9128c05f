"""What every handler shares: the API layer, the metrics and per-object locks.

kopf hands it to the handlers as ``memo.context`` (``kopf.run(memo=...)``), so
nothing lives in module globals and a test can build its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import kopf

from trainwright.api.v1alpha1.trainingjob import DEFAULT_TRAINER_IMAGE
from trainwright.operator.admission import GangGate
from trainwright.operator.calibration_store import CalibrationStore
from trainwright.operator.inventory import NodeInventory
from trainwright.operator.kube import Kube
from trainwright.operator.metrics import OperatorMetrics
from trainwright.operator.node_failures import ClusterFailures
from trainwright.operator.plan_first import PlanFirst
from trainwright.operator.progress import fetch_progress
from trainwright.operator.throughput import DEFAULT_WINDOW_SECONDS
from trainwright.operator.tracking import Tracker
from trainwright.resources.dataset_check import DEFAULT_START_SECONDS


class KeyedLocks:
    """One lock per object key, so two handlers never reconcile the same object at once.

    kopf serialises handlers of one object, but a TrainingJob is also
    reconciled from its Job's events, which kopf treats as another object.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, ...], threading.Lock] = {}

    @contextlib.contextmanager
    def hold(self, *key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def discard(self, *key: str) -> None:
        with self._guard:
            self._locks.pop(key, None)


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# (object, "Normal" | "Warning", reason, message)
EventPoster = Callable[[dict[str, Any], str, str, str], None]


def post_kopf_event(raw: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event through kopf's poster (batched, retried, off the handler path)."""
    kopf.event(as_body(raw), type=type_, reason=reason, message=message)


@dataclasses.dataclass
class OperatorContext:
    """The operator's shared state; ``now``, ``post_event`` and ``forecast_models`` are
    injectable (tests use a fast single-model forecast)."""

    kube: Kube
    metrics: OperatorMetrics
    locks: KeyedLocks = dataclasses.field(default_factory=KeyedLocks)
    now: Callable[[], datetime.datetime] = _utc_now
    post_event: EventPoster = post_kopf_event
    # CapacityPlan forecasts: None uses the forecaster's default ensemble.
    forecast_models: tuple[str, ...] | None = None
    # (pod IP, port) -> the trainer's /progress JSON, or None when it cannot be read.
    fetch_progress: Callable[[str, int], dict[str, Any] | None] = fetch_progress
    # (namespace, Job name) -> lifecycle.job_signature() at its last reconcile.
    job_signatures: dict[tuple[str, str], tuple[str, int, bool]] = dataclasses.field(
        default_factory=dict
    )
    # Releases queue-less trainer Jobs whose whole gang fits (admission.GangGate; made by
    # the TrainingJob controller on first use, with its reconcile as the callback).
    gang_gate: GangGate | None = None
    # The TrainingJobs this process follows: the generation each was last reconciled at,
    # and the schedule of their periodic passes (trainwright.operator.tracking).
    tracker: Tracker = dataclasses.field(default_factory=Tracker)
    # The children of newly planned TrainingJobs, made once no plan is being made.
    plan_first: PlanFirst = dataclasses.field(default_factory=PlanFirst)
    # What the cluster's nodes can hold, rebuilt only when a node changes.
    node_inventory: NodeInventory = dataclasses.field(default_factory=NodeInventory)
    # (namespace, ModelExport name) -> the TrainingJobs it waits for, while it waits
    # (trainwright.operator.modelexport: a TrainingJob's phase change reconciles them).
    export_waits: dict[tuple[str, str], frozenset[str]] = dataclasses.field(default_factory=dict)
    # (namespace, CapacityPlan name) -> (its forecast spec, the last ForecastResult), so a
    # refresh refits the chosen models instead of searching again (forecast.update).
    forecasts: dict[tuple[str, str], tuple[str, Any]] = dataclasses.field(default_factory=dict)
    # The trainer image of TrainingJobs whose spec.image is unset (--trainer-image).
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    # The calibration store (--calibration-namespace); None with --no-calibration.
    calibration_store: CalibrationStore | None = None
    # ThroughputBelowPlan's window in seconds (--throughput-window).
    throughput_window: float = DEFAULT_WINDOW_SECONDS
    # Read every trainer's /progress from this (host, port) instead of rank 0's pod
    # (--progress-endpoint: a port-forward, or a test's fake trainer).
    progress_endpoint: tuple[str, int] | None = None
    # (namespace, name, uid) of the Succeeded TrainingJobs this process has recorded.
    calibration_recorded: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)
    # GPU-node failures seen by the node watch (checkpoint.intervalSteps: auto's MTBF).
    node_failures: ClusterFailures = dataclasses.field(default_factory=ClusterFailures)
    # Check each TrainingJob's dataset in a CPU pod before planning
    # (trainwright.operator.dataset_check; `trainwright operator` turns it on unless
    # --no-dataset-check), and how long its pod may take to start before the check is
    # skipped (--dataset-check-start, seconds).
    dataset_check: bool = False
    dataset_check_start: float = DEFAULT_START_SECONDS


def context_from_memo(memo: Any) -> OperatorContext:
    """The context kopf passes in ``memo``; a clear error if the operator was started bare."""
    context = getattr(memo, "context", None)
    if not isinstance(context, OperatorContext):
        raise RuntimeError(
            "the operator was started without its context; run it with `trainwright operator`"
        )
    return context


def as_body(raw: dict[str, Any]) -> kopf.Body:
    """A dict read with the API layer, wrapped as kopf wants it for adopt() and events."""
    return kopf.Body(cast(kopf.RawBody, raw))
