"""How a trainer Job's state and its pods' exit codes decide the TrainingJob's fate."""

from __future__ import annotations

from typing import Any

import pytest

from trainwright.operator.lifecycle import (
    Action,
    JobState,
    decide_after_failure,
    failed_exit_code,
    job_failure_reason,
    job_signature,
    job_state,
    phase_for_job_state,
)
from trainwright.operator.status import Phase


def _job(
    *, conditions: list[dict[str, Any]] | None = None, ready: int = 0, suspend: bool = False
) -> dict[str, Any]:
    return {
        "spec": {"suspend": suspend},
        "status": {"conditions": conditions or [], "ready": ready},
    }


def _failed_pod(*codes: int) -> dict[str, Any]:
    return {
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": f"c{i}", "state": {"terminated": {"exitCode": code}}}
                for i, code in enumerate(codes)
            ],
        }
    }


def test_job_states_follow_conditions_then_suspend_then_ready_pods() -> None:
    assert job_state(None) is JobState.ABSENT
    assert job_state(_job()) is JobState.WAITING
    assert job_state(_job(ready=2)) is JobState.RUNNING
    assert job_state(_job(suspend=True, ready=0)) is JobState.SUSPENDED
    complete = [{"type": "Complete", "status": "True"}]
    assert job_state(_job(conditions=complete, suspend=True)) is JobState.SUCCEEDED
    failed = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    assert job_state(_job(conditions=failed, ready=1)) is JobState.FAILED
    not_yet = [{"type": "Failed", "status": "False"}]
    assert job_state(_job(conditions=not_yet, ready=1)) is JobState.RUNNING


def test_a_failed_job_reports_the_job_controllers_reason() -> None:
    failed = [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
    assert job_failure_reason(_job(conditions=failed)) == "DeadlineExceeded"
    assert job_failure_reason(_job()) == "JobFailed"


def test_a_permanent_exit_code_explains_the_failure_over_lost_peers() -> None:
    pods = [_failed_pod(75), _failed_pod(137), _failed_pod(64), {"status": {"phase": "Running"}}]
    assert failed_exit_code(pods) == 64


def test_needs_replan_wins_over_retryable_and_crashes() -> None:
    assert failed_exit_code([_failed_pod(137), _failed_pod(75), _failed_pod(76)]) == 76


def test_pods_without_a_nonzero_exit_code_give_no_exit_code() -> None:
    assert failed_exit_code([_failed_pod(0), {"status": {"phase": "Failed"}}]) is None


@pytest.mark.parametrize(("code", "reason"), [(64, "ConfigError"), (65, "DataError")])
def test_permanent_codes_fail_without_restarting(code: int, reason: str) -> None:
    decision = decide_after_failure(exit_code=code, restarts=0, max_restarts=3)
    assert decision.action is Action.FAIL
    assert decision.reason == reason
    assert f"exit code {code}" in decision.message


def test_out_of_memory_at_the_smallest_micro_batch_replans_while_restarts_remain() -> None:
    decision = decide_after_failure(exit_code=76, restarts=1, max_restarts=3)
    assert (decision.action, decision.reason) == (Action.REPLAN, "Replanning")
    assert "exit code 76" in decision.message and "attempt 2" in decision.message
    last = decide_after_failure(exit_code=76, restarts=3, max_restarts=3)
    assert (last.action, last.reason) == (Action.FAIL, "NeedsReplan")
    assert "fsdp or zero3" in last.message


def test_a_retryable_failure_restarts_and_names_the_next_attempt() -> None:
    decision = decide_after_failure(exit_code=75, restarts=1, max_restarts=3)
    assert decision.action is Action.RESTART
    assert decision.reason == "Restarting"
    assert "starting attempt 2 of at most 4" in decision.message


def test_a_crash_after_the_last_restart_fails_with_backoff_limit_exceeded() -> None:
    decision = decide_after_failure(exit_code=137, restarts=3, max_restarts=3)
    assert decision.action is Action.FAIL
    assert decision.reason == "BackoffLimitExceeded"
    assert "exit code 137" in decision.message
    assert "all 3 restarts" in decision.message


def test_zero_max_restarts_fails_on_the_first_crash() -> None:
    decision = decide_after_failure(exit_code=None, restarts=0, max_restarts=0)
    assert decision.action is Action.FAIL
    assert "exit code unknown" in decision.message


def test_job_states_map_to_the_phases_a_person_reads() -> None:
    assert phase_for_job_state(JobState.WAITING) is Phase.PLANNED
    assert phase_for_job_state(JobState.RUNNING) is Phase.RUNNING
    assert phase_for_job_state(JobState.SUSPENDED) is Phase.SUSPENDED
    assert phase_for_job_state(JobState.SUCCEEDED) is Phase.SUCCEEDED
    assert phase_for_job_state(JobState.FAILED) is Phase.FAILED


def test_a_job_signature_ignores_counters_that_do_not_change_the_phase() -> None:
    busy = {"spec": {}, "status": {"active": 2, "ready": 1, "uncountedTerminatedPods": {}}}
    quieter = {"spec": {}, "status": {"active": 1, "ready": 1, "startTime": "t"}}
    assert job_signature(busy) == job_signature(quieter) == ("Running", 1, False)
    assert job_signature(_job(ready=2)) != job_signature(_job(ready=1))
    assert job_signature(_job(suspend=True)) == ("Suspended", 0, True)
