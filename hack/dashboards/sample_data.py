"""Two hours of what the operator and a trainer serve on /metrics, as Prometheus would store it.

The series are produced by the real metric-recording code: an ``OperatorMetrics``
reconciling TrainingJobs and a CapacityPlan, and a rank-0 ``TrainerMetrics`` logging
steps, checkpoints, spikes and rollbacks. Their exposition is scraped every
``SCRAPE_SECONDS`` of a simulated clock, given the target labels Prometheus would add
(the trainer pod's ``namespace`` and ``trainingjob`` from the PodMonitor's relabelling;
the operator scraped with ``honorLabels``) and written as OpenMetrics for
``promtool tsdb create-blocks-from openmetrics``. No GPU here, so the NVML gauge is set
as the trainer's sampler would set it. Kueue's controller is Go, so its queue metrics come
from :class:`KueueMetrics`, which registers them under Kueue's names and label names
(tests/e2e/test_queueing.py holds it to a scrape of the real Kueue) and is scraped the
way Kueue's own ServiceMonitor is (no honorLabels). tests/unit/test_dashboards.py runs every panel's
query against a Prometheus started on these blocks; hack/dashboards/render_png.py draws
docs/dashboards.md's pictures from the same data.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trainwright.operator.metrics import OperatorMetrics
from trainwright.operator.status import Phase
from trainwright_trainer.metrics import TrainerMetrics

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from prometheus_server import backfilled_prometheus

SCRAPE_SECONDS = 30
DURATION_SECONDS = 2 * 3600
RATE_INTERVAL = "2m"  # Grafana's $__rate_interval for a 30 s scrape at this zoom
NAMESPACE = "team-a"
TRAININGJOB = "llama8b-lora"
CAPACITY_NAMESPACE = "serving"
CAPACITYPLAN = "chat-serving"
OPERATOR_TARGET = {"job": "trainwright-operator", "instance": "10.244.0.12:8080"}
OPERATOR_NAMESPACE = "trainwright-system"
TRAINER_TARGET = {
    "job": "team-a/trainwright-trainer",
    "instance": "10.244.1.7:9090",
    "pod": "llama8b-lora-a0-0-x7k2p",
    "namespace": NAMESPACE,
    "trainingjob": TRAININGJOB,
}
# Kueue's controller, scraped through its own ServiceMonitor (no honorLabels: the
# LocalQueue's `namespace` label arrives as `exported_namespace`).
KUEUE_TARGET = {
    "job": "kueue-controller-manager-metrics-service",
    "instance": "10.244.0.9:8443",
    "namespace": "kueue-system",
}
# What the operator's reconcile writes for the run (see the Argo CD testdata).
PLAN = {
    "gpuType": "H100-SXM",
    "numGpus": 8,
    "tokensPerSecond": 63745.4,
    "memoryPerGpuBytes": 65855194726,
    "usdPerHour": 98.32,
    "estimatedCostUsd": 179.0,  # 2,400 steps at the planned rate: about 1.8 hours
}
TOTAL_STEPS = 2400


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp: float


def _scrape(
    registry_text: bytes, target: dict[str, str], at: float, *, honor_labels: bool = True
) -> list[Sample]:
    """Parse one exposition and add the target's labels: with honorLabels the exposed win,
    without them an exposed label the target also has is kept as ``exported_<name>``."""
    samples = []
    for family in text_string_to_metric_families(registry_text.decode()):
        for sample in family.samples:
            if honor_labels:
                labels = {**target, **sample.labels}
            else:
                exposed = {
                    f"exported_{key}" if key in target else key: value
                    for key, value in sample.labels.items()
                }
                labels = {**exposed, **target}
            if target is OPERATOR_TARGET:
                labels.setdefault("namespace", OPERATOR_NAMESPACE)
            samples.append(Sample(sample.name, tuple(sorted(labels.items())), sample.value, at))
    return samples


class _Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class KueueMetrics:
    """The Kueue v0.17 metrics the operator dashboard's queue row reads, by Kueue's names and
    label names (pkg/metrics/metrics.go; every series also carries ``replica_role``).
    tests/e2e/test_queueing.py checks each family against a scrape of the real Kueue."""

    ROLE = "standalone"  # leader election is off in a one-replica Kueue

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        local_queue = ["name", "namespace"]
        cluster_queue = ["cohort", "cluster_queue", "flavor", "resource", "replica_role"]
        self.local_queue_pending = Gauge(
            "kueue_local_queue_pending_workloads",
            "Pending workloads per LocalQueue and status.",
            [*local_queue, "status", "replica_role"],
            registry=self.registry,
        )
        self.local_queue_admitted_active = Gauge(
            "kueue_local_queue_admitted_active_workloads",
            "Admitted workloads not finished, per LocalQueue.",
            [*local_queue, "replica_role"],
            registry=self.registry,
        )
        self.local_queue_admission_wait = Histogram(
            "kueue_local_queue_admission_wait_time_seconds",
            "Time from a workload's creation to its admission, per LocalQueue.",
            [*local_queue, "priority_class", "replica_role"],
            buckets=[2.0**i for i in range(14)],
            registry=self.registry,
        )
        self.resource_usage = Gauge(
            "kueue_cluster_queue_resource_usage",
            "Resources in use per ClusterQueue and flavour.",
            cluster_queue,
            registry=self.registry,
        )
        self.nominal_quota = Gauge(
            "kueue_cluster_queue_nominal_quota",
            "Nominal quota per ClusterQueue and flavour.",
            cluster_queue,
            registry=self.registry,
        )
        self.preempted = Counter(
            "kueue_preempted_workloads",
            "Workloads preempted, by the preempting ClusterQueue and reason.",
            ["preempting_cluster_queue", "reason", "replica_role"],
            registry=self.registry,
        )
        self.evicted = Counter(
            "kueue_evicted_workloads",
            "Workloads evicted, per ClusterQueue and reason.",
            ["cluster_queue", "reason", "underlying_cause", "priority_class", "replica_role"],
            registry=self.registry,
        )

    def tick(self, tick: int, minutes: float) -> None:
        """Two teams' LocalQueues over the shipped ClusterQueue (hack/k8s/kueue/queues.yaml):
        team-a's run holds 8 H100 from minute 5, team-b's jobs come and go, and at minute
        70 a high-priority job preempts a low one of team-b."""
        role = self.ROLE
        team_b_running = 1 + (tick // 40) % 2
        for (namespace, name), active, waiting in (
            ((NAMESPACE, "gpu"), 1 if minutes >= 5 else 0, 1 if minutes < 5 else 0),
            (("team-b", "gpu"), team_b_running, 2 + int(2 * math.sin(tick / 11) ** 2)),
        ):
            self.local_queue_admitted_active.labels(name, namespace, role).set(active)
            self.local_queue_pending.labels(name, namespace, "active", role).set(waiting)
            self.local_queue_pending.labels(name, namespace, "inadmissible", role).set(
                1 if 60 <= minutes < 90 else 0
            )
        if tick % 10 == 0:  # an admission every five minutes, after a wait of minutes
            wait = 60 + 540 * math.sin(tick / 13) ** 2
            self.local_queue_admission_wait.labels("gpu", "team-b", "low", role).observe(wait)
        if tick == 10:
            self.local_queue_admission_wait.labels("gpu", NAMESPACE, "low", role).observe(280)
        h100 = 8 * (1 if minutes >= 5 else 0) + 8 * team_b_running
        for flavor, used, quota in (
            ("nvidia-h100-80gb-hbm3", min(h100, 16), 16),
            ("nvidia-a100-sxm4-80gb", 8, 32),
        ):
            labels = ("trainwright", "trainwright", flavor, "nvidia.com/gpu", role)
            self.resource_usage.labels(*labels).set(used)
            self.nominal_quota.labels(*labels).set(quota)
        if tick == 140:  # minute 70
            self.preempted.labels("trainwright", "InClusterQueue", role).inc()
            self.evicted.labels("trainwright", "Preempted", "", "low", role).inc()
        if tick == 0:  # the counters' series exist from the start
            self.preempted.labels("trainwright", "InClusterQueue", role).inc(0)
            self.evicted.labels("trainwright", "Preempted", "", "low", role).inc(0)


def simulate(end: float) -> list[Sample]:
    """Scrape a simulated two-hour run ending at ``end`` (Unix seconds)."""
    start = end - DURATION_SECONDS
    clock = _Clock(start)
    operator = OperatorMetrics()
    kueue = KueueMetrics()
    samples: list[Sample] = []
    with mock.patch("trainwright_trainer.metrics.time.time", clock):
        trainer = TrainerMetrics(enabled=True, port=0, progress_path=None, total_steps=TOTAL_STEPS)
        try:
            for tick in range(DURATION_SECONDS // SCRAPE_SECONDS + 1):
                clock.now = start + tick * SCRAPE_SECONDS
                _advance(operator, trainer, tick, clock.now, start)
                samples += _scrape(operator.exposition(), OPERATOR_TARGET, clock.now)
                samples += _scrape(generate_latest(trainer.registry), TRAINER_TARGET, clock.now)
                kueue.tick(tick, (clock.now - start) / 60)
                samples += _scrape(
                    generate_latest(kueue.registry), KUEUE_TARGET, clock.now, honor_labels=False
                )
        finally:
            trainer.close()
    return samples


def _advance(
    operator: OperatorMetrics, trainer: TrainerMetrics, tick: int, now: float, start: float
) -> None:
    """One scrape interval of the operator and the trainer."""
    minutes = (now - start) / 60
    operator_tick(operator, tick, minutes, start)
    if minutes < 5:
        return
    step = min(TOTAL_STEPS, int((minutes - 5) * 22))
    loss = 2.4 * math.exp(-step / 700) + 0.9 + 0.03 * math.sin(step / 17)
    tokens_per_second = 58_000 + 2_500 * math.sin(tick / 9)
    trainer.record_step(
        step=step,
        epoch=0,
        loss=loss,
        learning_rate=2e-4 * min(1.0, step / 100) * (1 - step / TOTAL_STEPS / 2),
        grad_norm=0.8 + 0.2 * math.sin(tick / 5) + (3.0 if tick % 97 == 0 else 0.0),
        tokens_per_second=tokens_per_second,
        mfu_ratio=tokens_per_second * 6 * 8.03e9 / (8 * 989e12),
        eta_seconds=(TOTAL_STEPS - step) / 22 * 60,
        write_file=False,
    )
    trainer.gpu_memory_used.labels(gpu="0").set(61.2e9 + 1.5e9 * math.sin(tick / 7))
    if tick % 20 == 0:  # every 10 minutes
        trainer.observe_checkpoint(4.0 + (tick % 3), step=step)
    if tick % 97 == 0:
        trainer.count(trainer.loss_spikes)
        trainer.count(trainer.skipped_steps, 2)
    if tick % 193 == 0:
        trainer.count(trainer.rollbacks)


def operator_tick(operator: OperatorMetrics, tick: int, minutes: float, start: float) -> None:
    """One scrape interval of an operator following one run, one waiting job and a plan."""
    phase = Phase.PENDING if minutes < 1 else Phase.PLANNED if minutes < 5 else Phase.RUNNING
    restarts = 0 if minutes < 70 else 1
    with operator.reconcile("TrainingJob"):
        operator.set_phase(NAMESPACE, TRAININGJOB, phase)
        operator.set_phase(NAMESPACE, "qwen7b-qlora", Phase.PENDING)
        if phase is not Phase.PENDING:
            operator.set_plan(NAMESPACE, TRAININGJOB, gpus=8, cost_usd=PLAN["estimatedCostUsd"])
            status: dict[str, Any] = {"phase": phase.value, "plan": PLAN, "restarts": restarts}
            if phase is Phase.RUNNING:
                status["startTime"] = time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 5 * 60)
                )
                status["usage"] = _usage((minutes - 5) / 60)
            operator.set_trainingjob_status(NAMESPACE, TRAININGJOB, status)
    operator.observe_api_request("PATCH", 0.018 + 0.01 * (tick % 4))
    operator.observe_api_request("GET", 0.006 + 0.004 * (tick % 3))
    if tick % 15 == 7:  # an API server hiccup now and then
        with contextlib.suppress(TimeoutError), operator.reconcile("CapacityPlan"):
            raise TimeoutError("the API server did not answer in time")
    with operator.reconcile("CapacityPlan"):
        demand = 14 + 6 * math.sin(2 * math.pi * minutes / 120)
        operator.set_cluster_gpus(
            [
                {
                    "gpuType": "H100-SXM",
                    "allocatableGpus": 16,
                    "freeGpus": 16 - (8 if minutes >= 5 else 0),
                },
                {"gpuType": "A100-80GB-SXM", "allocatableGpus": 32, "freeGpus": 30},
                {"gpuType": "L4", "allocatableGpus": 16, "freeGpus": 16},
            ]
        )
        operator.set_capacityplan(
            CAPACITY_NAMESPACE,
            CAPACITYPLAN,
            gpu_type="A100-80GB-SXM",
            gpus=2,
            usd_per_hour=10.24,
            forecast={"peakRps": 18.4, "p80Rps": 21.2, "p95Rps": 23.6, "sizedForRps": 23.6},
            demand_rps=demand,
        )


def _usage(hours: float) -> dict[str, Any]:
    """status.usage of the run: 8 H100s measured at 620 W each, AWS PUE, us-east-1's grid."""
    energy_kwh = 8 * 0.62 * hours * 1.15
    return {
        "gpuHours": 8 * hours,
        "costUsd": PLAN["usdPerHour"] * hours,
        "energyKwh": energy_kwh,
        "energySource": "measured",
        "kgCo2e": energy_kwh * 0.287,
        "zone": "US-SRVC",
    }


def openmetrics(samples: list[Sample]) -> str:
    """OpenMetrics text: one family per sample name, each series' points in time order."""
    by_name: dict[str, dict[tuple[tuple[str, str], ...], list[Sample]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for sample in samples:
        by_name[sample.name][sample.labels].append(sample)
    lines = []
    for name in sorted(by_name):
        lines.append(f"# TYPE {name} gauge")
        for labels, points in by_name[name].items():
            rendered = ",".join(f'{key}="{value}"' for key, value in labels)
            for point in sorted(points, key=lambda p: p.timestamp):
                lines.append(f"{name}{{{rendered}}} {point.value!r} {point.timestamp:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Server:
    url: str
    end: float


@contextlib.contextmanager
def prometheus_with_sample_data(root: Path) -> Iterator[Server]:
    """Backfill the simulated run (ending two minutes ago) and serve it from Prometheus."""
    end = float(int(time.time()) // SCRAPE_SECONDS * SCRAPE_SECONDS - 120)
    text = openmetrics(simulate(end))
    with backfilled_prometheus(root, text, scrape_interval=f"{SCRAPE_SECONDS}s") as url:
        yield Server(url=url, end=end)
