"""Live vLLM servers' metrics, read from Prometheus, as a serving calibration observation.

A CapacityPlan's ``spec.servingMetrics`` names a Prometheus that scrapes vLLM servers of
its model on one GPU type. Over the last ``windowSeconds`` (instant queries at the end
of the window) the operator reads:

- ``vllm:generation_tokens_total`` (counter): output tokens/s of all replicas, ``rate``;
- ``vllm:num_requests_running`` (gauge): its series count is the replicas, its mean over
  the window per replica is the batch the servers ran;
- ``vllm:time_to_first_token_seconds`` (histogram): median TTFT;
- ``vllm:inter_token_latency_seconds`` (histogram; vLLM before 0.11 exports it as
  ``vllm:time_per_output_token_seconds``, used when the first has no data): median ITL.

Per replica that is one CONTRACTS.md inference observation (the workload's prompt and
output tokens, the spec's GPU and tensor parallelism), which the planner pools with its
shape (GPU, precision, size class) and shrinks toward the physics like any other
(planner.calibration). The status shows it against what the physics plans at that batch.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any

from trainwright.api.v1alpha1.capacityplan import InferenceWorkload, ServingMetricsSource
from trainwright.planner.errors import PlannerError
from trainwright.planner.inference import InferenceRequest, plan_inference

GENERATION_TOKENS = "vllm:generation_tokens_total"
RUNNING = "vllm:num_requests_running"
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
ITL_BEFORE_0_11 = "vllm:time_per_output_token_seconds"
SUPPORTED_METRICS = (GENERATION_TOKENS, RUNNING, TTFT, ITL, ITL_BEFORE_0_11)
QUERY_TIMEOUT_SECONDS = 10.0


class ServingMetricsError(RuntimeError):
    """The servers' metrics cannot be read or say nothing (one sentence)."""


def queries(source: ServingMetricsSource) -> dict[str, str]:
    """The PromQL of each figure (instant queries at the window's end)."""
    sel, window = source.selector, f"{source.window_seconds}s"

    def median(histogram: str) -> str:
        return f"histogram_quantile(0.5, sum by (le) (rate({histogram}_bucket{sel}[{window}])))"

    return {
        "tokens_per_second": f"sum(rate({GENERATION_TOKENS}{sel}[{window}]))",
        "replicas": f"count(last_over_time({RUNNING}{sel}[{window}]))",
        "running": f"sum(avg_over_time({RUNNING}{sel}[{window}]))",
        "ttft_p50": median(TTFT),
        "itl_p50": median(ITL),
        "itl_p50_before_0_11": median(ITL_BEFORE_0_11),
    }


@dataclasses.dataclass(frozen=True)
class ServingObservation:
    """One replica's figures and the physics' plan at the same batch."""

    gpu_type: str
    tensor_parallel: int
    replicas: int
    batch: int
    output_tokens_per_second: float  # per replica
    planned_output_tokens_per_second: float
    ttft_p50_seconds: float | None
    itl_p50_seconds: float | None
    observed_time: datetime.datetime

    def as_calibration(self, workload: InferenceWorkload) -> dict[str, Any]:
        """The contract's inference observation."""
        return {
            "kind": "inference",
            "model": str(workload.model.name),
            "gpu": self.gpu_type,
            "precision": workload.precision,
            "tensor_parallel": self.tensor_parallel,
            "batch": self.batch,
            "prompt_tokens": workload.prompt_tokens,
            "output_tokens": workload.output_tokens,
            "output_tokens_per_second": self.output_tokens_per_second,
            "ttft_seconds": self.ttft_p50_seconds,
            "itl_seconds": self.itl_p50_seconds,
        }


def observation_from(
    values: dict[str, float | None],
    source: ServingMetricsSource,
    workload: InferenceWorkload,
    *,
    now: datetime.datetime,
) -> ServingObservation:
    """The observation from the queries' values (pure); raises when they say nothing."""
    replicas = int(values.get("replicas") or 0)
    tokens = values.get("tokens_per_second") or 0.0
    if replicas < 1 or tokens <= 0:
        raise ServingMetricsError(
            f"no vLLM server generated tokens in the last {source.window_seconds} s "
            f"({GENERATION_TOKENS}{source.selector} and {RUNNING}{source.selector})"
        )
    batch = max(1, round((values.get("running") or 0.0) / replicas))
    itl = values.get("itl_p50")
    if itl is None:
        itl = values.get("itl_p50_before_0_11")
    per_replica = tokens / replicas
    try:
        planned = plan_inference(
            InferenceRequest(
                model=str(workload.model.name),
                gpu=source.gpu_type,
                precision=workload.precision,
                tensor_parallel=source.tensor_parallel,
                batch=batch,
                prompt_tokens=workload.prompt_tokens,
                output_tokens=workload.output_tokens,
                max_num_seqs=max(256, batch),
            )
        ).throughput.output_tokens_per_second
    except PlannerError as exc:
        raise ServingMetricsError(
            f"the physics cannot plan the live servers' layout: {exc}"
        ) from None
    return ServingObservation(
        gpu_type=source.gpu_type,
        tensor_parallel=source.tensor_parallel,
        replicas=replicas,
        batch=batch,
        output_tokens_per_second=round(per_replica, 3),
        planned_output_tokens_per_second=round(planned, 3),
        ttft_p50_seconds=values.get("ttft_p50"),
        itl_p50_seconds=itl,
        observed_time=now,
    )


def _scalar(result: Any) -> float | None:
    """The one value of an instant query's vector, None if empty or not a number."""
    if not isinstance(result, list) or not result:
        return None
    try:
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_serving_metrics(
    source: ServingMetricsSource, workload: InferenceWorkload, *, now: datetime.datetime
) -> ServingObservation:
    """Query ``source`` at ``now`` and build the observation; errors are one sentence."""
    import httpx

    endpoint = source.url.rstrip("/") + "/api/v1/query"
    values: dict[str, float | None] = {}
    with httpx.Client(timeout=QUERY_TIMEOUT_SECONDS) as client:
        for name, query in queries(source).items():
            try:
                response = client.get(
                    endpoint, params={"query": query, "time": f"{now.timestamp():.3f}"}
                )
                body = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise ServingMetricsError(
                    f"spec.servingMetrics.url {source.url}: {exc.__class__.__name__}: {exc}"
                ) from None
            if body.get("status") != "success":
                raise ServingMetricsError(
                    f"Prometheus rejected {query!r}: {body.get('error', response.status_code)}"
                )
            values[name] = _scalar((body.get("data") or {}).get("result"))
    return observation_from(values, source, workload, now=now)
