"""The operator's Prometheus metrics and its ``/metrics`` + ``/healthz`` HTTP endpoint.

Names carry the ``trainwright_`` prefix and base units; counters end in
``_total`` (prometheus-client appends it). Metrics live in their own registry
held by :class:`OperatorMetrics`, so tests and several operators in one
process do not share state.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator

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

    def set_plan(self, namespace: str, name: str, *, gpus: int, cost_usd: float | None) -> None:
        self.planned_gpus.labels(namespace=namespace, name=name).set(gpus)
        if cost_usd is not None:
            self.planned_cost_usd.labels(namespace=namespace, name=name).set(cost_usd)

    def forget_trainingjob(self, namespace: str, name: str) -> None:
        """Drop a deleted TrainingJob from every gauge."""
        with self._lock:
            previous = self._phases.pop((namespace, name), None)
            if previous is not None:
                self.trainingjobs.labels(phase=previous.value).dec()
        for gauge in (self.planned_gpus, self.planned_cost_usd):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)

    def forget_capacityplan(self, namespace: str, name: str) -> None:
        with contextlib.suppress(KeyError):
            self.recommended_gpus.remove(namespace, name)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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
