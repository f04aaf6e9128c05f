"""Guards: spike detection against a running median, the OOM ladder, SIGTERM, agreement."""

from __future__ import annotations

import os
import signal

import pytest

from trainwright_trainer.guards import (
    OomLadder,
    OomRung,
    PreemptionSignal,
    SpikeDetector,
    SpikeVerdict,
    agree_flags,
)


def _warm_detector(patience: int = 3) -> SpikeDetector:
    detector = SpikeDetector(window=10, factor=3.0, patience=patience)
    for loss in (2.0, 2.1, 1.9, 2.0, 2.05, 1.95, 2.0, 2.1):
        assert detector.observe(loss) is SpikeVerdict.OK
    return detector


def test_a_loss_three_times_the_running_median_is_a_spike() -> None:
    detector = _warm_detector()

    assert detector.median() == pytest.approx(2.0)
    assert detector.observe(6.1) is SpikeVerdict.SPIKE
    assert detector.observe(5.9) is SpikeVerdict.OK
    assert detector.total_spikes == 1


def test_three_spikes_in_a_row_ask_for_a_rollback_and_reset_the_streak() -> None:
    detector = _warm_detector(patience=3)

    verdicts = [detector.observe(loss) for loss in (50.0, 60.0, 70.0, 2.0)]

    assert verdicts == [
        SpikeVerdict.SPIKE,
        SpikeVerdict.SPIKE,
        SpikeVerdict.ROLLBACK,
        SpikeVerdict.OK,
    ]
    assert detector.total_spikes == 3
    assert detector.median() == pytest.approx(2.0)  # spikes never enter the window


def test_the_steep_start_of_training_is_not_judged_until_the_window_warms_up() -> None:
    detector = SpikeDetector(window=50, factor=3.0, patience=1)

    verdicts = [detector.observe(loss) for loss in (9.0, 1.0, 30.0, 1.0, 1.0, 1.0, 1.0)]

    assert verdicts == [SpikeVerdict.OK] * 7


def test_spike_detector_state_round_trips() -> None:
    detector = _warm_detector()
    detector.observe(100.0)
    copy = SpikeDetector(window=10, factor=3.0, patience=3)
    copy.load_state_dict(detector.state_dict())

    assert copy.median() == detector.median()
    assert copy.consecutive == 1
    assert copy.observe(100.0) is SpikeVerdict.SPIKE
    assert copy.observe(100.0) is SpikeVerdict.ROLLBACK


def test_the_oom_ladder_halves_the_micro_batch_then_checkpoints_then_gives_up() -> None:
    ladder = OomLadder(OomRung(4, 2, False))

    rungs = [ladder.next_rung() for _ in range(4)]

    assert rungs == [
        OomRung(2, 4, False),
        OomRung(1, 8, False),
        OomRung(1, 8, True),
        None,
    ]
    assert {r.sequences_per_step for r in rungs if r is not None} == {8}
    assert ladder.events == 4


def test_an_odd_micro_batch_goes_straight_to_gradient_checkpointing() -> None:
    ladder = OomLadder(OomRung(3, 1, False))

    assert ladder.next_rung() == OomRung(3, 1, True)
    assert ladder.next_rung() is None


def test_sigterm_sets_the_preemption_flag_instead_of_killing_the_process() -> None:
    preemption = PreemptionSignal().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.received is True
    finally:
        preemption.uninstall()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_flags_in_a_world_of_one_are_the_local_flags() -> None:
    assert agree_flags([True, False, True]) == [True, False, True]
