"""What rank 0's TensorBoard events cost per step: the trainer's own recording path with and
without an event directory.

``TrainerMetrics.record_step`` (Prometheus gauges, the progress object, and with a
``tensorboard_dir`` five ``add_scalar`` calls into tensorboardX's queue, written by its
thread) is timed over ``--steps`` steps, CPU time of this process (one thread: other
processes on a shared machine do not inflate it), median of ``--repeats`` runs; then the
event file's size per step. A CPU training step of the tiny test model takes about 0.1 s
and a GPU step of an 8B model about 1 s, so the overhead is what matters against those.

Run: ``python benchmarks/bench_tensorboard.py [--steps 2000]`` (a few seconds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "trainer-image")]

from trainwright_trainer.metrics import TrainerMetrics  # noqa: E402


def _record(steps: int, tensorboard_dir: Path | None) -> float:
    """CPU seconds per ``record_step`` (the events flushed and closed inside the timing)."""
    metrics = TrainerMetrics(
        enabled=True,
        port=0,
        progress_path=None,
        total_steps=steps,
        tensorboard_dir=tensorboard_dir,
    )
    started = time.process_time()
    for step in range(1, steps + 1):
        metrics.record_step(
            step=step,
            epoch=0,
            loss=2.0 / step,
            learning_rate=2e-4,
            grad_norm=0.5,
            tokens_per_second=50_000.0,
            mfu_ratio=0.4,
            eta_seconds=100.0,
            write_file=False,
        )
    metrics.close()
    return (time.process_time() - started) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    without, with_events, sizes = [], [], []
    for _ in range(args.repeats):
        without.append(_record(args.steps, None))
        with tempfile.TemporaryDirectory() as tmp:
            with_events.append(_record(args.steps, Path(tmp)))
            sizes.append(sum(p.stat().st_size for p in Path(tmp).iterdir()))
    base, events = statistics.median(without), statistics.median(with_events)
    print(f"record_step without events: {base * 1e6:8.1f} us CPU per step")
    print(f"record_step with events:    {events * 1e6:8.1f} us CPU per step")
    print(f"TensorBoard overhead:       {(events - base) * 1e6:8.1f} us CPU per step")
    print(
        f"event file:                 {statistics.median(sizes) / args.steps:8.1f} bytes per step"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
