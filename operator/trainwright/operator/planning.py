"""From a TrainingJob spec and the cluster's GPUs to the plan stored in ``status.plan``.

Pure: the handler passes the validated resource and the inventory it read.
The user's GPU type, count and strategy are honoured; with ``gpuType: auto``
the planner searches only the GPU types present in the cluster. A plan must
also fit the cluster's nodes (nodes x GPUs per node on nodes of that type);
the ranked alternatives are tried in order, and a layout wider than the
cluster's nodes is re-planned across more, smaller nodes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

from trainwright.api.plans import plan_status_from, training_request_from
from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.api.v1alpha1.trainingjob import PlanAlternative, TrainingWorkload
from trainwright.api.v1alpha1.usage import CarbonSpec, plan_carbon_from
from trainwright.operator.inventory import CapacityCheck, Inventory
from trainwright.planner.calibration import Calibration
from trainwright.planner.carbon import training_plan_carbon
from trainwright.planner.errors import InfeasibleError, PlannerError
from trainwright.planner.lookup import model_from_hf_config
from trainwright.planner.specs import ModelSpec
from trainwright.planner.training import (
    TrainingPlan,
    TrainingRequest,
    plan_training,
    recommend_training,
)

GIB = 2**30
MAX_ALTERNATIVES = 10  # status.plan.recommendations holds at most 10


@dataclasses.dataclass(frozen=True)
class PlanOutcome:
    """A plan (None when planning failed), the condition reason and a sentence for people.

    ``reason`` is ``Planned``, ``InvalidSpec``, ``DoesNotFit`` (no layout has
    the memory) or ``InsufficientCapacity`` (the cluster lacks the nodes).
    """

    plan: PlanStatus | None
    reason: str
    message: str


def _model_spec(workload: TrainingWorkload) -> ModelSpec | None:
    """The architecture of a ``model.configPath`` model, read from the operator's filesystem."""
    model = workload.model
    if model.name is not None:
        return None
    path = Path(model.config_path or "")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlannerError(
            f"spec.model.configPath {model.config_path!r} is not a config.json the operator "
            f"can read ({exc.__class__.__name__}); name a catalog model in spec.model.name"
        ) from None
    return model_from_hf_config(config, name=path.parent.name or "custom")


def training_request(
    workload: TrainingWorkload, gpu_candidates: list[str] | None, memory_fraction: float = 1.0
) -> TrainingRequest:
    """The planner's request; ``gpu_candidates`` restrict ``gpuType: auto``."""
    return training_request_from(
        workload,
        model_spec=_model_spec(workload),
        gpu_candidates=gpu_candidates,
        memory_fraction=memory_fraction,
    )


def plan_trainingjob(
    job: TrainingJob,
    inventory: Inventory,
    *,
    memory_fraction: float = 1.0,
    calibration: Calibration | None = None,
) -> PlanOutcome:
    """Plan ``job`` for this cluster: a fitting plan, or the reason and what would fit.

    ``memory_fraction`` below 1 makes every GPU count as that share of its memory;
    ``calibration`` (the cluster's store, operator.calibration_store) corrects the physics.
    """
    candidates = inventory.gpu_types()
    if job.spec.resources.gpu_type == "auto" and not candidates:
        return PlanOutcome(
            None,
            "InsufficientCapacity",
            "spec.resources.gpuType is auto, but the cluster has no GPU nodes labelled "
            "nvidia.com/gpu.product with allocatable nvidia.com/gpu.",
        )
    try:
        request = training_request(job.spec, candidates, memory_fraction)
        if calibration is not None:
            request = request.model_copy(update={"calibration": calibration})
        top = plan_training(request)
    except InfeasibleError as exc:
        return PlanOutcome(None, "DoesNotFit", f"No layout fits in GPU memory: {exc}.")
    except (PlannerError, ValueError) as exc:
        return PlanOutcome(None, "InvalidSpec", f"TrainingJob spec: {exc}.")
    if not top.fits:
        return PlanOutcome(_to_status(top, inventory), "DoesNotFit", _does_not_fit(top, request))
    pinned_layout = job.spec.resources.gpus_per_node is not None
    widened = (
        o if pinned_layout else _fit_node_width(o, request, inventory)
        for o in [top, *top.recommendations]
    )
    # Lazily: the rest is re-planned only when the cheapest must wait (a deadline, busy GPUs).
    fitting = (o for o in widened if o.fits and _check(inventory, o).fits_cluster)
    cheapest = next(fitting, None)
    if cheapest is not None:
        option, why = _free_now_before_deadline(job, cheapest, fitting, inventory)
        status = _with_carbon(_to_status(option, inventory, top), option, job)
        return PlanOutcome(status, "Planned", why + describe(option))
    check = inventory.check(top.gpu, nodes=top.nodes, gpus_per_node=top.gpus_per_node)
    return PlanOutcome(_to_status(top, inventory), "InsufficientCapacity", check.message)


