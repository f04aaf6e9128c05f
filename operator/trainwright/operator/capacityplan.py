"""The CapacityPlan controller: size a workload and say what the cluster holds today.

For an inference workload the planner picks GPU type, tensor parallelism and
replicas for the request rate (the forecast's peak at the chosen quantile
when a forecast source is given); for a training workload it picks the
cheapest layout. Status carries the recommendation, the ranked alternatives
(each marked whether the live cluster's free GPUs hold it), the inventory and
the forecast summary. With a forecast source a daemon re-runs the plan every
``spec.forecast.refreshSeconds``.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
from typing import Any

import kopf

from trainwright.api.plans import (
    inference_request_from,
    recommendation_from_inference,
    recommendation_from_training,
)
from trainwright.api.v1alpha1 import (
    GROUP,
    VERSION,
    CapacityPlan,
    InvalidResourceError,
    Recommendation,
)
from trainwright.api.v1alpha1.capacityplan import (
    ForecastSpec,
    ForecastStatus,
    ServingObservedStatus,
)
from trainwright.operator.calibration_store import disabled_for
from trainwright.operator.context import OperatorContext, context_from_memo
from trainwright.operator.inventory import Inventory, build_inventory
from trainwright.operator.planning import training_request
from trainwright.operator.serving_metrics import ServingMetricsError, read_serving_metrics
from trainwright.operator.status import find_condition, set_condition, utc_timestamp
from trainwright.planner.calibration import Calibration, CalibrationError, parse_calibration
from trainwright.planner.errors import InfeasibleError, PlannerError
from trainwright.planner.inference import InferencePlan, plan_inference, recommend_inference
from trainwright.planner.training import TrainingPlan, recommend_training

KIND = "CapacityPlan"
PLURAL = "capacityplans"
MAX_RECOMMENDATIONS = 20

logger = logging.getLogger(__name__)


# Pure parts ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemandForecast:
    """The forecast peaks over the horizon and the rate the plan is sized for."""

    status: ForecastStatus
    sized_for_rps: float
    result: Any = None  # the trainwright.forecast ForecastResult, for the next refresh
    latest_rps: float | None = None  # the history's last point (the Capacity dashboard's demand)


def forecast_demand(
    forecast_spec: ForecastSpec,
    *,
    now: datetime.datetime,
    models: tuple[str, ...] | None = None,
    previous: Any = None,
) -> DemandForecast:
    """Forecast the demand history and pick the peak at ``forecast_spec.quantile``.

    The inline source is used as written; a Prometheus source is queried over
    its lookback window ending ``now``. ``models`` None is the forecaster's
    default ensemble. ``previous``, the ``result`` of an earlier call for the same
    spec, makes this a rolling update: the models it chose are refitted on the new
    history, and the full search runs again only when their error has drifted.
    """
    import pandas as pd

    from trainwright.forecast import DEFAULT_MODELS, forecast, from_pairs, prepare, update

    source = forecast_spec.source
    if source.inline is not None:
        history = from_pairs(
            [point.timestamp for point in source.inline], [point.value for point in source.inline]
        )
    else:
        from trainwright.forecast.prometheus import fetch_query_range

        prometheus = source.prometheus
        assert prometheus is not None  # the model validator guarantees one source
        end = pd.Timestamp(now)
        history = fetch_query_range(
            prometheus.url,
            prometheus.query,
            start=end - pd.Timedelta(seconds=prometheus.lookback_seconds),
            end=end,
            step_seconds=prometheus.step_seconds,
        )
    prepared = prepare(history, season_lengths=forecast_spec.season_lengths or None)
    interval_seconds = max(1, int(prepared.series.interval.seconds))
    steps = max(1, math.ceil(forecast_spec.horizon_seconds / interval_seconds))
    if previous is not None:
        result = update(previous, prepared, horizon=steps)
    else:
        result = forecast(prepared, horizon=steps, models=models or DEFAULT_MODELS)
    peaks = {
        "mean": float(result.band.mean.max()),
        "p80": float(result.band.upper[80].max()),
        "p95": float(result.band.upper[95].max()),
    }
    sized = max(peaks[forecast_spec.quantile], 0.0)
    status = ForecastStatus(
        peak_rps=max(peaks["mean"], 0.0),
        p80_rps=max(peaks["p80"], 0.0),
        p95_rps=max(peaks["p95"], 0.0),
        sized_for_rps=sized,
        quantile=forecast_spec.quantile,
        horizon_seconds=forecast_spec.horizon_seconds,
        interval_seconds=interval_seconds,
        mase=result.backtest.mase if math.isfinite(result.backtest.mase) else None,
        generated_time=now,
        refresh=result.refresh,
    )
    latest = float(prepared.series.values[-1])
    return DemandForecast(
        status=status,
        sized_for_rps=sized,
        result=result,
        latest_rps=latest if math.isfinite(latest) else None,
    )


def inference_recommendations(plan: InferencePlan, inventory: Inventory) -> list[Recommendation]:
    """The plan and its alternatives as status entries, marked whether they fit today."""
    result = []
    for option in [plan, *plan.recommendations][:MAX_RECOMMENDATIONS]:
        pool = inventory.pools.get(option.gpu)
        holds = pool.replicas_holding(option.tensor_parallel) if pool is not None else 0
        fits = holds >= option.replicas
        result.append(
            recommendation_from_inference(option).model_copy(update={"fits_inventory": fits})
        )
    return result


def training_recommendations(plan: TrainingPlan, inventory: Inventory) -> list[Recommendation]:
    result = []
    for option in [plan, *plan.recommendations][:MAX_RECOMMENDATIONS]:
        check = inventory.check(option.gpu, nodes=option.nodes, gpus_per_node=option.gpus_per_node)
        result.append(
            recommendation_from_training(option).model_copy(
                update={"fits_inventory": check.fits_now}
            )
        )
    return result


def inventory_status(
    inventory: Inventory, best: Recommendation, *, now: datetime.datetime
) -> dict[str, Any]:
    """``status.inventory``: GPUs per product, and how much of the recommendation fits now."""
    pool = inventory.pools.get(best.gpu_type)
    replicas_today = pool.replicas_holding(best.tensor_parallel) if pool is not None else 0
    entries = [
        {
            "gpuType": entry["gpuType"],
            "gpuProduct": entry["product"],
            "nodes": entry["nodes"],
            "allocatableGpus": entry["allocatableGpus"],
            "freeGpus": entry["freeGpus"],
        }
        for entry in inventory.to_status()
    ]
    return {
        "gpus": entries,
        "fitsToday": bool(best.fits_inventory),
        # A training run is one gang: it runs today or it does not.
        "replicasToday": (1 if best.fits_inventory else 0) if best.strategy else replicas_today,
        "observedTime": utc_timestamp(now),
    }


def describe_recommendation(best: Recommendation, sized_for_rps: float | None) -> str:
    where = f"{best.replicas} replica(s) x {best.tensor_parallel} {best.gpu_type}"
    if best.strategy:
        where = f"{best.gpus} x {best.gpu_type} with {best.strategy}"
    load = f" for {sized_for_rps:.1f} requests/s" if sized_for_rps is not None else ""
    today = "fits" if best.fits_inventory else "does not fit"
    serving = ""
    if best.batch is not None and best.ttft_p95_seconds is not None:
        serving = (
            f" (batch {best.batch} per replica, TTFT p95 {best.ttft_p95_seconds * 1000:,.0f} ms, "
            f"ITL p95 {(best.itl_p95_seconds or 0) * 1000:,.1f} ms, "
            f"{(best.headroom or 0):.0%} headroom)"
        )
    return (
        f"Recommend {where}{load}{serving} at ${best.usd_per_hour:,.2f}/h; "
        f"it {today} the cluster's free GPUs today."
    )


# Handlers ------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_capacityplan(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    reconcile(context_from_memo(memo), namespace or "default", name)


def _has_forecast(spec: Any, **_: Any) -> bool:
    return bool(spec.get("forecast"))


@kopf.daemon(GROUP, VERSION, PLURAL, when=_has_forecast, cancellation_timeout=5)
def refresh_forecast(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """Re-forecast and re-plan every ``spec.forecast.refreshSeconds`` while a source is set."""
    context = context_from_memo(memo)
    while not stopped:
        body = context.kube.get_custom(PLURAL, namespace or "default", name)
        if body is None:
            return
        refresh = ((body.get("spec") or {}).get("forecast") or {}).get("refreshSeconds", 3600)
        stopped.wait(float(refresh))
        if not stopped:
            reconcile(context, namespace or "default", name)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def on_capacityplan_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    context = context_from_memo(memo)
    context.metrics.forget_capacityplan(namespace or "default", name)
    context.forecasts.pop((namespace or "default", name), None)


# Reconcile -----------------------------------------------------------------------------------


def reconcile(context: OperatorContext, namespace: str, name: str) -> None:
    with context.locks.hold(KIND, namespace, name), context.metrics.reconcile(KIND):
        body = context.kube.get_custom(PLURAL, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        _plan(context, body)


def _plan(context: OperatorContext, body: dict[str, Any]) -> None:
    now = context.now()
    try:
        plan = CapacityPlan.from_body(body)
    except InvalidResourceError as exc:
        _write(context, body, "Failed", [("Planned", False, "InvalidSpec", str(exc))], {})
        return
    nodes, pods = context.kube.nodes_and_pods()
    inventory = build_inventory(nodes, pods)
    conditions: list[tuple[str, bool | None, str, str]] = []
    extra: dict[str, Any] = {}
    rps = plan.spec.workload.inference.rps if plan.spec.workload.inference else None
    context.metrics.set_cluster_gpus(inventory.to_status())
    demand_rps = rps
    if plan.spec.forecast is not None:
        key = (plan.namespace, plan.name)
        spec_key = plan.spec.forecast.model_dump_json()
        cached = context.forecasts.get(key)
        previous = cached[1] if cached is not None and cached[0] == spec_key else None
        try:
            demand = forecast_demand(
                plan.spec.forecast, now=now, models=context.forecast_models, previous=previous
            )
        except Exception as exc:
            # A forecast that cannot be made (no Prometheus, a series the models
            # reject) must not stop the plan for today's rate: report and go on.
            detail = f"{type(exc).__name__}: {exc}"
            conditions.append(
                ("Forecasted", False, "ForecastFailed", f"Forecast failed: {detail}.")
            )
        else:
            context.forecasts[key] = (spec_key, demand.result)
            rps = demand.sized_for_rps
            demand_rps = demand.latest_rps
            extra["forecast"] = demand.status.to_manifest()
            conditions.append(
                ("Forecasted", True, "Forecasted", f"Sized for {plan.spec.forecast.quantile} "
                 f"peak demand {rps:.2f} requests/s.")
            )  # fmt: skip
    calibration, serving = _calibration(context, plan, now, conditions)
    if serving is not None:
        extra["serving"] = serving.to_manifest()
    try:
        recommendations = _recommend(plan, inventory, rps, calibration)
    except InfeasibleError as exc:
        message = f"Nothing fits: {exc}."
        conditions.append(("Planned", False, "DoesNotFit", message))
        _write(context, body, "Infeasible", conditions, extra | {"message": message})
        return
    except ValueError as exc:  # PlannerError, or a request the planner's model rejects
        message = f"CapacityPlan spec: {exc}."
        conditions.append(("Planned", False, "InvalidSpec", message))
        _write(context, body, "Failed", conditions, extra | {"message": message})
        return
    best = recommendations[0]
    message = describe_recommendation(best, rps)
    conditions.append(("Planned", True, "Planned", message))
    extra |= {
        "recommendation": best.to_manifest(),
        "recommendations": [r.to_manifest() for r in recommendations],
        "inventory": inventory_status(inventory, best, now=now),
        "message": message,
    }
    _write(context, body, "Planned", conditions, extra)
    context.metrics.set_capacityplan(
        plan.namespace,
        plan.name,
        gpu_type=best.gpu_type,
        gpus=best.gpus,
        usd_per_hour=best.usd_per_hour,
        forecast=extra.get("forecast"),
        demand_rps=demand_rps,
    )


def _recommend(
    plan: CapacityPlan,
    inventory: Inventory,
    rps: float | None,
    calibration: Calibration | None = None,
) -> list[Recommendation]:
    spec = plan.spec
    if spec.workload.inference is not None:
        request = inference_request_from(spec, rps=rps).model_copy(
            update={"calibration": calibration}
        )
        return inference_recommendations(recommend_inference(request), inventory)
    assert spec.workload.training is not None  # the model validator guarantees one of the two
    training = training_request(spec.workload.training, spec.gpu_types or None).model_copy(
        update={"calibration": calibration}
    )
    return training_recommendations(recommend_training(training), inventory)


def _parsed(observations: list[dict[str, Any]], source: str) -> Calibration | None:
    try:
        return parse_calibration({"observations": observations}, source=source)
    except CalibrationError as exc:
        logger.warning("calibration ignored: %s", exc)
        return None


def _calibration(
    context: OperatorContext,
    plan: CapacityPlan,
    now: datetime.datetime,
    conditions: list[tuple[str, bool | None, str, str]],
) -> tuple[Calibration | None, ServingObservedStatus | None]:
    """The cluster's calibration store plus, with spec.servingMetrics, the live servers'
    observation; the ``Calibrated`` condition says what was used."""
    store = context.calibration_store
    observations: list[dict[str, Any]] = []
    source = "calibration"
    if store is not None and not disabled_for(plan.metadata):
        observations = list(store.document().get("observations") or [])
        source = store.source
    metrics, workload = plan.spec.serving_metrics, plan.spec.workload.inference
    if metrics is None or workload is None:
        if not observations:
            return None, None
        return _parsed(observations, source), None
    try:
        observed = read_serving_metrics(metrics, workload, now=now)
    except ServingMetricsError as exc:
        conditions.append(("Calibrated", False, "ServingMetricsUnavailable", f"{exc}."))
        if not observations:
            return None, None
        return _parsed(observations, source), None
    calibration = _parsed(
        [*observations, observed.as_calibration(workload)], f"{source} and {metrics.url}"
    )
    if calibration is None:
        return None, None
    probe = inference_request_from(plan.spec).model_copy(
        update={"calibration": calibration, "gpu": metrics.gpu_type, "rps": None, "batch": 1}
    )
    try:
        summary = plan_inference(probe).calibration
    except PlannerError:
        summary = None
    factor = summary.throughput_factor if summary is not None else 1.0
    ratio = observed.output_tokens_per_second / max(observed.planned_output_tokens_per_second, 1e-9)
    conditions.append(
        (
            "Calibrated",
            True,
            "ServingMetrics",
            f"{observed.replicas} live replica(s) on {observed.gpu_type} served "
            f"{observed.output_tokens_per_second:,.0f} output tokens/s each at batch "
            f"{observed.batch}, {ratio:.0%} of the {observed.planned_output_tokens_per_second:,.0f} "
            f"planned; {observed.gpu_type} plans run at x{factor:.2f}.",
        )
    )
    status = ServingObservedStatus(
        gpu_type=observed.gpu_type,
        tensor_parallel=observed.tensor_parallel,
        replicas=observed.replicas,
        batch=observed.batch,
        observed_output_tokens_per_second=observed.output_tokens_per_second,
        planned_output_tokens_per_second=observed.planned_output_tokens_per_second,
        ttft_p50_seconds=observed.ttft_p50_seconds,
        itl_p50_seconds=observed.itl_p50_seconds,
        throughput_factor=factor,
        observed_time=now.replace(microsecond=0),
    )
    return calibration, status


def _write(
    context: OperatorContext,
    body: dict[str, Any],
    phase: str,
    conditions: list[tuple[str, bool | None, str, str]],
    extra: dict[str, Any],
) -> None:
    """Patch the status (timestamps of unchanged conditions kept); Event on a new outcome."""
    now = context.now()
    status = dict(body.get("status") or {})
    generation = int(body["metadata"].get("generation") or 1)
    updated = list(status.get("conditions") or [])
    for type_, value, reason, message in conditions:
        updated = set_condition(
            updated,
            type_=type_,
            status=value,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )
    patch = {"phase": phase, "observedGeneration": generation, "conditions": updated, **extra}
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    context.kube.patch_status(PLURAL, namespace, name, patch)
    old = find_condition(status.get("conditions") or [], "Planned")
    _, _, reason, message = conditions[-1]
    if status.get("phase") != phase or old is None or old.get("message") != message:
        context.post_event(body, "Normal" if phase == "Planned" else "Warning", reason, message)
        logger.info("%s %s/%s: %s: %s", KIND, namespace, name, phase, message)
