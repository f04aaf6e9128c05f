"""From a request-rate forecast to GPUs per step, sized by the planner.

A CapacityPlan sizes serving for the forecast peak at a chosen quantile. The
quantiles are read off the forecast bands: ``p50`` is the central path (the
median on a log scale, the mean otherwise), ``p80`` and ``p95`` are the upper
bounds of the 80 % and 95 % central intervals (so the 90th and 97.5th
percentiles: a plan sized at ``p95`` is short of capacity in about 1 step in 40).

The GPU type and tensor parallelism are chosen once, by
:func:`trainwright.planner.recommend_inference` at the peak of the chosen
quantile (or taken from the request), then every step is sized with
:func:`trainwright.planner.plan_inference` on that GPU: GPUs per step are
``replicas x tensor_parallel`` meeting the request's TTFT/ITL SLOs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from trainwright.forecast.engine import Band, ForecastResult
from trainwright.planner import InferencePlan, InferenceRequest, plan_inference, recommend_inference

Quantile = Literal["p50", "p80", "p95"]
QUANTILES: tuple[Quantile, ...] = ("p50", "p80", "p95")
# The planner needs a positive rate; below this a deployment still keeps one replica.
MIN_RPS = 1e-3


@dataclass(frozen=True)
class CapacityStep:
    """One forecast step: request rate and GPUs at each quantile."""

    timestamp: str
    rps: dict[str, float]
    replicas: dict[str, int]
    gpus: dict[str, int]


@dataclass(frozen=True)
class CapacityForecast:
    """GPUs needed per step and at the peak of the chosen quantile."""

    quantile: Quantile
    gpu: str
    tensor_parallel: int
    peak_timestamp: str
    peak_rps: float
    peak_replicas: int
    peak_gpus: int
    peak_usd_per_hour: float
    steps: tuple[CapacityStep, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantile": self.quantile,
            "gpu": self.gpu,
            "tensor_parallel": self.tensor_parallel,
            "peak": {
                "timestamp": self.peak_timestamp,
                "rps": self.peak_rps,
                "replicas": self.peak_replicas,
                "gpus": self.peak_gpus,
                "usd_per_hour": self.peak_usd_per_hour,
            },
            "steps": [
                {"timestamp": s.timestamp, "rps": s.rps, "replicas": s.replicas, "gpus": s.gpus}
                for s in self.steps
            ],
        }


def quantile_paths(band: Band) -> dict[Quantile, np.ndarray]:
    """Request rate per step at p50 (central path), p80 and p95 (upper band bounds)."""
    return {"p50": band.mean, "p80": band.upper[80], "p95": band.upper[95]}


def _round_up(rps: float) -> float:
    """Three significant digits, rounded up, so nearby steps share one planner call."""
    rps = max(rps, MIN_RPS)
    exponent = math.floor(math.log10(rps)) - 2
    return float(math.ceil(rps / 10**exponent) * 10**exponent)


def capacity_forecast(
    result: ForecastResult,
    request_template: InferenceRequest,
    quantile: Quantile = "p95",
    *,
    scenario: str | None = None,
) -> CapacityForecast:
    """GPUs per forecast step at p50/p80/p95, and the peak at ``quantile``.

    ``request_template`` is the workload (model, precision, token counts, SLOs);
    its ``rps`` is replaced by each step's forecast. ``scenario`` picks one of
    the result's scenarios instead of the base forecast. Planner errors (an
    unknown model, nothing that meets the SLOs) propagate as
    :class:`trainwright.planner.PlannerError`.
    """
    if quantile not in QUANTILES:
        raise ValueError(f"quantile must be one of {', '.join(QUANTILES)}; got {quantile!r}")
    if scenario is not None and scenario not in result.scenarios:
        known = ", ".join(result.scenarios) or "none"
        raise ValueError(f"scenario {scenario!r} is not in the forecast (it has: {known})")
    band = result.band if scenario is None else result.scenarios[scenario]
    paths = quantile_paths(band)
    peak_index = int(np.argmax(paths[quantile]))
    peak_rps = _round_up(float(paths[quantile][peak_index]))
    chooser = request_template.model_copy(update={"rps": peak_rps})
    peak_plan = plan_inference(chooser) if chooser.gpu else recommend_inference(chooser)
    fixed = request_template.model_copy(
        update={"gpu": peak_plan.gpu, "tensor_parallel": peak_plan.tensor_parallel}
    )
    cache: dict[float, InferencePlan] = {peak_rps: peak_plan}

    def plan_at(rps: float) -> InferencePlan:
        key = _round_up(rps)
        if key not in cache:
            cache[key] = plan_inference(fixed.model_copy(update={"rps": key}))
        return cache[key]

    steps = []
    for i, stamp in enumerate(result.timestamps):
        plans = {q: plan_at(float(paths[q][i])) for q in QUANTILES}
        steps.append(
            CapacityStep(
                timestamp=stamp.isoformat(),
                rps={q: round(float(paths[q][i]), 6) for q in QUANTILES},
                replicas={q: p.replicas for q, p in plans.items()},
                gpus={q: p.replicas * p.tensor_parallel for q, p in plans.items()},
            )
        )
    peak_step = max(steps, key=lambda s: (s.gpus[quantile], s.rps[quantile]))
    peak_gpus = peak_step.gpus[quantile]
    return CapacityForecast(
        quantile=quantile,
        gpu=peak_plan.gpu,
        tensor_parallel=peak_plan.tensor_parallel,
        peak_timestamp=peak_step.timestamp,
        peak_rps=peak_step.rps[quantile],
        peak_replicas=peak_step.replicas[quantile],
        peak_gpus=peak_gpus,
        peak_usd_per_hour=plan_at(peak_step.rps[quantile]).cost.usd_per_hour,
        steps=tuple(steps),
    )
