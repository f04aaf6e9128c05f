"""PlanFirst: a new TrainingJob's children wait while other plans are being made."""

from __future__ import annotations

import contextvars
import threading
import time

from trainwright.operator.plan_first import PlanFirst

TEAM: contextvars.ContextVar[str] = contextvars.ContextVar("team", default="none")


def test_work_runs_at_once_when_no_plan_was_made_lately() -> None:
    queue = PlanFirst(workers=2, max_wait=30, quiet=2.0)
    ran = threading.Event()
    queued = time.monotonic()
    queue.later(ran.set)
    assert ran.wait(2)
    assert time.monotonic() - queued < 1.0  # less than the quiet moment: none to wait
    queue.stop()


def test_work_waits_while_a_plan_is_made_and_starts_a_quiet_moment_after_the_last() -> None:
    queue = PlanFirst(workers=2, max_wait=30, quiet=0.5)
    ran = threading.Event()
    with queue.planning():
        with queue.planning():
            queue.later(ran.set)
        assert not ran.wait(0.3)  # one plan still being made
        assert queue.waiting() == 1
    ended = time.monotonic()
    assert ran.wait(3)
    assert time.monotonic() - ended >= 0.45  # no plan for the quiet moment first
    assert queue.waiting() == 0
    queue.stop()


def test_a_plan_within_the_quiet_moment_holds_the_work_back_again() -> None:
    queue = PlanFirst(workers=1, max_wait=30, quiet=0.5)
    ran = threading.Event()
    with queue.planning():
        queue.later(ran.set)
    time.sleep(0.3)
    with queue.planning():  # the next creation event's plan
        pass
    last = time.monotonic()
    assert ran.wait(3)
    assert time.monotonic() - last >= 0.45


def test_work_that_waited_max_wait_runs_while_plans_go_on() -> None:
    queue = PlanFirst(workers=1, max_wait=0.4)
    ran = threading.Event()
    with queue.planning():
        queued = time.monotonic()
        queue.later(ran.set)
        assert ran.wait(3)
        waited = time.monotonic() - queued
    assert 0.35 <= waited < 2.5
    queue.stop()


def test_work_runs_in_order_in_its_callers_context_and_a_failure_stops_nothing() -> None:
    queue = PlanFirst(workers=1, max_wait=30)
    ran: list[str] = []
    done = threading.Event()

    def fail() -> None:
        raise RuntimeError("the API server went away")

    with queue.planning():
        for team in ("a", "b"):
            TEAM.set(team)
            queue.later(lambda: ran.append(TEAM.get()))
        queue.later(fail)
        queue.later(done.set)
    assert done.wait(2)
    assert ran == ["a", "b"]
    queue.stop()


def test_after_stop_nothing_queued_or_new_runs() -> None:
    queue = PlanFirst(workers=1, max_wait=30)
    ran: list[int] = []
    with queue.planning():
        queue.later(lambda: ran.append(1))
        queue.stop()
    queue.later(lambda: ran.append(2))
    time.sleep(0.3)
    assert ran == []
    assert queue.waiting() == 0
