"""kopf settings and the operator's entry point (``trainwright operator``).

Importing this module registers every handler (the controller modules
decorate their functions with ``@kopf.on...``). :func:`run` starts the
metrics endpoint, then kopf, and returns when kopf stops.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any, cast

import kopf
from kubernetes.config import ConfigException

import trainwright.operator.calibration_handlers
import trainwright.operator.capacityplan
import trainwright.operator.modelexport
import trainwright.operator.trainingjob
from trainwright.api.v1alpha1.trainingjob import DEFAULT_TRAINER_IMAGE
from trainwright.operator.calibration_defaults import DEFAULT_STEADY_SECONDS
from trainwright.operator.calibration_store import CalibrationStore
from trainwright.operator.context import OperatorContext
from trainwright.operator.failure_record import FailureRecordStore
from trainwright.operator.kube import Kube, load_client_configuration
from trainwright.operator.metrics import OperatorMetrics, serve_metrics
from trainwright.operator.plan_first import DEFAULT_WORKERS, PlanFirst
from trainwright.operator.throughput import DEFAULT_WINDOW_SECONDS
from trainwright.resources.dataset_check import DEFAULT_START_SECONDS
from trainwright.resources.names import MANAGED_BY_SELECTOR

# kopf keeps its bookkeeping in annotations under our own prefix; the CRDs'
# status schema is strict, so kopf's default status.kopf stanza would be pruned.
ANNOTATION_PREFIX = "trainwright.io"
FINALIZER = "trainwright.io/finalizer"

# The kinds with kopf changing handlers (on.create/update/resume, timers, kopf's finalizer
# and annotations); the TrainingJob controller takes raw events (operator/tracking.py).
CHANGING_KINDS = frozenset(
    {trainwright.operator.capacityplan.KIND, trainwright.operator.modelexport.KIND}
)

# Imported for their @kopf.on... decorators, which register the handlers.
HANDLER_MODULES = (
    trainwright.operator.trainingjob,
    trainwright.operator.calibration_handlers,
    trainwright.operator.capacityplan,
    trainwright.operator.modelexport,
)


@dataclasses.dataclass(frozen=True)
class Peering:
    """kopf peering: the KopfPeering/ClusterKopfPeering object's name and this replica's rank."""

    name: str
    priority: int


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """The calibration store and ThroughputBelowPlan (operator.calibration_store, throughput).

    ``enabled`` False (``--no-calibration``) neither records nor applies observations.
    """

    enabled: bool = True
    namespace: str = "default"
    steady_seconds: float = DEFAULT_STEADY_SECONDS
    throughput_window: float = DEFAULT_WINDOW_SECONDS
    progress_endpoint: tuple[str, int] | None = None


class StartupError(RuntimeError):
    """The operator cannot start (no credentials, port taken); the message is one sentence."""


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Throughput knobs, measured with ``benchmarks/bench_scale.py``.

    ``workers``: threads running the (synchronous) handlers, which mostly wait on
    the API server, and as many for new jobs' children (plan_first.py);
    ``api_connections``: the client's HTTP connection pool.
    """

    workers: int = DEFAULT_WORKERS
    api_connections: int = 2 * DEFAULT_WORKERS


class ChangingKindsDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled-configuration annotations, built only for the kinds that have
    changing handlers (on.create/update/resume, timers): CapacityPlans and ModelExports.

    kopf builds the "essence" of every object for every event it receives (a deep copy of
    the whole body, status included) in its one event-loop thread, whether or not any
    handler will diff it. TrainingJobs, Jobs, pods and nodes only have raw-event handlers
    here, so for them that copy was pure cost: 5% of the operator's CPU while 1,000
    TrainingJobs started (py-spy), on the thread every event waits for.
    """

    def __init__(self, kinds: frozenset[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kinds = kinds

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        if body.get("kind") not in self.kinds:
            return cast(kopf.BodyEssence, {})
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") not in self.kinds:
            return None
        return super().fetch(body=body)


def configure(settings: kopf.OperatorSettings, tuning: Tuning) -> None:
    """Apply Trainwright's kopf settings (called from the startup handler)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = ChangingKindsDiffBase(
        CHANGING_KINDS, prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    # Only the operator's own Events (kopf.info/kopf.warn on transitions) and
    # warnings; "Handler succeeded" Events for every reconcile would double the
    # API traffic and say nothing a person needs.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = tuning.workers
    # A failed reconcile (the API server briefly unavailable) is retried in
    # seconds, not kopf's default minute; it is level-based, so retrying is safe.
    settings.execution.default_backoff = 5
    # Watch only the Jobs the operator created (trainer and export Jobs) and their pods,
    # filtered by the API server: the pod handler's label filter is kopf's, client-side,
    # so without this every pod of the cluster was sent, parsed and dropped. (The GPUs
    # other pods hold are counted from the one watch of all pods, Kube.watch_inventory.)
    settings.watching.label_selectors["batch", "jobs"] = MANAGED_BY_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = MANAGED_BY_SELECTOR
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300


