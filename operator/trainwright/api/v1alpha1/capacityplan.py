"""CapacityPlan: how many GPUs of which type a workload needs, today and at the forecast peak.

The operator never runs anything for a CapacityPlan: it sizes the workload with
the planner, optionally forecasts demand (Prometheus or inline history), checks
what the live cluster can hold, and writes the ranked answer to ``status``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from trainwright.api.v1alpha1.common import (
    LIST_MAX_ITEMS,
    URI_MAX_LENGTH,
    ApiModel,
    Condition,
    CustomResource,
    conditions_field,
    k8s,
    rule,
)
from trainwright.api.v1alpha1.trainingjob import ModelRef, TrainingWorkload
from trainwright.vocabulary import Cloud, InferencePrecision

Quantile = Literal["mean", "p80", "p95"]
CapacityPhase = Literal["Pending", "Planned", "Infeasible", "Failed"]
INLINE_MAX_POINTS = 10000


class InferenceWorkload(ApiModel):
    """A model served with latency targets at a request rate."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "!(has(self.rps) && has(self.batch))",
                        "set at most one of rps or batch",
                    )
                ]
            }
        )
    )

    model: ModelRef = Field(description="The served model.")
    precision: InferencePrecision = Field(default="bf16", description="Weight precision.")
    prompt_tokens: int = Field(default=512, gt=0, le=1048576, description="Tokens per prompt.")
    output_tokens: int = Field(default=256, gt=0, le=1048576, description="Tokens per answer.")
    rps: float | None = Field(
        default=None, gt=0, description="Requests per second to serve (the forecast may raise it)."
    )
    batch: int | None = Field(default=None, gt=0, description="Concurrent sequences per replica.")
    ttft_slo_ms: float | None = Field(
        default=None, gt=0, description="Time-to-first-token target, milliseconds."
    )
    itl_slo_ms: float | None = Field(
        default=None, gt=0, description="Inter-token latency target, milliseconds."
    )
    tensor_parallel: int | None = Field(
        default=None, gt=0, le=64, description="GPUs per replica; unset: the planner chooses."
    )

    @model_validator(mode="after")
    def _rps_or_batch(self) -> InferenceWorkload:
        if self.rps is not None and self.batch is not None:
            raise ValueError("set at most one of rps or batch")
        return self


