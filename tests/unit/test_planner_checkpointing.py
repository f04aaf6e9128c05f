"""checkpoint.intervalSteps: auto: Young/Daly against numbers worked out by hand."""

from __future__ import annotations

import pytest

from trainwright.planner.checkpointing import (
    PRIOR_GPU_MTBF_HOURS,
    auto_interval,
    interval_steps,
    job_mtbf_seconds,
    young_daly_seconds,
)


def test_young_daly_is_the_square_root_of_twice_save_time_times_mtbf() -> None:
    # C = 60 s, M = 100 h = 360,000 s: sqrt(2 x 60 x 360,000) = sqrt(43,200,000) = 6,572.67 s
    assert young_daly_seconds(60, 360_000) == pytest.approx(6_572.67, abs=0.01)
    # at 2 s per step: 6,572.67 / 2 = 3,286.3 -> 3,286 steps
    assert interval_steps(60, 360_000, 2.0) == 3_286
    # a save that costs nothing next to the step still checkpoints, every step at most
    assert interval_steps(0.001, 10, 60.0) == 1


def test_the_prior_is_llama3s_interruption_rate_and_a_gang_fails_n_times_as_often() -> None:
    # 16,384 GPUs x 54 days x 24 h / 419 interruptions = 50,677.0 GPU-hours
    assert pytest.approx(50_677.0, abs=0.01) == PRIOR_GPU_MTBF_HOURS
    # 16 GPUs: 50,677.0 / 16 = 3,167.31 h
    assert job_mtbf_seconds(16) / 3600 == pytest.approx(3_167.31, abs=0.01)


def test_observed_failures_shorten_the_mtbf() -> None:
    # 3 failures in 10 h on 16 GPUs (576,000 GPU-s): (50,677.0 h + 160 h) / (4 x 16) = 794.33 h
    mtbf = job_mtbf_seconds(16, failures=3, observed_gpu_seconds=16 * 10 * 3600)
    assert mtbf / 3600 == pytest.approx(794.33, abs=0.01)
    assert mtbf < job_mtbf_seconds(16)


def test_auto_interval_from_measured_save_and_step_time() -> None:
    # 8 GPUs: M = 50,677.0 h / 8 = 22,804,651 s; sqrt(2 x 30 x M) = 36,990.3 s; / 1.5 s = 24,660
    chosen = auto_interval(save_seconds=30, step_seconds=1.5, num_gpus=8)
    assert chosen.steps == 24_660
    assert chosen.mtbf_seconds == pytest.approx(22_804_651, abs=1)
    assert chosen.message == (
        "Checkpoint every 24660 step(s): sqrt(2 x 30 s save x 6335 h MTBF) / 1.5 s per step "
        "(Young/Daly)."
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: young_daly_seconds(-1, 10),
        lambda: young_daly_seconds(1, 0),
        lambda: interval_steps(1, 10, 0),
        lambda: job_mtbf_seconds(0),
    ],
)
def test_impossible_inputs_are_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]