# glibc's mallopt parameter for the most malloc arenas (malloc.h).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before the operator's threads start.

    glibc gives every thread that allocates under contention an arena of its own, up to
    8 per core; the operator's ~50 threads (kopf's workers, the API fan-out, the periodic
    pool) each kept freed memory in theirs: at 1,000 TrainingJobs the process held 330-400
    MiB of which ~110 MiB was live Python (tracemalloc). Threads here mostly wait on the
    API server, so sharing two arenas costs nothing measurable. Returns False where the C
    library is not glibc (the setting is then left as it is).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


# Seconds a thread may hold the GIL before another that waits for it is let in (Python's
# default is 0.005).
GIL_SWITCH_SECONDS = 0.02


def lengthen_gil_switch_interval(seconds: float = GIL_SWITCH_SECONDS) -> None:
    """Let a thread that holds the GIL keep it longer before handing it over.

    The operator runs ~50 threads (kopf's handler workers, the API fan-out, the watches, the
    periodic pool) that mostly wait on the API server; while 1,000 TrainingJobs start they
    are all runnable at once, and at Python's 5 ms interval the hand-overs cost CPU: at 20 ms
    the operator used 18-22 CPU-seconds for the 1,000 jobs instead of 22-27, and all their
    Jobs existed within x1.39-1.65 of the plain Jobs' time instead of x1.64-1.90 (five and
    four runs of benchmarks/bench_scale.py, docs/operator.md). A thread whose reply came in
    waits at most one interval longer to run; API requests take 100-150 ms here.
    """
    sys.setswitchinterval(seconds)


def run(
    *,
    namespaces: Sequence[str] = (),
    clusterwide: bool = False,
    metrics_port: int = 8080,
    liveness_endpoint: str | None = None,
    tuning: Tuning | None = None,
    trainer_image: str = DEFAULT_TRAINER_IMAGE,
    peering: Peering | None = None,
    calibration: CalibrationSettings | None = None,
    dataset_check: bool = True,
    dataset_check_start: float = DEFAULT_START_SECONDS,
) -> None:
    """Run the operator until interrupted; ``metrics_port`` 0 disables ``/metrics``.

    ``trainer_image`` runs TrainingJobs whose ``spec.image`` is unset; ``dataset_check``
    reads each one's dataset in a CPU pod before planning (trainwright.operator.dataset_check).
    Without
    ``peering`` the operator runs standalone; with it, replicas that share the
    peering object's name pause all but the one of highest priority (a standby).
    """
    limit_malloc_arenas()
    lengthen_gil_switch_interval()
    tuning = tuning or Tuning()
    metrics = OperatorMetrics()
    try:
        kube = Kube(
            load_client_configuration(),
            pool_size=tuning.api_connections,
            observe=metrics.observe_api_request,
        )
    except ConfigException as exc:
        raise StartupError(
            f"no cluster credentials: set KUBECONFIG or run in a pod ({exc})"
        ) from None
    kube.watch_inventory()
    calibration = calibration or CalibrationSettings()
    store = (
        CalibrationStore(kube, calibration.namespace, steady_seconds=calibration.steady_seconds)
        if calibration.enabled
        else None
    )
    context = OperatorContext(
        kube=kube,
        metrics=metrics,
        trainer_image=trainer_image,
        calibration_store=store,
        throughput_window=calibration.throughput_window,
        progress_endpoint=calibration.progress_endpoint,
        dataset_check=dataset_check,
        dataset_check_start=dataset_check_start,
        plan_first=PlanFirst(workers=tuning.workers),
    )
    # The MTBF of checkpoint.intervalSteps: auto goes on across restarts.
    failure_record = FailureRecordStore(kube, calibration.namespace, context.node_failures)
    failure_record.start()
    ready = threading.Event()
    stopped = threading.Event()
    server = None
    if metrics_port:
        try:
            server = serve_metrics(
                metrics, port=metrics_port, healthy=lambda: ready.is_set() and not stopped.is_set()
            )
        except OSError as exc:
            raise StartupError(f"--metrics-port {metrics_port}: {exc.strerror}") from None
    registry = kopf.get_default_registry()

    @kopf.on.startup(registry=registry)
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, tuning)

    try:
        kopf.run(
            registry=registry,
            clusterwide=clusterwide,
            namespaces=list(namespaces),
            standalone=peering is None,
            peering_name=peering.name if peering is not None else None,
            priority=peering.priority if peering is not None else None,
            liveness_endpoint=liveness_endpoint,
            ready_flag=ready,
            memo=kopf.Memo(context=context),
        )
    finally:
        stopped.set()
        context.plan_first.stop()
        failure_record.stop()
        if server is not None:
            server.shutdown()
            server.server_close()
        context.kube.close()
