"""Trainwright's three Grafana dashboards, built with the typed grafana-foundation-sdk.

``make dashboards`` writes them as JSON into helm/trainwright/dashboards/ (the chart
ships them as ConfigMaps for the Grafana sidecar); tests/unit/test_dashboards.py fails
when the committed JSON drifts from this module, validates it against Grafana's
dashboard schema, applies the dashboard-linter's rules, parses every query and runs
each one against a real Prometheus.

Every query selects by the template variables: the operator's gauges carry
``namespace`` and ``trainingjob`` / ``capacityplan`` labels, and the trainer pods'
metrics get ``namespace`` and ``trainingjob`` from the PodMonitor's relabelling.
"""

from __future__ import annotations

from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    VisibilityMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    GridPos,
    VariableRefresh,
    VariableSort,
)

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'namespace=~"$namespace", trainingjob=~"$trainingjob"'
PLAN = 'namespace=~"$namespace", capacityplan=~"$capacityplan"'
TAGS = ["trainwright"]


@dataclass(frozen=True)
class Query:
    """One PromQL target and its legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    """What a panel shows: the question its title asks, the unit and the queries."""

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat"
    bars: bool = False


def _legend() -> VizLegendOptions:
    return (
        VizLegendOptions()
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def _targets(spec: PanelSpec) -> list[prometheus.Dataquery]:
    refs = "ABCDEFGH"
    return [
        prometheus.Dataquery()
        .expr(query.expr)
        .legend_format(query.legend)
        .ref_id(refs[i])
        .datasource(DATASOURCE)
        for i, query in enumerate(spec.queries)
    ]


def _panel(spec: PanelSpec, grid: GridPos) -> gd.Panel | stat.Panel | timeseries.Panel:
    if spec.kind == "stat":
        panel: stat.Panel | timeseries.Panel = (
            stat.Panel().graph_mode(BigValueGraphMode.AREA).min(0)
        )
    else:
        panel = timeseries.Panel().legend(_legend()).line_width(1).fill_opacity(10)
        if spec.bars:
            panel = panel.draw_style(GraphDrawStyle.BARS).show_points(VisibilityMode.NEVER)
    panel = (
        panel.title(spec.title)
        .description(spec.description)
        .unit(spec.unit)
        .datasource(DATASOURCE)
        .grid_pos(grid)
    )
    for target in _targets(spec):
        panel = panel.with_target(target)
    return panel


def _datasource_variable() -> gd.DatasourceVariable:
    return gd.DatasourceVariable("datasource").label("Data source").type("prometheus")


def _query_variable(name: str, label: str, query: str) -> gd.QueryVariable:
    return (
        gd.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _dashboard(
    uid: str, title: str, description: str, rows: list[tuple[str, list[PanelSpec]]]
) -> gd.Dashboard:
    board = (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("1m")
        .time("now-6h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
    )
    y = 0
    for row_title, specs in rows:
        board = board.with_row(gd.Row(row_title).grid_pos(GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        for i, spec in enumerate(specs):
            x, width = (i % 3) * 8, 8
            board = board.with_panel(_panel(spec, GridPos(h=8, w=width, x=x, y=y + (i // 3) * 8)))
        y += ((len(specs) + 2) // 3) * 8
    return board


# Training: for the ML engineer watching one run ---------------------------------------------


def training_panels() -> list[tuple[str, list[PanelSpec]]]:
    by_job = "namespace, trainingjob"
    return [
        (
            "Learning",
            [
                PanelSpec(
                    "Loss",
                    "Training loss of the last logged step (rank 0). A NaN or infinite value "
                    "fires TrainwrightLossNotFinite.",
                    "none",
                    (
                        Query(
                            f"max by ({by_job}) (trainwright_train_loss{{{JOB}}})",
                            "{{trainingjob}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Learning rate",
                    "Learning rate of the last logged step, after warm-up and decay.",
                    "none",
                    (
                        Query(
                            f"max by ({by_job}) (trainwright_learning_rate{{{JOB}}})",
                            "{{trainingjob}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Gradient norm",
                    "Global gradient norm before clipping; spikes precede loss spikes.",
                    "none",
                    (
                        Query(
                            f"max by ({by_job}) (trainwright_grad_norm{{{JOB}}})", "{{trainingjob}}"
                        ),
                    ),
                ),
            ],
        ),
        (
            "Speed and memory against the plan",
            [
                PanelSpec(
                    "Tokens per second against the plan",
                    "Trained tokens per second across all ranks, and what the plan expected "
                    "(status.plan.tokensPerSecond). Under 70% of plan for 15 minutes fires "
                    "TrainwrightThroughputBelowPlan.",
                    "short",
                    (
                        Query(
                            f"max by ({by_job}) (trainwright_tokens_per_second{{{JOB}}})",
                            "{{trainingjob}} measured",
                        ),
                        Query(
                            f"max by ({by_job}) (trainwright_trainingjob_planned_tokens_per_second{{{JOB}}})",
                            "{{trainingjob}} planned",
                        ),
                    ),
                ),
                PanelSpec(
                    "Model FLOPs utilisation",
                    "Achieved model FLOP/s over the GPUs' datasheet bf16 peak (0 on CPU).",
                    "percentunit",
                    (Query(f"max by ({by_job}) (trainwright_mfu{{{JOB}}})", "{{trainingjob}}"),),
                ),
                PanelSpec(
                    "GPU memory against the plan",
                    "Memory used per GPU (NVML, rank 0's node) and the plan's estimated peak per "
                    "GPU (status.plan.memoryPerGpuBytes).",
                    "bytes",
                    (
                        Query(
                            f"max by ({by_job}, gpu) (trainwright_gpu_memory_used_bytes{{{JOB}}})",
                            "{{trainingjob}} GPU {{gpu}} used",
                        ),
                        Query(
                            f"max by ({by_job}) (trainwright_trainingjob_planned_memory_per_gpu_bytes{{{JOB}}})",
                            "{{trainingjob}} planned",
                        ),
                    ),
                ),
            ],
        ),
        (
            "Progress",
            [
                PanelSpec(
                    "Step and total steps",
                    "Optimizer steps done and planned.",
                    "short",
                    (
                        Query(
                            f"max by ({by_job}) (trainwright_step{{{JOB}}})", "{{trainingjob}} step"
                        ),
                        Query(
                            f"max by ({by_job}) (trainwright_total_steps{{{JOB}}})",
                            "{{trainingjob}} total",
                        ),
                    ),
                    kind="stat",
                ),
                PanelSpec(
                    "Time to finish",
                    "Seconds left at the current rate, as the trainer estimates it.",
                    "s",
                    (
                        Query(
                            f"max by ({by_job}) (trainwright_eta_seconds{{{JOB}}})",
                            "{{trainingjob}}",
                        ),
                    ),
                    kind="stat",
                ),
                PanelSpec(
                    "Skipped steps, loss spikes and rollbacks",
                    "Steps skipped for non-finite gradients, loss spikes detected and rollbacks to "
                    "the last good checkpoint, per rate interval. Three spikes and rollbacks in 30 "
                    "minutes fire TrainwrightLossSpikesRepeated.",
                    "short",
                    (
                        Query(
                            f"sum by ({by_job}) (increase(trainwright_skipped_steps_total{{{JOB}}}[$__rate_interval]))",
                            "{{trainingjob}} skipped",
                        ),
                        Query(
                            f"sum by ({by_job}) (increase(trainwright_loss_spikes_total{{{JOB}}}[$__rate_interval]))",
                            "{{trainingjob}} spikes",
                        ),
                        Query(
                            f"sum by ({by_job}) (increase(trainwright_rollbacks_total{{{JOB}}}[$__rate_interval]))",
                            "{{trainingjob}} rollbacks",
                        ),
                    ),
                    bars=True,
                ),
            ],
        ),
        (
            "Checkpoints, restarts and cost",
            [
                PanelSpec(
                    "Checkpoint save time",
                    "95th percentile of the seconds from the start of a checkpoint save to its "
                    "publication.",
                    "s",
                    (
                        Query(
                            f"histogram_quantile(0.95, sum by ({by_job}, le) "
                            f"(rate(trainwright_checkpoint_save_seconds_bucket{{{JOB}}}[$__rate_interval])))",
                            "{{trainingjob}} p95",
                        ),
                    ),
                ),
                PanelSpec(
                    "Age of the last checkpoint",
                    "Seconds since the last checkpoint was published, against three times the "
                    "interval between the last two (TrainwrightCheckpointOverdue's threshold).",
                    "s",
                    (
                        Query(
                            f"time() - max by ({by_job}) (trainwright_last_checkpoint_timestamp_seconds{{{JOB}}} > 0)",
                            "{{trainingjob}} age",
                        ),
                        Query(
                            f"3 * max by ({by_job}) (trainwright_checkpoint_interval_seconds{{{JOB}}} > 0)",
                            "{{trainingjob}} alert threshold",
                        ),
                    ),
                ),
                PanelSpec(
                    "Restarts",
                    "Whole-gang restarts so far (status.restarts); each attempt resumes from the "
                    "last checkpoint. Two within an hour fire TrainwrightRestartsClimbing.",
                    "short",
                    (
                        Query(
                            f"max by ({by_job}) (trainwright_trainingjob_restarts{{{JOB}}})",
                            "{{trainingjob}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Cost: estimated against spent",
                    "The plan's estimated total cost, and what the run has spent so far "
                    "(status.usage.costUsd: the plan's price for the hours its pods ran, all "
                    "attempts), US dollars.",
                    "currencyUSD",
                    (
                        Query(
                            'max by (namespace, name) (trainwright_planned_cost_usd{namespace=~"$namespace", name=~"$trainingjob"})',
                            "{{name}} estimated",
                        ),
                        Query(
                            f"max by ({by_job}) (trainwright_trainingjob_cost_usd{{{JOB}}})",
                            "{{trainingjob}} spent",
                        ),
                    ),
                ),
                PanelSpec(
                    "Energy used so far",
                    "Facility energy of the run so far (status.usage.energyKwh): the GPUs' energy, "
                    "measured through NVML or estimated from their TDP, times the PUE.",
                    "joule",
                    (
                        Query(
                            f"max by ({by_job}, source) (trainwright_trainingjob_energy_joules{{{JOB}}})",
                            "{{trainingjob}} ({{source}})",
                        ),
                    ),
                ),
                PanelSpec(
                    "Emissions so far",
                    "kg CO2e of the energy so far at the grid's average intensity "
                    "(status.usage.gCo2ePerKwh, location-based; spec.carbon overrides it).",
                    "masskg",
                    (
                        Query(
                            f"max by ({by_job}, zone) (trainwright_trainingjob_co2e_kilograms{{{JOB}}})",
                            "{{trainingjob}} ({{zone}})",
                        ),
                    ),
                ),
            ],
        ),
    ]


def training() -> gd.Dashboard:
    return (
        _dashboard(
            "trainwright-training",
            "Trainwright / Training",
            "One TrainingJob's run: loss, speed and memory against its plan, progress, "
            "checkpoints, restarts and cost.",
            training_panels(),
        )
        .with_variable(_datasource_variable())
        .with_variable(
            _query_variable(
                "namespace", "Namespace", "label_values(trainwright_trainingjob_phase, namespace)"
            )
        )
        .with_variable(
            _query_variable(
                "trainingjob",
                "TrainingJob",
                'label_values(trainwright_trainingjob_phase{namespace=~"$namespace"}, trainingjob)',
            )
        )
    )


# Capacity: for the platform team ------------------------------------------------------------


def capacity_panels() -> list[tuple[str, list[PanelSpec]]]:
    by_plan = "namespace, capacityplan"
    return [
        (
            "Demand",
            [
                PanelSpec(
                    "Demand and its forecast",
                    "The latest demand the CapacityPlan read (requests/s), the forecast mean peak "
                    "over its horizon with the P80 and P95 upper bounds, and the rate the "
                    "recommendation is sized for.",
                    "reqps",
                    (
                        Query(
                            f"max by ({by_plan}) (trainwright_capacityplan_demand_requests_per_second{{{PLAN}}})",
                            "{{capacityplan}} demand",
                        ),
                        Query(
                            f'max by ({by_plan}, band) (trainwright_capacityplan_forecast_requests_per_second{{{PLAN}, band=~"mean|p80|p95"}})',
                            "{{capacityplan}} forecast {{band}}",
                        ),
                        Query(
                            f"max by ({by_plan}) (trainwright_capacityplan_sized_for_requests_per_second{{{PLAN}}})",
                            "{{capacityplan}} sized for",
                        ),
                    ),
                ),
                PanelSpec(
                    "Dollars per hour",
                    "Price of each CapacityPlan's recommendation per hour, US dollars, from the "
                    "spec's cloud price list.",
                    "currencyUSD",
                    (
                        Query(
                            f"max by ({by_plan}) (trainwright_capacityplan_usd_per_hour{{{PLAN}}})",
                            "{{capacityplan}}",
                        ),
                    ),
                ),
            ],
        ),
        (
            "GPUs",
            [
                PanelSpec(
                    "GPUs recommended, allocatable and requested",
                    "Per GPU type: GPUs the selected CapacityPlans recommend, GPUs allocatable on "
                    "the cluster's ready nodes, and GPUs requested by running TrainingJobs.",
                    "short",
                    (
                        Query(
                            f"sum by (gpu_type) (trainwright_capacityplan_gpus{{{PLAN}}})",
                            "{{gpu_type}} recommended",
                        ),
                        Query(
                            "sum by (gpu_type) (trainwright_cluster_allocatable_gpus)",
                            "{{gpu_type}} allocatable",
                        ),
                        Query(
                            "sum by (gpu_type) (trainwright_trainingjob_requested_gpus)",
                            "{{gpu_type}} requested by jobs",
                        ),
                    ),
                ),
                PanelSpec(
                    "Headroom",
                    "Per GPU type: allocatable GPUs left after the selected CapacityPlans' "
                    "recommendations (negative: the cluster is short), and GPUs free right now.",
                    "short",
                    (
                        Query(
                            "sum by (gpu_type) (trainwright_cluster_allocatable_gpus) - "
                            f"sum by (gpu_type) (trainwright_capacityplan_gpus{{{PLAN}}})",
                            "{{gpu_type}} headroom",
                        ),
                        Query(
                            "sum by (gpu_type) (trainwright_cluster_free_gpus)",
                            "{{gpu_type}} free now",
                        ),
                    ),
                ),
            ],
        ),
    ]


def capacity() -> gd.Dashboard:
    return (
        _dashboard(
            "trainwright-capacity",
            "Trainwright / Capacity",
            "CapacityPlans by GPU type: demand and its forecast band, GPUs recommended "
            "against what the cluster holds and what running jobs use, dollars per hour.",
            capacity_panels(),
        )
        .with_variable(_datasource_variable())
        .with_variable(
            _query_variable(
                "namespace", "Namespace", "label_values(trainwright_capacityplan_gpus, namespace)"
            )
        )
        .with_variable(
            _query_variable(
                "capacityplan",
                "CapacityPlan",
                'label_values(trainwright_capacityplan_gpus{namespace=~"$namespace"}, capacityplan)',
            )
        )
    )


# Operator -----------------------------------------------------------------------------------


def operator_panels() -> list[tuple[str, list[PanelSpec]]]:
    return [
        (
            "Reconciles",
            [
                PanelSpec(
                    "Reconciles per kind",
                    "Reconciles finished per second, by kind and result (success, error).",
                    "ops",
                    (
                        Query(
                            "sum by (kind, result) (rate(trainwright_reconciles_total[$__rate_interval]))",
                            "{{kind}} {{result}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Reconcile errors per kind",
                    "Reconciles that raised, per second, by kind and exception type. Over 10% of "
                    "a kind's reconciles for 15 minutes fire TrainwrightReconcileErrorsHigh.",
                    "ops",
                    (
                        Query(
                            "sum by (kind, reason) (rate(trainwright_reconcile_errors_total[$__rate_interval]))",
                            "{{kind}} {{reason}}",
                        ),
                    ),
                    bars=True,
                ),
                PanelSpec(
                    "Reconcile latency",
                    "50th and 95th percentile wall time of one reconcile, by kind.",
                    "s",
                    (
                        Query(
                            "histogram_quantile(0.5, sum by (kind, le) "
                            "(rate(trainwright_reconcile_duration_seconds_bucket[$__rate_interval])))",
                            "{{kind}} p50",
                        ),
                        Query(
                            "histogram_quantile(0.95, sum by (kind, le) "
                            "(rate(trainwright_reconcile_duration_seconds_bucket[$__rate_interval])))",
                            "{{kind}} p95",
                        ),
                    ),
                ),
                PanelSpec(
                    "Kubernetes API latency",
                    "95th percentile latency of the operator's own Kubernetes API requests, by "
                    "HTTP verb.",
                    "s",
                    (
                        Query(
                            "histogram_quantile(0.95, sum by (verb, le) "
                            "(rate(trainwright_api_request_duration_seconds_bucket[$__rate_interval])))",
                            "{{verb}} p95",
                        ),
                    ),
                ),
            ],
        ),
        (
            "TrainingJobs",
            [
                PanelSpec(
                    "TrainingJobs by phase",
                    "TrainingJobs the operator knows, by phase.",
                    "short",
                    (Query("sum by (phase) (trainwright_trainingjobs)", "{{phase}}"),),
                ),
                PanelSpec(
                    "TrainingJobs waiting for a plan",
                    "TrainingJobs in phase Pending: created but not planned yet.",
                    "short",
                    (Query('sum(trainwright_trainingjobs{phase="Pending"})', "waiting"),),
                    kind="stat",
                ),
            ],
        ),
    ]


# What Kueue itself serves (its /metrics; LocalQueue metrics are on by default since
# v0.17): a platform team's view of the queues the TrainingJobs wait in. Kueue's own
# ServiceMonitor does not honour labels, so a LocalQueue's namespace arrives as
# ``exported_namespace`` (``namespace`` is Kueue's own, kueue-system).
GPU = 'resource="nvidia.com/gpu"'


def queue_panels() -> list[tuple[str, list[PanelSpec]]]:
    by_local_queue = "exported_namespace, name"
    return [
        (
            "Queues (Kueue)",
            [
                PanelSpec(
                    "Workloads waiting per LocalQueue",
                    "Workloads (a TrainingJob's Job is one) waiting for admission, per "
                    "LocalQueue: active ones are in line, inadmissible ones wait for the "
                    "cluster to change (quota freed, a flavour added). A TrainingJob waiting "
                    "over 30 minutes fires TrainwrightTrainingJobWaitingToStart.",
                    "short",
                    (
                        Query(
                            f"sum by ({by_local_queue}, status) "
                            "(kueue_local_queue_pending_workloads)",
                            "{{exported_namespace}}/{{name}} {{status}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Admitted workloads per LocalQueue",
                    "Workloads admitted and not finished, per LocalQueue: the jobs holding "
                    "quota now.",
                    "short",
                    (
                        Query(
                            f"sum by ({by_local_queue}) "
                            "(kueue_local_queue_admitted_active_workloads)",
                            "{{exported_namespace}}/{{name}}",
                        ),
                    ),
                ),
                PanelSpec(
                    "Time to admission per LocalQueue",
                    "95th percentile wait from a workload's creation to its admission, per "
                    "LocalQueue, over the rate interval.",
                    "s",
                    (
                        Query(
                            f"histogram_quantile(0.95, sum by ({by_local_queue}, le) "
                            "(rate(kueue_local_queue_admission_wait_time_seconds_bucket"
                            "[$__rate_interval])))",
                            "{{exported_namespace}}/{{name}} p95",
                        ),
                    ),
                ),
                PanelSpec(
                    "GPU quota in use per ClusterQueue and flavour",
                    "GPUs held by admitted workloads against the nominal quota, per "
                    "ClusterQueue and flavour (one flavour per GPU product).",
                    "short",
                    (
                        Query(
                            "sum by (cluster_queue, flavor) "
                            f"(kueue_cluster_queue_resource_usage{{{GPU}}})",
                            "{{cluster_queue}} {{flavor}} in use",
                        ),
                        Query(
                            "sum by (cluster_queue, flavor) "
                            f"(kueue_cluster_queue_nominal_quota{{{GPU}}})",
                            "{{cluster_queue}} {{flavor}} quota",
                        ),
                    ),
                ),
                PanelSpec(
                    "Preemptions and evictions",
                    "Workloads preempted per second, by the ClusterQueue that preempted and "
                    "why, and workloads evicted, by reason. A preempted TrainingJob goes back "
                    "to Queued and resumes from its last checkpoint when admitted again.",
                    "ops",
                    (
                        Query(
                            "sum by (preempting_cluster_queue, reason) "
                            "(rate(kueue_preempted_workloads_total[$__rate_interval]))",
                            "preempted by {{preempting_cluster_queue}}: {{reason}}",
                        ),
                        Query(
                            "sum by (cluster_queue, reason) "
                            "(rate(kueue_evicted_workloads_total[$__rate_interval]))",
                            "evicted from {{cluster_queue}}: {{reason}}",
                        ),
                    ),
                    bars=True,
                ),
            ],
        ),
    ]


def operator() -> gd.Dashboard:
    return _dashboard(
        "trainwright-operator",
        "Trainwright / Operator",
        "The operator itself: reconciles and errors per kind, reconcile and API latency, "
        "TrainingJobs by phase and those waiting for a plan; and the Kueue queues they wait "
        "in: waiting and admitted workloads per LocalQueue, time to admission, GPU quota in "
        "use, preemptions.",
        operator_panels() + queue_panels(),
    ).with_variable(_datasource_variable())


DASHBOARDS = {"training": training, "capacity": capacity, "operator": operator}
