"""API models and manifest builders: the per-object cost the operator pays on every reconcile.

The controller validates each TrainingJob body (``TrainingJob.from_body``) and
renders its three children on every pass; with 500 jobs reconciling at once
(the operator benchmark) this is the pure-Python share of that work. Also times
``make crds`` (schema generation for the three kinds).

Goals: from_body under 1 ms, all three children under 5 ms, CRD generation under
1 s. Prints medians and p90s; exits non-zero only if a benchmark crashes.

Run: `.venv/bin/python benchmarks/bench_api.py [--repeat N]`
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from trainwright.api.crdgen import write_crds
from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.resources import headless_service, trainer_configmap, trainer_job

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "training-lora.yaml"
PLAN = PlanStatus(
    gpu_type="H100-SXM",
    gpu_product="NVIDIA-H100-80GB-HBM3",
    num_gpus=16,
    nodes=2,
    gpus_per_node=8,
    strategy="fsdp",
    micro_batch_size=4,
    gradient_accumulation_steps=2,
    memory_per_gpu_bytes=61_000_000_000,
    tokens_per_second=180_000.0,
)


def timings(call: Callable[[], Any], repeat: int) -> list[float]:
    call()  # warm: pydantic builds validators and serializers on first use
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def report(name: str, samples: list[float], goal_seconds: float) -> None:
    median = statistics.median(samples)
    p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
    verdict = "met" if median < goal_seconds else "NOT met"
    print(
        f"{name:<46} median {median * 1000:8.3f} ms  p90 {p90 * 1000:8.3f} ms  "
        f"goal < {goal_seconds * 1000:g} ms: {verdict}  (n={len(samples)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=500, help="samples per figure")
    args = parser.parse_args()
    body = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    body["metadata"]["namespace"] = "bench"
    job = TrainingJob.from_body(body)

    report(
        "TrainingJob.from_body (example manifest)",
        timings(lambda: TrainingJob.from_body(body), args.repeat),
        0.001,
    )
    report(
        "trainer_configmap (renders TrainerConfig YAML)",
        timings(lambda: trainer_configmap(job, PLAN), args.repeat),
        0.003,
    )
    report("headless_service", timings(lambda: headless_service(job), args.repeat), 0.001)
    report(
        "trainer_job (2 nodes x 8 GPUs)",
        timings(lambda: trainer_job(job, PLAN, 0), args.repeat),
        0.003,
    )

    def all_children() -> None:
        trainer_configmap(job, PLAN)
        headless_service(job)
        trainer_job(job, PLAN, 0)

    report(
        "validate + all three children",
        timings(lambda: (TrainingJob.from_body(body), all_children()), args.repeat),
        0.005,
    )
    with tempfile.TemporaryDirectory() as tmp:
        report("make crds (three kinds)", timings(lambda: write_crds(Path(tmp)), 10), 1.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