class WorkloadSpec(ApiModel):
    """Exactly one workload: inference serving or a training run."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "has(self.inference) != has(self.training)",
                        "workload: set exactly one of inference or training",
                    )
                ]
            }
        )
    )

    inference: InferenceWorkload | None = Field(default=None, description="A served model.")
    training: TrainingWorkload | None = Field(
        default=None, description="A training run (the TrainingJob spec fields)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> WorkloadSpec:
        if (self.inference is None) == (self.training is None):
            raise ValueError("set exactly one of inference or training")
        return self


class PrometheusSource(ApiModel):
    """A PromQL query whose result is the demand history (requests per second)."""

    url: str = Field(
        min_length=1,
        max_length=URI_MAX_LENGTH,
        pattern=r"^https?://",
        description="Prometheus base URL (http://prometheus:9090).",
    )
    query: str = Field(
        min_length=1, max_length=4096, description="PromQL returning one series of demand."
    )
    lookback_seconds: int = Field(
        default=1209600, gt=0, description="History to fit on, seconds (default 14 days)."
    )
    step_seconds: int = Field(
        default=3600, gt=0, description="Sampling interval of the history, seconds."
    )


class DemandPoint(ApiModel):
    """One observation of demand."""

    timestamp: dt.datetime = Field(description="When (RFC 3339).")
    value: float = Field(ge=0, description="Demand at that time (requests per second).")


class ForecastSource(ApiModel):
    """Exactly one place the demand history comes from."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "has(self.prometheus) != has(self.inline)",
                        "forecast.source: set exactly one of prometheus or inline",
                    )
                ]
            }
        )
    )

    prometheus: PrometheusSource | None = Field(default=None, description="Query Prometheus.")
    inline: list[DemandPoint] | None = Field(
        default=None,
        min_length=1,
        max_length=INLINE_MAX_POINTS,
        description="History written into the manifest (regular interval, oldest first).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ForecastSource:
        if (self.prometheus is None) == (self.inline is None):
            raise ValueError("set exactly one of prometheus or inline")
        return self


class ForecastSpec(ApiModel):
    """Size for forecast demand rather than today's rps."""

    source: ForecastSource = Field(description="Where the demand history comes from.")
    horizon_seconds: int = Field(
        default=604800, gt=0, description="How far ahead to forecast, seconds (default 7 days)."
    )
    quantile: Quantile = Field(
        default="p95",
        description="Size for the peak of the mean, or the upper 80% / 95% prediction bound.",
    )
    season_lengths: list[int] = Field(
        default_factory=list,
        max_length=8,
        description="Seasonal periods in samples; empty: inferred from the interval.",
    )
    refresh_seconds: int = Field(
        default=3600, ge=60, description="Re-forecast this often, seconds."
    )


class ServingMetricsSource(ApiModel):
    """A Prometheus with live vLLM servers' metrics, which calibrate the serving model.

    Read over the last ``windowSeconds``: vllm:generation_tokens_total (output tokens/s),
    vllm:num_requests_running (the batch, and the replicas: one series each),
    vllm:time_to_first_token_seconds and vllm:inter_token_latency_seconds (or, from older
    vLLM, vllm:time_per_output_token_seconds) histograms. docs/planner.md says how.
    """

    url: str = Field(
        min_length=1,
        max_length=URI_MAX_LENGTH,
        pattern=r"^https?://",
        description="Prometheus base URL (http://prometheus:9090).",
    )
    selector: str = Field(
        default="",
        max_length=1024,
        pattern=r"^(\{.*\})?$",
        description='PromQL label matchers picking the servers, e.g. {model_name="llama-3.1-8b"}.',
    )
    gpu_type: str = Field(min_length=1, max_length=64, description="GPU catalog key they run on.")
    tensor_parallel: int = Field(default=1, gt=0, le=64, description="GPUs per server replica.")
    window_seconds: int = Field(
        default=900, ge=60, le=86400, description="Rates and quantiles over this window, seconds."
    )


class CapacityPlanSpec(ApiModel):
    """What to size."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "!has(self.servingMetrics) || has(self.workload.inference)",
                        "servingMetrics calibrates serving: it needs workload.inference",
                    )
                ]
            }
        )
    )

    workload: WorkloadSpec = Field(description="The workload to size.")
    forecast: ForecastSpec | None = Field(
        default=None, description="Optional: size for the forecast peak."
    )
    gpu_types: list[str] = Field(
        default_factory=list,
        max_length=LIST_MAX_ITEMS,
        description="GPU catalog keys to consider; empty: every type in the catalog.",
        json_schema_extra=k8s(items={"maxLength": 64, "type": "string"}),
    )
    cloud: Cloud = Field(default="aws", description="Price list used for costs.")
    serving_metrics: ServingMetricsSource | None = Field(
        default=None,
        description="Optional, inference only: calibrate the serving model from live vLLM metrics.",
    )

    @model_validator(mode="after")
    def _serving_metrics_for_inference(self) -> CapacityPlanSpec:
        if self.serving_metrics is not None and self.workload.inference is None:
            raise ValueError("servingMetrics calibrates serving: it needs workload.inference")
        return self


class Recommendation(ApiModel):
    """One way to run the workload."""

    gpu_type: str = Field(max_length=64, description="GPU catalog key.")
    gpus: int = Field(gt=0, description="Total GPUs (replicas x tensorParallel for inference).")
    replicas: int = Field(default=1, gt=0, description="Serving replicas (1 for training).")
    tensor_parallel: int = Field(default=1, gt=0, description="GPUs per replica.")
    usd_per_hour: float = Field(ge=0, description="Price of all its GPUs per hour, US dollars.")
    requests_per_second: float | None = Field(
        default=None, ge=0, description="Requests per second it serves within the SLOs."
    )
    ttft_seconds: float | None = Field(
        default=None, ge=0, description="Time to first token, 95th percentile, s."
    )
    itl_seconds: float | None = Field(
        default=None, ge=0, description="Mean inter-token latency, s."
    )
    batch: int | None = Field(
        default=None, gt=0, description="Sequences each replica runs at once (its batch)."
    )
    ttft_p50_seconds: float | None = Field(
        default=None, ge=0, description="Median time to first token, s."
    )
    ttft_p95_seconds: float | None = Field(
        default=None, ge=0, description="95th-percentile time to first token, s."
    )
    itl_p50_seconds: float | None = Field(
        default=None, ge=0, description="Median inter-token latency, s."
    )
    itl_p95_seconds: float | None = Field(
        default=None,
        ge=0,
        description="95th-percentile inter-token latency (steps that carry prefill chunks), s.",
    )
    headroom: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of the replicas' sustainable request rate the load leaves free.",
    )
    usd_per_million_tokens: float | None = Field(
        default=None, ge=0, description="Serving cost per million output tokens, US dollars."
    )
    strategy: str | None = Field(
        default=None, max_length=32, description="Training parallelism strategy."
    )
    estimated_duration_seconds: float | None = Field(
        default=None, ge=0, description="Training wall time, seconds."
    )
    estimated_cost_usd: float | None = Field(
        default=None, ge=0, description="Training cost, US dollars."
    )
    fits_inventory: bool | None = Field(
        default=None, description="Whether the live cluster has these GPUs free today."
    )


class InventoryEntry(ApiModel):
    """GPUs of one type on the live cluster."""

    gpu_type: str | None = Field(
        default=None, max_length=64, description="Catalog key; unset for unknown products."
    )
    gpu_product: str = Field(max_length=63, description="nvidia.com/gpu.product label value.")
    nodes: int = Field(ge=0, description="Ready nodes with this product.")
    allocatable_gpus: int = Field(ge=0, description="Sum of allocatable nvidia.com/gpu.")
    free_gpus: int = Field(ge=0, description="Allocatable GPUs not requested by running pods.")


class InventoryStatus(ApiModel):
    """What the live cluster can hold today."""

    gpus: list[InventoryEntry] = Field(
        default_factory=list, max_length=LIST_MAX_ITEMS, description="GPUs per product."
    )
    fits_today: bool | None = Field(
        default=None, description="Whether the recommendation fits the free GPUs now."
    )
    replicas_today: int | None = Field(
        default=None, ge=0, description="Replicas of the recommendation the free GPUs hold."
    )
    observed_time: dt.datetime | None = Field(default=None, description="When it was counted.")


class ForecastStatus(ApiModel):
    """The demand forecast the plan was sized for."""

    peak_rps: float = Field(ge=0, description="Highest forecast mean over the horizon, rps.")
    p80_rps: float = Field(ge=0, description="Highest upper 80% bound over the horizon, rps.")
    p95_rps: float = Field(ge=0, description="Highest upper 95% bound over the horizon, rps.")
    sized_for_rps: float = Field(ge=0, description="The rate the recommendation serves.")
    quantile: Quantile = Field(description="Which of the three it was sized for.")
    horizon_seconds: int = Field(gt=0, description="Forecast horizon, seconds.")
    interval_seconds: int | None = Field(
        default=None, gt=0, description="Sampling interval of the history, seconds."
    )
    mase: float | None = Field(
        default=None, ge=0, description="Backtest mean absolute scaled error (below 1 beats naive)."
    )
    generated_time: dt.datetime | None = Field(default=None, description="When it was computed.")
    refresh: str | None = Field(
        default=None,
        description=(
            "How it was computed: 'full' (model search and backtest), 'refit' (the previous "
            "models refitted on new points), or 'full: <reason>' when the error drifted."
        ),
    )


class ServingObservedStatus(ApiModel):
    """What the live servers did (spec.servingMetrics) against what the physics plans."""

    gpu_type: str = Field(max_length=64, description="GPU catalog key of the live servers.")
    tensor_parallel: int = Field(gt=0, description="GPUs per replica.")
    replicas: int = Field(ge=0, description="Server replicas seen (series of running requests).")
    batch: int = Field(gt=0, description="Mean requests running per replica over the window.")
    observed_output_tokens_per_second: float = Field(
        ge=0, description="Output tokens/s per replica, observed."
    )
    planned_output_tokens_per_second: float = Field(
        ge=0, description="Output tokens/s per replica the physics plans at that batch."
    )
    ttft_p50_seconds: float | None = Field(default=None, ge=0, description="Observed median TTFT.")
    itl_p50_seconds: float | None = Field(default=None, ge=0, description="Observed median ITL.")
    throughput_factor: float = Field(
        gt=0, description="What the plan's throughput on that GPU was multiplied by (shrunk)."
    )
    observed_time: dt.datetime | None = Field(default=None, description="End of the window.")


class CapacityPlanStatus(ApiModel):
    """The operator's answer."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status describes."
    )
    phase: CapacityPhase = Field(
        default="Pending", description="Pending, Planned, Infeasible or Failed."
    )
    conditions: list[Condition] = conditions_field()
    recommendation: Recommendation | None = Field(
        default=None, description="The cheapest option that meets the targets."
    )
    recommendations: list[Recommendation] = Field(
        default_factory=list, max_length=20, description="Ranked options, best first."
    )
    inventory: InventoryStatus | None = Field(default=None, description="The live cluster today.")
    forecast: ForecastStatus | None = Field(default=None, description="Forecast summary.")
    serving: ServingObservedStatus | None = Field(
        default=None, description="Live servers, observed against planned (spec.servingMetrics)."
    )
    message: str | None = Field(
        default=None, max_length=4096, description="The latest outcome, in a sentence."
    )


class CapacityPlan(CustomResource):
    """GPU sizing for a workload (trainwright.io/v1alpha1, kind CapacityPlan, short name cplan)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["trainwright.io/v1alpha1"] = Field(
        default="trainwright.io/v1alpha1", description="trainwright.io/v1alpha1."
    )
    kind: Literal["CapacityPlan"] = Field(default="CapacityPlan", description="CapacityPlan.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: CapacityPlanSpec = Field(description="What to size, written by the user.")
    status: CapacityPlanStatus = Field(
        default_factory=CapacityPlanStatus, description="The answer, written by the operator."
    )
