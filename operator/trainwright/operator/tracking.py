"""The TrainingJobs this operator follows, and the one loop that does their periodic work.

kopf's changing handlers (on.create/update/resume) and timers cost every TrainingJob a
finalizer PATCH (echoed back as an event before the first handler runs), two annotation
PATCHes of kopf's bookkeeping after each handler, and one asyncio task per timer; at
1,000 jobs applied at once that was most of the operator's API traffic and memory
(benchmarks/bench_scale.py). The TrainingJob controller needs none of it: it is
level-based and keeps the spec it planned for in ``status.specDigest``. So it takes
kopf's raw events (``kopf.on.event``), and :class:`Tracker` remembers, per object:

- the ``metadata.generation`` last reconciled without error: an event whose generation
  was already handled is the echo of the operator's own status write, and skipped
  without leaving kopf's event loop (:meth:`Tracker.wants`);
- its phase, for the periodic work one background thread schedules: every unfinished
  job re-checked every ``resync`` seconds (a missed event's safety net), every Running
  one's progress read every ``progress`` seconds, every one queued in Kueue re-read every
  ``queue`` seconds, and a failed reconcile retried after its backoff.

Nothing here talks to the API server: :meth:`Tracker.due` is a pure function of the
clock, and the work itself is the callback's.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import enum
import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from trainwright.operator.progress import PROGRESS_SECONDS
from trainwright.operator.status import Phase

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


class Work(enum.StrEnum):
    """What the loop asks the controller to do for one TrainingJob."""

    RETRY = "retry"  # the last reconcile raised: the whole pass again
    RESYNC = "resync"  # no event for a while: a light pass
    PROGRESS = "progress"  # Running: read rank 0's progress
    QUEUE = "queue"  # queued in Kueue: the Workload's message and position


@dataclasses.dataclass(frozen=True)
class Intervals:
    """Seconds between the periodic passes."""

    resync: float = 300.0  # an unfinished TrainingJob re-checked without any event
    progress: float = PROGRESS_SECONDS  # a Running one's progress read
    queue: float = 15.0  # one queued in Kueue re-reads its Workload
    # The first re-read comes sooner: a job is often queued before Kueue has looked at its
    # Workload ("not yet considered"); the quota it waits for follows within seconds.
    queue_first: float = 2.0
    retry: float = 5.0  # after a reconcile that raised, unless it asked for another delay
    tick: float = 1.0  # how often the loop looks for due work


@dataclasses.dataclass
class _State:
    generation: int | None = None  # last reconciled without error
    phase: str | None = None
    finished: bool = False
    running: bool = False
    queued_in_kueue: bool = False
    next_resync: float = 0.0
    next_progress: float | None = None
    next_queue: float | None = None
    retry_at: float | None = None
    busy: bool = False  # a periodic pass is under way
    passes: int = 0  # passes ended (with or without error) in this process


def _spread(key: Key, interval: float) -> float:
    """A fixed offset in [0.5, 1.5) x interval per object, so 1,000 jobs made at once do not
    all resync in the same second (and the same job keeps its slot across restarts)."""
    return interval * (0.5 + (zlib.crc32("/".join(key).encode()) % 1000) / 1000)


class Tracker:
    """Per-TrainingJob memory and the schedule of its periodic passes. Thread-safe."""

    def __init__(
        self,
        intervals: Intervals | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.intervals = intervals or Intervals()
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[Key, _State] = {}
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # What the event handler and the reconcile report ------------------------------------------

    def wants(self, key: Key, event_type: str | None, generation: int | None) -> bool:
        """Whether an event calls for a reconcile: the object is new to this process (the
        start-up listing, ADDED), deleted, or its spec changed (a generation not yet
        reconciled). A MODIFIED event of a handled generation is the echo of a status write."""
        if event_type in (None, "ADDED", "DELETED"):
            return True
        with self._lock:
            state = self._states.get(key)
            return state is None or state.generation != generation or state.retry_at is not None

    def observe(
        self, key: Key, generation: int, status: Mapping[str, Any], spec: Mapping[str, Any]
    ) -> None:
        """A reconcile of ``generation`` ended without error, leaving ``status``."""
        now = self._clock()
        phase = status.get("phase")
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = _State(
                    next_resync=now + _spread(key, self.intervals.resync)
                )
            state.generation, state.retry_at = generation, None
            state.passes += 1
            state.phase = None if phase is None else str(phase)
            state.finished = state.phase in (Phase.SUCCEEDED, Phase.FAILED)
            running = state.phase == Phase.RUNNING
            if running and not state.running:
                state.next_progress = now + self.intervals.progress / 3
            state.running = running
            if not running:
                state.next_progress = None
            queued = state.phase == Phase.QUEUED and bool(spec.get("queue"))
            if queued and not state.queued_in_kueue:
                state.next_queue = now + self.intervals.queue_first
            state.queued_in_kueue = queued
            if not queued:
                state.next_queue = None

    def failed(self, key: Key, delay: float | None = None) -> None:
        """A reconcile raised: run it again after ``delay`` (the backoff by default)."""
        with self._lock:
            state = self._states.setdefault(key, _State())
            state.retry_at = self._clock() + (self.intervals.retry if delay is None else delay)
            state.passes += 1

    def passes(self, key: Key) -> int | None:
        """How many passes of the object have ended in this process (None: forgotten, or
        never seen): a pass that finds the count it was handed knows no other ran since."""
        with self._lock:
            state = self._states.get(key)
            return None if state is None else state.passes

    def forget(self, key: Key) -> None:
        with self._lock:
            self._states.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)

    # The schedule --------------------------------------------------------------------------

    def due(self) -> list[tuple[Key, Work]]:
        """The work due now, at most one per object, each object then marked busy until
        :meth:`done`; the next time of each periodic pass is moved on as it is handed out."""
        now = self._clock()
        found: list[tuple[Key, Work]] = []
        with self._lock:
            for key, state in self._states.items():
                if state.busy:
                    continue
                work = self._next_work(state, now)
                if work is not None:
                    state.busy = True
                    found.append((key, work))
        return found

    def _next_work(self, state: _State, now: float) -> Work | None:
        intervals = self.intervals
        if state.retry_at is not None and state.retry_at <= now:
            state.retry_at = None
            return Work.RETRY
        if state.next_queue is not None and state.next_queue <= now:
            state.next_queue = now + intervals.queue
            return Work.QUEUE
        if state.next_progress is not None and state.next_progress <= now:
            state.next_progress = now + intervals.progress
            return Work.PROGRESS
        if not state.finished and state.next_resync <= now:
            state.next_resync = now + intervals.resync
            return Work.RESYNC
        return None

    def done(self, key: Key) -> None:
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                state.busy = False

    # The loop ------------------------------------------------------------------------------

    def start(self, work: Callable[[Key, Work], None], *, workers: int = 4) -> None:
        """Run due work with ``work`` on ``workers`` threads until :meth:`stop`; idempotent.

        The loop runs in a copy of the calling handler's context variables: the work
        reconciles, which posts Events through kopf's poster, found there.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run,
                args=(self._loop, work, workers),
                name="trainwright-periodic",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self, work: Callable[[Key, Work], None], workers: int) -> None:
        base = contextvars.copy_context()

        def one(key: Key, what: Work) -> None:
            try:
                work(key, what)
            except Exception as error:  # the work scheduled its own retry
                logger.warning("TrainingJob %s/%s: %s pass failed: %s", *key, what.value, error)
            finally:
                self.done(key)

        with concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="trainwright-periodic"
        ) as pool:
            while not self._stopped.wait(self.intervals.tick):
                for key, what in self.due():
                    pool.submit(base.copy().run, one, key, what)
