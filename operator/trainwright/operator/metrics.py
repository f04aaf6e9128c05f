"""The operator's Prometheus metrics and its ``/metrics`` + ``/healthz`` HTTP endpoint.

Names carry the ``trainwright_`` prefix and base units; counters end in
``_total`` (prometheus-client appends it). Metrics live in their own registry
held by :class:`OperatorMetrics`, so tests and several operators in one
process do not share state.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from trainwright.operator.status import Phase

# Reconciles take from a few milliseconds (nothing to do) to seconds (planning
# a large search, slow API server); the buckets span that.
RECONCILE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OperatorMetrics:
    """Every metric the operator exports, plus the per-object state behind the gauges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            "trainwright_reconciles",
            "Reconciles finished, by kind and result (success, error).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "trainwright_reconcile_errors",
            "Reconciles that raised, by kind and the error's reason.",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "trainwright_reconcile_duration_seconds",
            "Wall time of one reconcile, by kind.",
            ["kind"],
            buckets=RECONCILE_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.api_request_duration = Histogram(
            "trainwright_api_request_duration_seconds",
            "Latency of the operator's Kubernetes API requests, by HTTP verb.",
            ["verb"],
            buckets=RECONCILE_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.trainingjobs = Gauge(
            "trainwright_trainingjobs",
            "TrainingJobs the operator knows, by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.planned_gpus = Gauge(
            "trainwright_planned_gpus",
            "GPUs in a TrainingJob's plan (nodes x GPUs per node).",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.planned_cost_usd = Gauge(
            "trainwright_planned_cost_usd",
            "Estimated cost of a TrainingJob's plan in US dollars.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.recommended_gpus = Gauge(
            "trainwright_capacityplan_recommended_gpus",
            "GPUs a CapacityPlan recommends (all replicas).",
            ["namespace", "name"],
            registry=self.registry,
        )
        # Per-object gauges for dashboards and alerts. TrainingJob gauges are labelled
        # ``trainingjob`` (the label the trainer pods' PodMonitor gives the trainer's own
        # metrics), so a query joins the plan and the run ``on (namespace, trainingjob)``.
        per_job = ["namespace", "trainingjob"]
        self.trainingjob_phase = Gauge(
            "trainwright_trainingjob_phase",
            "1 for a TrainingJob's current phase (one series per phase it has been in).",
            [*per_job, "phase"],
            registry=self.registry,
        )
        self.planned_tokens_per_second = Gauge(
            "trainwright_trainingjob_planned_tokens_per_second",
            "Training throughput the plan expects, tokens per second (all GPUs).",
            per_job,
            registry=self.registry,
        )
        self.planned_memory_per_gpu = Gauge(
            "trainwright_trainingjob_planned_memory_per_gpu_bytes",
            "Peak memory per GPU the plan expects, bytes.",
            per_job,
            registry=self.registry,
        )
        self.planned_usd_per_hour = Gauge(
            "trainwright_trainingjob_planned_usd_per_hour",
            "Price of the plan's GPUs per hour, US dollars.",
            per_job,
            registry=self.registry,
        )
        self.requested_gpus = Gauge(
            "trainwright_trainingjob_requested_gpus",
            "GPUs a TrainingJob's trainer pods request while it runs (0 otherwise).",
            [*per_job, "gpu_type"],
            registry=self.registry,
        )
        self.trainingjob_restarts = Gauge(
            "trainwright_trainingjob_restarts",
            "Whole-gang restarts of a TrainingJob so far (status.restarts).",
            per_job,
            registry=self.registry,
        )
        self.trainingjob_start_time = Gauge(
            "trainwright_trainingjob_start_timestamp_seconds",
            "Unix time a TrainingJob's training started (status.startTime).",
            per_job,
            registry=self.registry,
        )
        # status.usage (trainwright.operator.usage): what a run has used so far.
        self.usage_gpu_seconds = Gauge(
            "trainwright_trainingjob_gpu_seconds",
            "GPU-seconds a TrainingJob's trainer pods have held while Running, all attempts.",
            per_job,
            registry=self.registry,
        )
        self.usage_cost_usd = Gauge(
            "trainwright_trainingjob_cost_usd",
            "US dollars a TrainingJob has spent so far at its plan's price.",
            per_job,
            registry=self.registry,
        )
        self.usage_energy_joules = Gauge(
            "trainwright_trainingjob_energy_joules",
            "Facility energy a TrainingJob has used so far (GPU energy x PUE), joules.",
            [*per_job, "source"],
            registry=self.registry,
        )
        self.usage_co2e_kilograms = Gauge(
            "trainwright_trainingjob_co2e_kilograms",
            "Emissions of a TrainingJob so far, kg CO2e (location-based grid intensity).",
            [*per_job, "zone"],
            registry=self.registry,
        )
        per_plan = ["namespace", "capacityplan"]
        self.capacityplan_gpus = Gauge(
            "trainwright_capacityplan_gpus",
            "GPUs of a CapacityPlan's recommendation, by GPU type.",
            [*per_plan, "gpu_type"],
            registry=self.registry,
        )
        self.capacityplan_usd_per_hour = Gauge(
            "trainwright_capacityplan_usd_per_hour",
            "Price of a CapacityPlan's recommendation per hour, US dollars.",
            per_plan,
            registry=self.registry,
        )
        self.capacityplan_demand = Gauge(
            "trainwright_capacityplan_demand_requests_per_second",
            "Latest point of a CapacityPlan's demand history, requests per second.",
            per_plan,
            registry=self.registry,
        )
        self.capacityplan_forecast = Gauge(
            "trainwright_capacityplan_forecast_requests_per_second",
            "Peak of a CapacityPlan's demand forecast over its horizon, by band: the mean "
            "and the upper bounds of the 80% and 95% intervals (p80, p95), requests per second.",
            [*per_plan, "band"],
            registry=self.registry,
        )
        self.capacityplan_sized_for = Gauge(
            "trainwright_capacityplan_sized_for_requests_per_second",
            "The request rate a CapacityPlan's recommendation serves.",
            per_plan,
            registry=self.registry,
        )
        self.cluster_allocatable_gpus = Gauge(
            "trainwright_cluster_allocatable_gpus",
            "Allocatable GPUs on the cluster's ready nodes, by GPU type.",
            ["gpu_type"],
            registry=self.registry,
        )
        self.cluster_free_gpus = Gauge(
            "trainwright_cluster_free_gpus",
            "Allocatable GPUs not requested by running pods, by GPU type.",
            ["gpu_type"],
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], Phase] = {}
        for phase in Phase:
            self.trainingjobs.labels(phase=phase.value).set(0)

    @contextlib.contextmanager
    def reconcile(self, kind: str) -> Iterator[None]:
        """Time a reconcile and count its result; an exception is counted and re-raised."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.reconciles.labels(kind=kind, result="error").inc()
            self.reconcile_errors.labels(kind=kind, reason=type(exc).__name__).inc()
            raise
        else:
            self.reconciles.labels(kind=kind, result="success").inc()
        finally:
            self.reconcile_duration.labels(kind=kind).observe(time.perf_counter() - started)

    def observe_api_request(self, verb: str, seconds: float) -> None:
        self.api_request_duration.labels(verb=verb).observe(seconds)

    def set_phase(self, namespace: str, name: str, phase: Phase) -> None:
        with self._lock:
            previous = self._phases.get((namespace, name))
            if previous == phase:
                return
            if previous is not None:
                self.trainingjobs.labels(phase=previous.value).dec()
            self._phases[(namespace, name)] = phase
            self.trainingjobs.labels(phase=phase.value).inc()
            if previous is not None:
                self.trainingjob_phase.labels(namespace, name, previous.value).set(0)
            self.trainingjob_phase.labels(namespace, name, phase.value).set(1)

    def set_plan(self, namespace: str, name: str, *, gpus: int, cost_usd: float | None) -> None:
        self.planned_gpus.labels(namespace=namespace, name=name).set(gpus)
        if cost_usd is not None:
            self.planned_cost_usd.labels(namespace=namespace, name=name).set(cost_usd)

    def set_trainingjob_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """The plan's expectations and the run's restarts, from a TrainingJob's status."""
        plan = status.get("plan") or {}
        job = (namespace, name)
        if plan:
            self.planned_tokens_per_second.labels(*job).set(float(plan.get("tokensPerSecond") or 0))
            self.planned_memory_per_gpu.labels(*job).set(float(plan.get("memoryPerGpuBytes") or 0))
            if plan.get("usdPerHour") is not None:
                self.planned_usd_per_hour.labels(*job).set(float(plan["usdPerHour"]))
        _remove_matching(self.requested_gpus, namespace=namespace, trainingjob=name)
        if plan and status.get("phase") == Phase.RUNNING:
            gpus = float(plan.get("numGpus") or 0)
            self.requested_gpus.labels(*job, str(plan.get("gpuType") or "")).set(gpus)
        self.trainingjob_restarts.labels(*job).set(float(status.get("restarts") or 0))
        started = status.get("startTime")
        if started:
            when = datetime.datetime.fromisoformat(str(started).replace("Z", "+00:00"))
            self.trainingjob_start_time.labels(*job).set(when.timestamp())
        self.set_usage(namespace, name, status.get("usage"))

    def set_usage(self, namespace: str, name: str, usage: Mapping[str, Any] | None) -> None:
        """GPU-seconds, dollars, energy and CO2e from ``status.usage``."""
        if not usage:
            return
        job = (namespace, name)
        self.usage_gpu_seconds.labels(*job).set(float(usage.get("gpuHours") or 0) * 3600)
        if usage.get("costUsd") is not None:
            self.usage_cost_usd.labels(*job).set(float(usage["costUsd"]))
        _remove_matching(self.usage_energy_joules, namespace=namespace, trainingjob=name)
        joules = float(usage.get("energyKwh") or 0) * 3.6e6
        self.usage_energy_joules.labels(*job, str(usage.get("energySource") or "")).set(joules)
        _remove_matching(self.usage_co2e_kilograms, namespace=namespace, trainingjob=name)
        kg = float(usage.get("kgCo2e") or 0)
        self.usage_co2e_kilograms.labels(*job, str(usage.get("zone") or "")).set(kg)

    def set_capacityplan(
        self,
        namespace: str,
        name: str,
        *,
        gpu_type: str,
        gpus: int,
        usd_per_hour: float,
        forecast: Mapping[str, Any] | None,
        demand_rps: float | None,
    ) -> None:
        """A CapacityPlan's recommendation and the forecast it was sized for."""
        plan = (namespace, name)
        self.recommended_gpus.labels(namespace=namespace, name=name).set(gpus)
        _remove_matching(self.capacityplan_gpus, namespace=namespace, capacityplan=name)
        self.capacityplan_gpus.labels(*plan, gpu_type).set(gpus)
        self.capacityplan_usd_per_hour.labels(*plan).set(usd_per_hour)
        if demand_rps is not None:
            self.capacityplan_demand.labels(*plan).set(demand_rps)
        if forecast:
            for band, key in (("mean", "peakRps"), ("p80", "p80Rps"), ("p95", "p95Rps")):
                self.capacityplan_forecast.labels(*plan, band).set(float(forecast[key]))
            self.capacityplan_sized_for.labels(*plan).set(float(forecast["sizedForRps"]))

    def set_cluster_gpus(self, pools: Sequence[Mapping[str, Any]]) -> None:
        """Allocatable and free GPUs per type (``Inventory.to_status()`` entries)."""
        for pool in pools:
            gpu_type = str(pool.get("gpuType") or pool.get("product") or "unknown")
            self.cluster_allocatable_gpus.labels(gpu_type).set(float(pool["allocatableGpus"]))
            self.cluster_free_gpus.labels(gpu_type).set(float(pool["freeGpus"]))

    def forget_trainingjob(self, namespace: str, name: str) -> None:
        """Drop a deleted TrainingJob from every gauge."""
        with self._lock:
            previous = self._phases.pop((namespace, name), None)
            if previous is not None:
                self.trainingjobs.labels(phase=previous.value).dec()
        for gauge in (self.planned_gpus, self.planned_cost_usd):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for per_job in (
            self.trainingjob_phase,
            self.planned_tokens_per_second,
            self.planned_memory_per_gpu,
            self.planned_usd_per_hour,
            self.requested_gpus,
            self.trainingjob_restarts,
            self.trainingjob_start_time,
            self.usage_gpu_seconds,
            self.usage_cost_usd,
            self.usage_energy_joules,
            self.usage_co2e_kilograms,
        ):
            _remove_matching(per_job, namespace=namespace, trainingjob=name)

    def forget_capacityplan(self, namespace: str, name: str) -> None:
        with contextlib.suppress(KeyError):
            self.recommended_gpus.remove(namespace, name)
        for per_plan in (
            self.capacityplan_gpus,
            self.capacityplan_usd_per_hour,
            self.capacityplan_demand,
            self.capacityplan_forecast,
            self.capacityplan_sized_for,
        ):
            _remove_matching(per_plan, namespace=namespace, capacityplan=name)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _remove_matching(gauge: Gauge, **labels: str) -> None:
    """Remove every series of ``gauge`` whose labels include ``labels``."""
    gauge.remove_by_labels(labels)


class _Handler(http.server.BaseHTTPRequestHandler):
    metrics: OperatorMetrics
    healthy: Callable[[], bool]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE_LATEST, self.metrics.exposition())
        elif path == "/healthz":
            ok = type(self).healthy()
            self._reply(200 if ok else 503, "text/plain", b"ok\n" if ok else b"not ready\n")
        else:
            self._reply(404, "text/plain", b"not found: try /metrics or /healthz\n")

    def _reply(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would flood the operator's log; stay quiet."""


def serve_metrics(
    metrics: OperatorMetrics,
    *,
    port: int,
    healthy: Callable[[], bool],
    host: str = "0.0.0.0",
) -> http.server.ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on a daemon thread; ``port`` 0 picks a free one."""
    handler = type(
        "MetricsHandler", (_Handler,), {"metrics": metrics, "healthy": staticmethod(healthy)}
    )
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server
