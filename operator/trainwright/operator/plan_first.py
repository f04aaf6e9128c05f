"""Plans before children: under a burst of new TrainingJobs, each is planned before the
children of the others are made.

A new TrainingJob's first pass plans it and writes the plan (one status patch), then
creates its ConfigMap, Service and Job. With 1,000 TrainingJobs applied at once, every
plan waited behind the children of all the jobs that arrived before it: p95 apply ->
plan 20-27 s on the benchmark's control plane (benchmarks/bench_scale.py), the same
time as the Jobs themselves. The plan is what a user waits to read after `kubectl
apply` (the GPUs, the cost, or why the job cannot run); the children take the same
total time whenever they are made. So a new job's first pass stops after its plan and
hands the rest of its reconcile to :class:`PlanFirst`, whose workers start that work
once no plan has been made for ``quiet`` seconds, or once it has waited ``max_wait``
seconds (a steady stream of new jobs cannot starve the children). With no burst the
children's pass starts ``quiet`` seconds after the plan's.

Nothing here talks to the API server; the work is the caller's.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

# Threads running reconciles: kopf's handler pool and these workers, each (`trainwright
# operator --workers`; the chart's operator.workers). A new job's plan pass mostly waits on
# its one status write, so with plans first the burst's plans were bound by how many wait
# at once: 1,000 applied at once (benchmarks/bench_scale.py) were planned with p95 3.7-4.6 s
# at 16, 2.1-3.0 s at 32. Kept free of kopf: the CLI reads it for its flag's default.
DEFAULT_WORKERS = 32
# Seconds the children of a planned job wait at most for the plans made after it.
MAX_WAIT_SECONDS = 30.0
# Seconds without any plan being made before children start: during a burst the plans
# pause for moments (the next creation events are on their way), and children started
# in such a gap hold the API server while the next plans wait.
QUIET_SECONDS = 0.3


class PlanFirst:
    """Work that runs once no plan has been made for a moment (or after ``max_wait``).
    Thread-safe."""

    def __init__(
        self,
        *,
        workers: int = DEFAULT_WORKERS,
        max_wait: float = MAX_WAIT_SECONDS,
        quiet: float = QUIET_SECONDS,
    ) -> None:
        self.workers, self.max_wait, self.quiet = workers, max_wait, quiet
        self._last_plan = float("-inf")  # when the last plan was made (monotonic)
        self._changed = threading.Condition()
        self._planning = 0
        self._queue: collections.deque[tuple[float, contextvars.Context, Callable[[], None]]] = (
            collections.deque()
        )
        self._threads: list[threading.Thread] = []
        self._stopped = False

    @contextlib.contextmanager
    def planning(self) -> Iterator[None]:
        """Held while a plan is made: the queued work waits."""
        with self._changed:
            self._planning += 1
        try:
            yield
        finally:
            with self._changed:
                self._planning -= 1
                self._last_plan = time.monotonic()
                if not self._planning:
                    self._changed.notify_all()

    def later(self, work: Callable[[], None]) -> None:
        """Run ``work`` on a worker, in a copy of the caller's context variables (the
        reconcile posts Events through kopf's poster, found there), in the order given."""
        with self._changed:
            if self._stopped:
                return
            self._queue.append((time.monotonic(), contextvars.copy_context(), work))
            if not self._threads:
                self._threads = [
                    threading.Thread(
                        target=self._work, name=f"trainwright-children-{i}", daemon=True
                    )
                    for i in range(self.workers)
                ]
                for thread in self._threads:
                    thread.start()
            self._changed.notify()

    def waiting(self) -> int:
        """Work not started yet."""
        with self._changed:
            return len(self._queue)

    def stop(self) -> None:
        """Let the workers end after their current work; queued work is dropped (a new
        process's start-up listing reconciles every TrainingJob again)."""
        with self._changed:
            self._stopped = True
            self._queue.clear()
            self._changed.notify_all()

    def _next(self) -> tuple[contextvars.Context, Callable[[], None]] | None:
        """The oldest work, once no plan has been made for ``quiet`` seconds or it has
        waited ``max_wait``."""
        with self._changed:
            while not self._stopped:
                if not self._queue:
                    self._changed.wait()
                    continue
                queued, context, work = self._queue[0]
                now = time.monotonic()
                left = self.max_wait - (now - queued)
                if left > 0 and self._planning:
                    self._changed.wait(left)
                    continue
                quiet_left = self.quiet - (now - self._last_plan)
                if left > 0 and quiet_left > 0:
                    self._changed.wait(min(left, quiet_left))
                    continue
                self._queue.popleft()
                return context, work
            return None

    def _work(self) -> None:
        while (found := self._next()) is not None:
            context, work = found
            try:
                context.run(work)
            except Exception as error:  # the work scheduled its own retry
                logger.warning("a TrainingJob's children pass failed: %s", error)
