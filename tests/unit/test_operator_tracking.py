"""The TrainingJob tracker: which events call for a reconcile, and when periodic work is due."""

from __future__ import annotations

import threading
import time

from trainwright.operator.tracking import Intervals, Tracker, Work

KEY = ("team-a", "ft")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(clock: Clock) -> Tracker:
    return Tracker(Intervals(resync=300, progress=30, queue=15, retry=5), clock=clock)


def test_the_echo_of_a_status_write_is_skipped_and_a_spec_edit_is_not() -> None:
    clock = Clock()
    found = tracker(clock)
    assert found.wants(KEY, "MODIFIED", 1)  # never reconciled by this process
    found.observe(KEY, 1, {"phase": "Planned"}, {})
    assert not found.wants(KEY, "MODIFIED", 1)  # our own status patch coming back
    assert found.wants(KEY, "MODIFIED", 2)  # the spec changed
    assert found.wants(KEY, None, 1)  # listed at start-up
    assert found.wants(KEY, "ADDED", 1)
    assert found.wants(KEY, "DELETED", 1)


def test_after_a_failed_reconcile_every_event_reconciles_and_a_retry_is_due_after_the_backoff() -> (
    None
):
    clock = Clock()
    found = tracker(clock)
    found.observe(KEY, 1, {"phase": "Planned"}, {})
    found.failed(KEY)
    assert found.wants(KEY, "MODIFIED", 1)
    clock.now += 4.9
    assert found.due() == []
    clock.now += 0.2
    assert found.due() == [(KEY, Work.RETRY)]
    found.done(KEY)
    assert found.due() == []  # handed out once
    found.failed(KEY, delay=2)  # a TemporaryError's own delay
    clock.now += 2.1
    assert found.due() == [(KEY, Work.RETRY)]


def test_running_jobs_read_progress_every_interval_and_unfinished_ones_resync() -> None:
    clock = Clock()
    found = tracker(clock)
    found.observe(KEY, 1, {"phase": "Running"}, {})
    clock.now += 10.1  # the first read a third of an interval after Running
    assert found.due() == [(KEY, Work.PROGRESS)]
    assert found.due() == []  # busy until done
    found.done(KEY)
    clock.now += 29
    assert found.due() == []
    clock.now += 1.1
    assert found.due() == [(KEY, Work.PROGRESS)]
    found.done(KEY)
    found.observe(KEY, 1, {"phase": "Succeeded"}, {})
    clock.now += 1000
    assert found.due() == []  # finished: no progress, no resync


def test_resync_slots_are_spread_over_the_interval_and_kueue_queued_jobs_refresh() -> None:
    clock = Clock()
    found = tracker(clock)
    keys = [("ns", f"job-{i}") for i in range(200)]
    for key in keys:
        found.observe(key, 1, {"phase": "Planned"}, {})
    clock.now += 150 - 0.001
    assert found.due() == []  # none before half an interval
    clock.now += 150
    first = found.due()
    assert 50 < len(first) < 150  # about half within the first interval, not all at once
    assert {work for _, work in first} == {Work.RESYNC}
    queued = ("ns", "queued")
    found.observe(queued, 1, {"phase": "Queued"}, {"queue": "team-a"})
    clock.now += 2.1  # the first re-read soon: Kueue may not have looked at it yet
    assert (queued, Work.QUEUE) in found.due()
    found.done(queued)
    clock.now += 14.8
    assert all(key != queued for key, _ in found.due())
    clock.now += 0.3  # then every 15 s
    assert (queued, Work.QUEUE) in found.due()
    gate = ("ns", "gated")  # Queued by the operator's own gang gate: no Workload to read
    found.observe(gate, 1, {"phase": "Queued"}, {})
    clock.now += 15.1
    assert all(key != gate for key, _ in found.due())


def test_forgotten_jobs_have_no_work_and_count_no_more() -> None:
    clock = Clock()
    found = tracker(clock)
    found.observe(KEY, 1, {"phase": "Running"}, {})
    assert len(found) == 1
    found.forget(KEY)
    clock.now += 1000
    assert (found.due(), len(found)) == ([], 0)
    assert found.wants(KEY, "MODIFIED", 1)


def test_the_loop_runs_due_work_on_its_threads_and_survives_a_failing_pass() -> None:
    found = Tracker(Intervals(resync=300, progress=30, queue=15, retry=0.01, tick=0.01))
    ran: list[tuple[tuple[str, str], Work]] = []
    twice = threading.Event()

    def work(key: tuple[str, str], what: Work) -> None:
        ran.append((key, what))
        if len(ran) == 1:
            found.failed(key)  # as reconcile() does when it raises
            raise RuntimeError("the API server is away")
        twice.set()

    found.observe(KEY, 1, {"phase": "Planned"}, {})
    found.failed(KEY)
    found.start(work)
    found.start(work)  # idempotent: one loop
    try:
        assert twice.wait(5)
    finally:
        found.stop()
    time.sleep(0.05)
    assert ran[:2] == [(KEY, Work.RETRY), (KEY, Work.RETRY)]
