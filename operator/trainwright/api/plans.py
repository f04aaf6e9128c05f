"""Planner results as status fields: the controller stores these, the builders read them.

The builders take :class:`PlanStatus` (what is in ``status.plan``), not the
planner's object, so a restarted operator rebuilds the same children from the
stored plan instead of re-planning (prices or the inventory may have moved).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

from trainwright.api.profiles import with_profile
from trainwright.api.v1alpha1.capacityplan import (
    CapacityPlanSpec,
    ForecastStatus,
    Quantile,
    Recommendation,
)
from trainwright.api.v1alpha1.trainingjob import (
    PlanAlternative,
    PlanCalibration,
    PlannedStrategy,
    PlanStatus,
    TrainingWorkload,
)
from trainwright.planner.calibration import CalibrationSummary
from trainwright.planner.errors import PlannerError
from trainwright.planner.inference import InferencePlan, InferenceRequest
from trainwright.planner.lookup import get_gpu
from trainwright.planner.memory import AdapterTargets, target_modules
from trainwright.planner.specs import ModelSpec
from trainwright.planner.training import TrainingPlan, TrainingRequest
from trainwright.vocabulary import LOSS_CHUNK_TOKENS, Method

if TYPE_CHECKING:
    # Only the result's attributes are read; importing the forecaster (pandas,
    # statsmodels) here would slow every importer of the API models.
    from trainwright.forecast import ForecastResult

MAX_ALTERNATIVES = 5


def gpu_product_label(gpu_type: str) -> str | None:
    """The ``nvidia.com/gpu.product`` value GPU feature discovery reports for a catalog GPU."""
    try:
        labels = get_gpu(gpu_type).product_labels
    except PlannerError:
        return None
    return labels[0] if labels else None


def training_request_from(
    workload: TrainingWorkload,
    *,
    model_spec: ModelSpec | None = None,
    gpu_candidates: list[str] | None = None,
    memory_fraction: float = 1.0,
) -> TrainingRequest:
    """The planner request a TrainingJob spec (or a CapacityPlan training workload) asks for.

    ``model_spec`` is required for a ``model.configPath`` (the caller reads the
    config.json; this module does no I/O). ``gpu_candidates`` restricts
    ``gpuType: auto`` to the GPU types the cluster has. ``memory_fraction`` below 1
    leaves headroom on each GPU (the operator's re-plan after an out-of-memory exit).
    """
    if workload.model.name is None and model_spec is None:
        raise ValueError("spec.model.configPath needs the parsed config.json as model_spec")
    workload = with_profile(workload)
    resources = workload.resources
    training = workload.training
    budget = workload.budget
    return TrainingRequest(
        model=model_spec if model_spec is not None else str(workload.model.name),
        method=workload.method,
        gpu=None if resources.gpu_type == "auto" else resources.gpu_type,
        num_gpus=resources.gpus,
        nodes=resources.nodes,
        gpus_per_node=resources.gpus_per_node,
        max_gpus=resources.max_gpus,
        strategy=workload.strategy,
        precision=training.precision,
        micro_batch=training.micro_batch_size,
        seq_len=training.seq_len,
        gradient_checkpointing=training.gradient_checkpointing,
        optimizer=training.optimizer,
        lora_rank=workload.lora.rank if workload.lora is not None else 16,
        lora_targets=_lora_targets(workload),
        # The trainer's pods fuse the head with the loss (trainwright_trainer.loss).
        loss_chunk_tokens=LOSS_CHUNK_TOKENS,
        dataset_tokens=workload.dataset.tokens,
        epochs=float(training.epochs),
        cloud=workload.cloud,
        global_batch_size=training.global_batch_size,
        deadline_seconds=budget.deadline_seconds if budget is not None else None,
        max_cost_usd=budget.max_cost_usd if budget is not None else None,
        gpu_candidates=None if resources.gpu_type != "auto" else gpu_candidates,
        memory_fraction=memory_fraction,
    )


def _lora_targets(workload: TrainingWorkload) -> AdapterTargets:
    """``spec.lora.targetModules`` as the planner counts them (all linears by default)."""
    if workload.lora is None:
        return "all"
    try:
        return target_modules(workload.lora.target_modules)
    except PlannerError as exc:
        raise PlannerError(f"spec.lora.targetModules: {exc}") from None


def plan_status_from(plan: TrainingPlan, *, now: dt.datetime | None = None) -> PlanStatus:
    """``status.plan`` for a planner result; ``now`` anchors ``estimatedFinishTime``."""
    started = now if now is not None else dt.datetime.now(dt.UTC)
    finish = (
        started + dt.timedelta(seconds=plan.duration_seconds)
        if plan.duration_seconds is not None
        else None
    )
    return PlanStatus(
        gpu_type=plan.gpu,
        method=cast(Method, plan.method),
        method_reason=plan.method_reason,
        # TrainingJobs plan whole epochs (spec.training.epochs is an integer).
        epochs=max(1, round(plan.epochs)),
        gpu_product=gpu_product_label(plan.gpu),
        num_gpus=plan.num_gpus,
        nodes=plan.nodes,
        gpus_per_node=plan.gpus_per_node,
        strategy=cast(PlannedStrategy, plan.strategy),
        micro_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.gradient_accumulation,
        # The trainer recomputes whole layers; a selective plan needs at least that.
        gradient_checkpointing=plan.gradient_checkpointing != "off",
        memory_per_gpu_bytes=plan.memory.per_gpu_bytes,
        memory_capacity_bytes=plan.memory.capacity_bytes,
        tokens_per_second=plan.throughput.tokens_per_second,
        estimated_duration_seconds=plan.duration_seconds,
        estimated_cost_usd=plan.cost.total_usd,
        usd_per_hour=plan.cost.usd_per_hour,
        estimated_finish_time=finish,
        recommendations=[
            PlanAlternative(
                gpu_type=alt.gpu,
                num_gpus=alt.num_gpus,
                strategy=alt.strategy,
                estimated_duration_seconds=alt.duration_seconds,
                estimated_cost_usd=alt.cost.total_usd,
            )
            for alt in plan.recommendations[:MAX_ALTERNATIVES]
        ],
        warnings=list(plan.warnings),
        calibration=plan_calibration_from(plan.calibration),
    )


def plan_calibration_from(summary: CalibrationSummary | None) -> PlanCalibration | None:
    """A plan's ``calibration`` object for status (None when the plan was made without one)."""
    if summary is None:
        return None
    return PlanCalibration(
        applied=summary.applied,
        observations=summary.observations,
        throughput_factor=summary.throughput_factor,
        memory_factor=summary.memory_factor,
        roofline_capped=summary.roofline_capped,
        source=summary.source or None,
    )


def recommendation_from_training(plan: TrainingPlan) -> Recommendation:
    """A CapacityPlan recommendation for a training workload (one replica of the whole run)."""
    return Recommendation(
        gpu_type=plan.gpu,
        gpus=plan.num_gpus,
        replicas=1,
        tensor_parallel=plan.tensor_parallel,
        usd_per_hour=plan.cost.usd_per_hour,
        strategy=plan.strategy,
        estimated_duration_seconds=plan.duration_seconds,
        estimated_cost_usd=plan.cost.total_usd,
    )


def inference_request_from(
    spec: CapacityPlanSpec,
    *,
    rps: float | None = None,
    gpu_candidates: list[str] | None = None,
) -> InferenceRequest:
    """The planner request for a CapacityPlan's inference workload.

    ``rps`` overrides the manifest's rate (the forecast peak the plan is sized
    for); the GPU types searched are ``spec.gpuTypes`` intersected with
    ``gpu_candidates`` when both are given.
    """
    workload = spec.workload.inference
    if workload is None:
        raise ValueError("spec.workload.inference is not set; this plan sizes a training run")
    if workload.model.name is None:
        raise ValueError("spec.workload.inference.model needs a catalog name for inference sizing")
    candidates = list(spec.gpu_types) or None
    if gpu_candidates is not None:
        candidates = [g for g in (candidates or gpu_candidates) if g in gpu_candidates]
    return InferenceRequest(
        model=workload.model.name,
        precision=workload.precision,
        tensor_parallel=workload.tensor_parallel,
        prompt_tokens=workload.prompt_tokens,
        output_tokens=workload.output_tokens,
        batch=None if rps is not None else workload.batch,
        rps=rps if rps is not None else workload.rps,
        ttft_slo_ms=workload.ttft_slo_ms,
        itl_slo_ms=workload.itl_slo_ms,
        cloud=spec.cloud,
        gpu_candidates=candidates,
    )


def recommendation_from_inference(plan: InferencePlan) -> Recommendation:
    """A CapacityPlan recommendation for a serving plan (replicas x tensor-parallel GPUs)."""
    return Recommendation(
        gpu_type=plan.gpu,
        gpus=plan.replicas * plan.tensor_parallel,
        replicas=plan.replicas,
        tensor_parallel=plan.tensor_parallel,
        usd_per_hour=plan.cost.usd_per_hour,
        requests_per_second=plan.throughput.requests_per_second,
        ttft_seconds=plan.latency.ttft_seconds,
        itl_seconds=plan.latency.itl_seconds,
        usd_per_million_tokens=plan.cost.usd_per_million_tokens,
        batch=plan.batch,
        ttft_p50_seconds=plan.latency.ttft_p50_seconds,
        ttft_p95_seconds=plan.latency.ttft_p95_seconds,
        itl_p50_seconds=plan.latency.itl_p50_seconds,
        itl_p95_seconds=plan.latency.itl_p95_seconds,
        headroom=plan.throughput.headroom,
    )


def forecast_status_from(
    result: ForecastResult,
    *,
    quantile: Quantile,
    horizon_seconds: int,
    now: dt.datetime | None = None,
) -> ForecastStatus:
    """``status.forecast``: the horizon's peaks of the mean and of the 80% / 95% upper bounds."""
    peak_rps = float(result.band.mean.max())
    p80_rps = float(result.band.upper[80].max())
    p95_rps = float(result.band.upper[95].max())
    sized_for = {"mean": peak_rps, "p80": p80_rps, "p95": p95_rps}[quantile]
    return ForecastStatus(
        peak_rps=round(max(peak_rps, 0.0), 4),
        p80_rps=round(max(p80_rps, 0.0), 4),
        p95_rps=round(max(p95_rps, 0.0), 4),
        sized_for_rps=round(max(sized_for, 0.0), 4),
        quantile=quantile,
        horizon_seconds=horizon_seconds,
        interval_seconds=result.interval_seconds,
        mase=round(result.backtest.mase, 4),
        generated_time=now if now is not None else dt.datetime.now(dt.UTC),
    )