def _free_now_before_deadline(
    job: TrainingJob, cheapest: TrainingPlan, others: Iterator[TrainingPlan], inventory: Inventory
) -> tuple[TrainingPlan, str]:
    """The cheapest fitting plan, or with ``gpuType: auto`` and a deadline a GPU type free now.

    A plan on busy GPUs starts when they free up, which nothing here can predict; with
    ``budget.deadlineSeconds`` that wait may cost the deadline, so a later-ranked plan whose
    GPUs are free now and that meets the deadline on its own is preferred, and the sentence
    returned (before the plan's own) says which and why. Without a deadline, or when the
    inventory counts no pods (free unknown), or when no free option meets it, the cheapest
    plan stands and waits.
    """
    budget = job.spec.budget
    deadline = budget.deadline_seconds if budget is not None else None
    if job.spec.resources.gpu_type != "auto" or deadline is None or not inventory.pods_counted:
        return cheapest, ""
    if _check(inventory, cheapest).fits_now:
        return cheapest, ""
    for option in others:
        on_time = option.duration_seconds is not None and option.duration_seconds <= deadline
        if option.gpu != cheapest.gpu and on_time and _check(inventory, option).fits_now:
            return option, _preferred_sentence(option, cheapest, inventory, deadline)
    return cheapest, ""


def _check(inventory: Inventory, plan: TrainingPlan) -> CapacityCheck:
    return inventory.check(plan.gpu, nodes=plan.nodes, gpus_per_node=plan.gpus_per_node)


def _preferred_sentence(
    chosen: TrainingPlan, cheaper: TrainingPlan, inventory: Inventory, deadline: float
) -> str:
    pool = inventory.pools[cheaper.gpu]
    price = ""
    if chosen.cost.total_usd is not None and cheaper.cost.total_usd is not None:
        price = f" (about ${cheaper.cost.total_usd:,.2f} against ${chosen.cost.total_usd:,.2f})"
    return (
        f"GPU type {chosen.gpu}, free now, over the cheaper {cheaper.num_gpus} x {cheaper.gpu}"
        f"{price}: only {pool.free_gpus} of its {pool.allocatable_gpus} GPUs are free and "
        f"nothing says when {cheaper.num_gpus} will be, so waiting for them could miss the "
        f"{_duration_text(deadline)} deadline (spec.budget.deadlineSeconds). "
    )


def _fit_node_width(
    plan: TrainingPlan, request: TrainingRequest, inventory: Inventory
) -> TrainingPlan:
    """Re-plan across more nodes when the cluster's nodes of that GPU are narrower."""
    pool = inventory.pools.get(plan.gpu)
    if pool is None or plan.gpus_per_node <= pool.max_gpus_per_node:
        return plan
    width = pool.max_gpus_per_node
    if plan.num_gpus % width:
        return plan
    narrower = request.model_copy(
        update={
            "gpu": plan.gpu,
            "num_gpus": plan.num_gpus,
            "nodes": plan.num_gpus // width,
            "gpus_per_node": width,
            "strategy": plan.strategy,
            "gpu_candidates": None,
        }
    )
    try:
        return plan_training(narrower)
    except PlannerError:
        return plan


