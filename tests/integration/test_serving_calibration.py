"""A CapacityPlan calibrated from live vLLM servers' metrics in a real Prometheus.

Two vLLM-style replicas are backfilled for 30 minutes (scraped every 15 s): each runs
32 requests at once and generates half the output tokens/s the physics plans at that
batch, with TTFT and inter-token-latency histograms. The operator's queries read them
back; one observation moves the serving model half of the way in log space, so each
replica's sustainable request rate, and the fleet, move by sqrt(0.5). Needs Debian's
``prometheus`` package (``make system-deps``).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from prometheus_server import PrometheusMissingError, backfilled_prometheus
from trainwright.api.v1alpha1 import CapacityPlan
from trainwright.operator.capacityplan import _calibration, _recommend
from trainwright.operator.inventory import build_inventory
from trainwright.operator.serving_metrics import SUPPORTED_METRICS
from trainwright.planner.inference import InferenceRequest, plan_inference

pytestmark = pytest.mark.prometheus

BATCH, SPEED, REPLICAS = 32, 0.5, 2
WORKLOAD = {"model": {"name": "llama-3.1-8b"}, "promptTokens": 512, "outputTokens": 256}
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)  # each scrape: 40% of first tokens under 0.1 s ...
TTFT_SHARES = (0.1, 0.4, 0.8, 0.95, 1.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.1)
ITL_SHARES = (0.2, 0.7, 0.97, 1.0)


def _planned_per_replica() -> float:
    request = InferenceRequest(
        model="llama-3.1-8b", gpu="H100-SXM", precision="bf16", tensor_parallel=1,
        batch=BATCH, prompt_tokens=512, output_tokens=256, max_num_seqs=256,
    )  # fmt: skip
    return plan_inference(request).throughput.output_tokens_per_second


def _histogram(
    name: str, pod: str, stamp: int, count: float, buckets: Any, shares: Any
) -> list[str]:
    lines = [
        f'{name}_bucket{{pod="{pod}",le="{le}"}} {count * share:.3f} {stamp}'
        for le, share in zip(buckets, shares, strict=True)
    ]
    lines.append(f'{name}_bucket{{pod="{pod}",le="+Inf"}} {count:.3f} {stamp}')
    lines.append(f'{name}_count{{pod="{pod}"}} {count:.3f} {stamp}')
    lines.append(f'{name}_sum{{pod="{pod}"}} {count * 0.1:.3f} {stamp}')
    return lines


def _openmetrics(start: int, end: int, tokens_per_second: float) -> str:
    families: dict[str, tuple[str, list[str]]] = {
        "vllm:generation_tokens": ("counter", []),
        "vllm:num_requests_running": ("gauge", []),
        "vllm:time_to_first_token_seconds": ("histogram", []),
        "vllm:inter_token_latency_seconds": ("histogram", []),
    }
    requests_per_second = tokens_per_second / 256
    for pod in ("vllm-0", "vllm-1"):
        for stamp in range(start, end + 1, 15):
            elapsed = stamp - start
            families["vllm:generation_tokens"][1].append(
                f'vllm:generation_tokens_total{{pod="{pod}"}} {tokens_per_second * elapsed:.3f} {stamp}'
            )
            families["vllm:num_requests_running"][1].append(
                f'vllm:num_requests_running{{pod="{pod}"}} {BATCH} {stamp}'
            )
            families["vllm:time_to_first_token_seconds"][1].extend(
                _histogram(
                "vllm:time_to_first_token_seconds", pod, stamp, requests_per_second * elapsed,
                TTFT_BUCKETS, TTFT_SHARES,
            ))  # fmt: skip
            families["vllm:inter_token_latency_seconds"][1].extend(
                _histogram(
                "vllm:inter_token_latency_seconds", pod, stamp, tokens_per_second * elapsed,
                ITL_BUCKETS, ITL_SHARES,
            ))  # fmt: skip
    lines = []
    for family, (kind, samples) in families.items():
        lines.append(f"# TYPE {family} {kind}")
        lines += samples
    return "\n".join([*lines, "# EOF"]) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, datetime.datetime]]:
    end = int(datetime.datetime.now(datetime.UTC).timestamp()) // 60 * 60 - 3 * 3600
    start = end - 1800
    text = _openmetrics(start, end, SPEED * _planned_per_replica())
    try:
        with backfilled_prometheus(tmp_path_factory.mktemp("vllm"), text) as url:
            yield url, datetime.datetime.fromtimestamp(end, datetime.UTC)
    except PrometheusMissingError as exc:
        pytest.fail(str(exc))


def _capacityplan(url: str | None) -> CapacityPlan:
    spec: dict[str, Any] = {
        "workload": {"inference": WORKLOAD | {"rps": 200, "tensorParallel": 1}},
        "gpuTypes": ["H100-SXM"],
    }
    if url is not None:
        spec["servingMetrics"] = {"url": url, "gpuType": "H100-SXM", "selector": '{pod=~"vllm-.*"}'}
    return CapacityPlan.from_body({"metadata": {"name": "chat", "namespace": "n"}, "spec": spec})


def _per_replica_capacity(recommendation: Any) -> float:
    return float(
        recommendation.requests_per_second / (1 - recommendation.headroom) / recommendation.replicas
    )


def test_the_recommendation_moves_by_what_the_live_servers_throughput_implies(
    prometheus: tuple[str, datetime.datetime],
) -> None:
    url, end = prometheus
    context = SimpleNamespace(calibration_store=None)
    conditions: list[tuple[str, bool | None, str, str]] = []
    calibration, serving = _calibration(context, _capacityplan(url), end, conditions)  # type: ignore[arg-type]

    assert serving is not None and calibration is not None, conditions
    planned = _planned_per_replica()
    assert serving.replicas == REPLICAS and serving.batch == BATCH
    assert serving.planned_output_tokens_per_second == pytest.approx(planned, rel=1e-3)
    assert serving.observed_output_tokens_per_second == pytest.approx(SPEED * planned, rel=0.02)
    assert serving.ttft_p50_seconds is not None and 0.1 < serving.ttft_p50_seconds < 0.25
    assert serving.itl_p50_seconds is not None and 0.01 < serving.itl_p50_seconds < 0.025
    # One observation moves the model half of the way in log space.
    implied = math.sqrt(serving.observed_output_tokens_per_second / planned)
    assert serving.throughput_factor == pytest.approx(implied, rel=0.01)
    ((kind, status, reason, message),) = conditions
    assert (kind, status, reason) == ("Calibrated", True, "ServingMetrics")
    assert "2 live replica(s) on H100-SXM" in message and "50% of the" in message

    inventory = build_inventory([], [])
    physics = _recommend(_capacityplan(None), inventory, None)[0]
    calibrated = _recommend(_capacityplan(url), inventory, None, calibration)[0]
    assert calibrated.gpu_type == physics.gpu_type == "H100-SXM"
    assert _per_replica_capacity(calibrated) == pytest.approx(
        implied * _per_replica_capacity(physics), rel=0.05
    )
    assert calibrated.replicas >= math.floor(physics.replicas / implied)
    assert calibrated.replicas > physics.replicas


def test_the_supported_vllm_metric_names_are_the_documented_ones() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "planner.md").read_text(encoding="utf-8")
    for name in SUPPORTED_METRICS:
        assert f"`{name}`" in doc, name


def test_servers_that_say_nothing_leave_the_plan_to_the_physics(
    prometheus: tuple[str, datetime.datetime],
) -> None:
    url, end = prometheus
    plan = _capacityplan(url)
    assert plan.spec.serving_metrics is not None
    plan.spec.serving_metrics.selector = '{pod="absent"}'
    conditions: list[tuple[str, bool | None, str, str]] = []
    context = SimpleNamespace(calibration_store=None)
    assert _calibration(context, plan, end, conditions) == (None, None)  # type: ignore[arg-type]
    ((_, status, reason, message),) = conditions
    assert (status, reason) == (False, "ServingMetricsUnavailable")
    assert message.startswith("no vLLM server generated tokens in the last 900 s")
