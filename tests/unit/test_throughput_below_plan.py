"""ThroughputBelowPlan from the readings kept in status, on a fake clock."""

from __future__ import annotations

import datetime
from typing import Any

from trainwright.api.v1alpha1.trainingjob import PlanStatus, ProgressStatus, ThroughputSample
from trainwright.operator.throughput import (
    MAX_SAMPLES,
    add_sample,
    below_plan_condition,
    likely_limit,
    throughput_patch,
)

T0 = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
GIB = 2**30


def _plan(**update: Any) -> PlanStatus:
    fields: dict[str, Any] = {
        "gpuType": "H100-SXM", "numGpus": 8, "nodes": 1, "gpusPerNode": 8, "strategy": "ddp",
        "microBatchSize": 4, "gradientAccumulationSteps": 1, "memoryPerGpuBytes": 40 * GIB,
        "memoryCapacityBytes": 80 * GIB, "tokensPerSecond": 10_000.0,
    }  # fmt: skip
    return PlanStatus.model_validate(fields | update)


def _at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def _readings(values: list[float], every: float = 30.0) -> list[ThroughputSample]:
    samples: list[ThroughputSample] = []
    for i, value in enumerate(values):
        samples = add_sample(samples, value, now=_at(i * every), window=600)
    return samples


def test_sixty_percent_for_ten_minutes_sets_the_condition_with_both_figures() -> None:
    plan = _plan()
    nine_and_a_half = _readings([6000.0] * 20)  # t = 0 .. 570 s
    assert below_plan_condition(nine_and_a_half, plan, None, now=_at(570)) is None
    ten = _readings([6000.0] * 21)  # t = 600 s
    verdict = below_plan_condition(ten, plan, None, now=_at(600))
    assert verdict is not None
    status, reason, message = verdict
    assert (status, reason) == (True, "ThroughputBelowPlan")
    assert "Observed 6,000 tokens/s" in message and "60% of the planned 10,000" in message
    assert "for 10 min" in message and "reports no GPU metrics" in message


def test_one_reading_at_plan_inside_the_window_restarts_the_clock() -> None:
    values = [6000.0] * 10 + [7500.0] + [6000.0] * 10  # a good reading at 300 s
    assert below_plan_condition(_readings(values), _plan(), None, now=_at(600)) is None
    later = _readings(values + [6000.0] * 11)  # ten minutes after the first slow one after it
    verdict = below_plan_condition(later, _plan(), None, now=_at(930))
    assert verdict is not None and verdict[0] is True


def test_recovery_turns_it_false_only_once_it_was_true() -> None:
    samples = _readings([6000.0] * 21 + [9000.0])
    assert below_plan_condition(samples, _plan(), None, now=_at(630)) is None
    verdict = below_plan_condition(samples, _plan(), None, now=_at(630), currently_true=True)
    assert verdict == (
        False,
        "ThroughputMeetsPlan",
        "Observed 9,000 tokens/s, 90% of the planned 10,000.",
    )


def test_the_window_is_a_parameter_for_short_tests() -> None:
    samples = _readings([6000.0] * 3, every=30)
    verdict = below_plan_condition(samples, _plan(), None, now=_at(60), window=60)
    assert verdict is not None and "for 1 min" in verdict[2]


def test_the_likely_limit_comes_from_the_trainers_memory_and_utilisation() -> None:
    def progress(peak: float | None, busy: float | None) -> ProgressStatus:
        return ProgressStatus(
            step=1, peak_memory_bytes=int(peak * GIB) if peak else None, gpu_utilization=busy
        )

    assert "memory (rank 0's peak 78.0 of 80 GiB" in likely_limit(progress(78, 0.99), _plan())
    assert "input pipeline" in likely_limit(progress(40, 0.35), _plan())
    assert "communication" in likely_limit(progress(40, 0.35), _plan(nodes=2, numGpus=16))
    assert "kernels themselves" in likely_limit(progress(40, 0.97), _plan())
    assert "no GPU metrics" in likely_limit(progress(None, None), _plan())


def test_status_keeps_a_bounded_window_of_readings() -> None:
    samples = _readings([5000.0] * 200, every=5)
    assert len(samples) == MAX_SAMPLES
    spread = _readings([5000.0] * 60, every=30)  # 30 min of readings, a 10 min window
    assert (spread[-1].time - spread[0].time).total_seconds() <= 900


def test_the_patch_appends_the_reading_and_sets_the_condition_once() -> None:
    plan = _plan()
    status: dict[str, Any] = {"plan": plan.to_manifest(), "conditions": []}
    slow = ProgressStatus(step=5, tokens_per_second=6000.0, gpu_utilization=0.3)
    for i in range(21):
        patch = throughput_patch(status, None, slow, generation=1, now=_at(30 * i), window=600)
        status |= patch
    assert len(status["throughput"]) == 21
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"]) == ("ThroughputBelowPlan", "True")
    assert "input pipeline" in condition["message"]
    again = throughput_patch(status, None, slow, generation=1, now=_at(630), window=600)
    assert "conditions" not in again  # unchanged: nothing to write
