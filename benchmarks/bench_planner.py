"""Planner speed: explicit plans, full recommendation searches, and CLI cold start.

Goals (issue 2): an explicit plan in process under 5 ms median, a full
recommendation search under 200 ms, and `trainwright plan` starting and
answering in under 1 s. Issue 12: the same goals with a calibration of
observed runs applied (eight observations, some of each plan's shape). Prints medians and p90s; exits non-zero only if a
benchmark crashes (timings depend on the machine's load).

Run: `.venv/bin/python benchmarks/bench_planner.py [--repeat N]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def _timings(call: Callable[[], Any], repeat: int) -> list[float]:
    call()  # warm: first use builds pydantic validators and caches
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def _report(name: str, samples: list[float], goal_seconds: float, unit: str = "ms") -> bool:
    scale = 1000 if unit == "ms" else 1
    median = statistics.median(samples)
    p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
    met = median < goal_seconds
    print(
        f"{name:<58} median {median * scale:8.2f} {unit}  p90 {p90 * scale:8.2f} {unit}  "
        f"goal < {goal_seconds * scale:g} {unit}: {'met' if met else 'NOT met'}  (n={len(samples)})"
    )
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from trainwright.planner import (
        InferenceRequest,
        TrainingRequest,
        plan_inference,
        plan_training,
        recommend_inference,
        recommend_training,
    )

    explicit_training = TrainingRequest(
        model="llama-3.1-8b",
        method="lora",
        gpu="H100-SXM",
        num_gpus=8,
        micro_batch=4,
        gradient_checkpointing="on",
        dataset_tokens=10**9,
    )
    explicit_inference = InferenceRequest(
        model="llama-3.1-70b", gpu="H100-SXM", tensor_parallel=4, batch=32
    )
    search_training = TrainingRequest(model="llama-3.1-70b", method="full", dataset_tokens=10**10)
    search_inference = InferenceRequest(
        model="llama-3.1-70b", rps=50, ttft_slo_ms=500, itl_slo_ms=50
    )
    calibration = _calibration()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    _report(
        "explicit training plan (8B LoRA, 8x H100, micro-batch 4)",
        _timings(lambda: plan_training(explicit_training).to_contract(), args.repeat),
        0.005,
    )
    _report(
        "explicit inference plan (70B, TP4 H100, batch 32)",
        _timings(lambda: plan_inference(explicit_inference).to_contract(), args.repeat),
        0.005,
    )
    searches = max(5, args.repeat // 10)
    _report(
        "training search (70B full, all priced GPUs x 10 counts x 4 strat)",
        _timings(lambda: recommend_training(search_training).to_contract(), searches),
        0.2,
    )
    _report(
        "inference search (70B, 50 rps, TTFT/ITL SLOs, all GPUs x 4 TP)",
        _timings(lambda: recommend_inference(search_inference).to_contract(), searches),
        0.2,
    )
    calibrated = {"calibration": calibration}
    _report(
        "calibrated explicit training plan (8 observations)",
        _timings(
            lambda: plan_training(explicit_training.model_copy(update=calibrated)).to_contract(),
            args.repeat,
        ),
        0.005,
    )
    _report(
        "calibrated explicit inference plan (8 observations)",
        _timings(
            lambda: plan_inference(explicit_inference.model_copy(update=calibrated)).to_contract(),
            args.repeat,
        ),
        0.005,
    )
    _report(
        "calibrated training search (8 observations)",
        _timings(
            lambda: recommend_training(search_training.model_copy(update=calibrated)).to_contract(),
            searches,
        ),
        0.2,
    )
    _report(
        "calibrated inference search (8 observations)",
        _timings(
            lambda: recommend_inference(
                search_inference.model_copy(update=calibrated)
            ).to_contract(),
            searches,
        ),
        0.2,
    )
    command = [
        sys.executable,
        "-m",
        "trainwright.cli",
        "plan",
        "training",
        "--model",
        "llama-3.1-8b",
        "--method",
        "qlora",
        "--gpu",
        "L4",
        "--gpus",
        "1",
        "-o",
        "json",
    ]
    cold: list[float] = []
    for _ in range(7):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        cold.append(time.perf_counter() - started)
    _report("CLI cold start: trainwright plan training (process)", cold, 1.0, unit="s")
    return 0


def _calibration() -> Any:
    """Eight observed runs in the contract's format: four training, four serving."""
    from trainwright.planner.calibration import parse_calibration

    training = {
        "kind": "training",
        "method": "lora",
        "gpu": "H100-SXM",
        "strategy": "ddp",
        "micro_batch": 4,
        "seq_len": 2048,
        "precision": "bf16",
        "peak_memory_bytes": 40 * 10**9,
    }
    serving = {
        "kind": "inference",
        "gpu": "H100-SXM",
        "precision": "bf16",
        "prompt_tokens": 512,
        "output_tokens": 256,
    }
    observations = [
        {**training, "model": "llama-3.1-8b", "num_gpus": n, "tokens_per_second": 4000.0 * n}
        for n in (1, 2, 4, 8)
    ] + [
        {**serving, "model": "llama-3.1-70b", "tensor_parallel": tp, "batch": 32,
         "output_tokens_per_second": 600.0 * tp}
        for tp in (2, 4, 8)
    ] + [
        {**serving, "model": "llama-3.1-8b", "tensor_parallel": 1, "batch": 64,
         "output_tokens_per_second": 3000.0}
    ]  # fmt: skip
    return parse_calibration({"observations": observations}, source="bench")


if __name__ == "__main__":
    sys.exit(main())