def _does_not_fit(plan: TrainingPlan, request: TrainingRequest) -> str:
    need = plan.memory.per_gpu_bytes / GIB
    have = plan.memory.capacity_bytes / GIB
    sentence = (
        f"{plan.num_gpus} x {plan.gpu} does not fit: each GPU would need {need:.1f} GiB "
        f"and has {have:.1f} GiB"
    )
    if request.memory_fraction < 1:
        sentence += f", of which a plan may use {have * request.memory_fraction:.1f} GiB"

    try:
        wider = recommend_training(
            request.model_copy(update={"num_gpus": None, "nodes": None, "gpus_per_node": None})
        )
    except PlannerError:
        return sentence + "; no count of this GPU fits either."
    return sentence + f"; {wider.num_gpus} x {wider.gpu} with {wider.strategy} would fit."


def describe(plan: TrainingPlan) -> str:
    """One sentence a person reads in ``kubectl describe`` and the Planned event."""
    parts = [
        f"Planned {plan.nodes} node(s) x {plan.gpus_per_node} {plan.gpu}, {plan.strategy}, "
        f"micro-batch {plan.micro_batch} x {plan.gradient_accumulation} accumulation",
        f"{plan.memory.per_gpu_bytes / GIB:.1f} of {plan.memory.capacity_bytes / GIB:.0f} GiB "
        "per GPU",
        f"{plan.throughput.tokens_per_second:,.0f} tokens/s",
    ]
    if plan.duration_seconds is not None:
        parts.append(f"about {_duration_text(plan.duration_seconds)}")
    if plan.cost.total_usd is not None:
        parts.append(f"about ${plan.cost.total_usd:,.2f}")
    return "; ".join(parts) + "." + calibration_sentence(plan)


def calibration_sentence(plan: TrainingPlan) -> str:
    """What the calibration store did to the plan, as a sentence after the plan's (or "")."""
    summary = plan.calibration
    if summary is None:
        return ""
    if not summary.observations:
        return (
            f" Calibration: no observed run of this shape among {summary.available} in "
            f"{summary.source}; the physics alone."
        )
    capped = ", capped at the GPU's roofline" if summary.roofline_capped else ""
    return (
        f" Calibrated from {summary.observations} observed run(s) of this shape in "
        f"{summary.source}: throughput x{summary.throughput_factor:.2f}{capped}, memory "
        f"x{summary.memory_factor:.2f}."
    )


def _duration_text(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(seconds / 60, 1):.0f} min"
    return f"{seconds / 3600:.1f} h"


def _to_status(
    plan: TrainingPlan, inventory: Inventory, ranked_from: TrainingPlan | None = None
) -> PlanStatus:
    """``status.plan`` (the API's conversion) with the product label this cluster's nodes
    carry, and as alternatives the rest of the search (the chosen option may be one of them).
    """
    status = plan_status_from(plan)
    pool = inventory.pools.get(plan.gpu)
    ranked = ranked_from or plan
    chosen = (plan.gpu, plan.num_gpus, plan.strategy)
    alternatives = [
        PlanAlternative(
            gpu_type=alt.gpu,
            num_gpus=alt.num_gpus,
            strategy=alt.strategy,
            estimated_duration_seconds=alt.duration_seconds,
            estimated_cost_usd=alt.cost.total_usd,
        )
        for alt in [ranked, *ranked.recommendations]
        if (alt.gpu, alt.num_gpus, alt.strategy) != chosen
    ]
    return status.model_copy(
        update={
            "gpu_product": pool.product if pool is not None else status.gpu_product,
            "recommendations": alternatives[:MAX_ALTERNATIVES],
        }
    )


def _with_carbon(status: PlanStatus, plan: TrainingPlan, job: TrainingJob) -> PlanStatus:
    """``status.plan.carbon``: the whole run's energy and CO2e where ``spec.carbon`` (or the
    region of ``spec.cloud``'s prices) says; none without a planned duration."""
    carbon = job.spec.carbon or CarbonSpec()
    try:
        estimate = training_plan_carbon(
            plan,
            location=carbon.region,
            g_co2e_per_kwh=carbon.grid_intensity_g_co2e_per_kwh,
            pue=carbon.pue,
        )
    except PlannerError:  # a device without a TDP in the catalog: the plan stands without it
        return status
    return status.model_copy(update={"carbon": plan_carbon_from(estimate)})
