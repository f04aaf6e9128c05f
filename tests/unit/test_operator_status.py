"""Conditions and phases: the status the operator writes, as pure functions."""

from __future__ import annotations

import datetime

from trainwright.operator.status import (
    Phase,
    condition_is_true,
    find_condition,
    set_condition,
    status_patch,
)

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def test_a_new_condition_carries_its_generation_and_transition_time() -> None:
    conditions = set_condition(
        [], type_="Planned", status=True, reason="Planned", message="ok", generation=3, now=T0
    )
    assert conditions == [
        {
            "type": "Planned",
            "status": "True",
            "reason": "Planned",
            "message": "ok",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 3,
        }
    ]


def test_rerunning_a_reconcile_keeps_the_transition_time() -> None:
    first = set_condition(
        [], type_="Running", status=True, reason="PodsReady", message="a", generation=1, now=T0
    )
    second = set_condition(
        first, type_="Running", status=True, reason="PodsReady", message="b", generation=2, now=T1
    )
    assert second[0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert second[0]["message"] == "b"
    assert second[0]["observedGeneration"] == 2


def test_a_status_flip_moves_the_transition_time_and_keeps_one_entry_per_type() -> None:
    first = set_condition(
        [], type_="Running", status=True, reason="PodsReady", message="", generation=1, now=T0
    )
    first = set_condition(
        first, type_="Planned", status=True, reason="Planned", message="", generation=1, now=T0
    )
    flipped = set_condition(
        first, type_="Running", status=False, reason="Suspended", message="", generation=1, now=T1
    )
    assert [c["type"] for c in flipped].count("Running") == 1
    running = find_condition(flipped, "Running")
    assert running is not None
    assert running["status"] == "False"
    assert running["lastTransitionTime"] == "2026-01-02T03:09:05Z"
    assert condition_is_true(flipped, "Planned")
    assert not condition_is_true(flipped, "Running")


def test_unknown_status_is_written_as_the_word_unknown() -> None:
    conditions = set_condition(
        [], type_="Ready", status=None, reason="Waiting", message="", generation=1, now=T0
    )
    assert conditions[0]["status"] == "Unknown"


def test_status_patch_is_none_when_status_already_says_everything() -> None:
    conditions = set_condition(
        [], type_="Planned", status=True, reason="Planned", message="m", generation=2, now=T0
    )
    current = {"phase": "Planned", "observedGeneration": 2, "conditions": conditions, "x": 1}
    later = set_condition(
        conditions,
        type_="Planned",
        status=True,
        reason="Planned",
        message="m",
        generation=2,
        now=T1,
    )
    assert (
        status_patch(current, phase=Phase.PLANNED, conditions=later, generation=2, extra={"x": 1})
        is None
    )


def test_status_patch_carries_only_what_changed() -> None:
    current = {"phase": "Planned", "observedGeneration": 2, "conditions": [], "restarts": 0}
    patch = status_patch(
        current, phase=Phase.RUNNING, conditions=[], generation=2, extra={"restarts": 0}
    )
    assert patch == {"phase": "Running"}


def test_only_succeeded_and_failed_are_terminal_phases() -> None:
    assert {p for p in Phase if p.terminal} == {Phase.SUCCEEDED, Phase.FAILED}
