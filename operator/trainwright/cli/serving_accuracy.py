"""Serving throughput and latency against published measurements at real batch sizes.

Reads ``tests/data/serving-measured.csv``: one row per published figure (TensorRT-LLM's
performance tables, NVIDIA NIM's benchmarks), each with its source, engine, GPU,
model, precision, tensor parallelism, batching and sequence lengths. ``batching`` says
how the batch was set:

- ``static``: a fixed batch of ``batch`` sequences prefilled and decoded together
  (TensorRT-LLM's early session benchmarks);
- ``concurrency``: a closed loop of ``batch`` clients (vLLM/NIM serving benchmarks),
  so at most that many sequences run and no more than the KV cache holds;
- ``max``: requests at an infinite rate, so the batch is what the KV cache holds
  (TensorRT-LLM's ``trtllm-bench``, which reserves 0.90-0.95 of free memory for it).

Rows marked ``heldout`` were never used to set the planner's efficiencies; they are
reported apart. The issue's bar: throughput within ±25% at batch 32 and more on at
least 80% of the tuned rows.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

SERVING_CSV = Path(__file__).resolve().parents[3] / "tests" / "data" / "serving-measured.csv"
THROUGHPUT_TOLERANCE = 0.25
LARGE_BATCH = 32
SERVING_BAR = 0.80
# trtllm-bench gives the KV cache 0.90-0.95 of the memory its weights leave free.
MAX_THROUGHPUT_MEMORY_UTILIZATION = 0.95
# A static-batch engine allocates exactly its batch's KV cache, with no pool margin.
STATIC_MEMORY_UTILIZATION = 1.0
MAX_THROUGHPUT_SEQUENCES = 4096
BANDS = ((1, 1, "1"), (2, 7, "2-7"), (8, 64, "8-64"), (65, 127, "65-127"), (128, 10**9, "128+"))


class ServingResult(NamedTuple):
    row_id: int
    split: str
    engine: str
    gpu: str
    model: str
    tp: int
    batching: str
    batch: int  # the row's batch or concurrency; for ``max`` rows the planner's batch
    prompt_tokens: int
    output_tokens: int
    measured_tokens_per_second: float
    estimate_tokens_per_second: float
    measured_ttft_ms: float | None
    estimate_ttft_ms: float
    measured_itl_ms: float | None
    estimate_itl_ms: float

    @property
    def error(self) -> float:
        return self.estimate_tokens_per_second / self.measured_tokens_per_second - 1

    @property
    def within(self) -> bool:
        return abs(self.error) <= THROUGHPUT_TOLERANCE

    @property
    def large_batch(self) -> bool:
        return self.batch >= LARGE_BATCH

    @property
    def band(self) -> str:
        return next(name for low, high, name in BANDS if low <= self.batch <= high)


def serving_request(row: dict[str, str]) -> dict[str, Any]:
    """The planner request one CSV row describes."""
    fields: dict[str, Any] = {
        "model": row["model"],
        "gpu": row["gpu"],
        "precision": row["precision"],
        "tensor_parallel": int(row["tp"]),
        "prompt_tokens": int(row["prompt_tokens"]),
        "output_tokens": int(row["output_tokens"]),
    }
    if row["batching"] == "static":
        fields["batch"] = int(row["batch"])
        fields["gpu_memory_utilization"] = STATIC_MEMORY_UTILIZATION
    elif row["batching"] == "concurrency":
        fields["max_num_seqs"] = int(row["batch"])
    else:
        fields["max_num_seqs"] = MAX_THROUGHPUT_SEQUENCES
        fields["gpu_memory_utilization"] = MAX_THROUGHPUT_MEMORY_UTILIZATION
    return fields


def _optional(text: str) -> float | None:
    return float(text) if text.strip() else None


def evaluate_serving(rows: Iterable[dict[str, str]]) -> list[ServingResult]:
    """Plan every row; the estimate is the replica's output tokens/s at the row's batch."""
    from trainwright.planner import InferenceRequest, plan_inference

    results = []
    for row in rows:
        plan = plan_inference(InferenceRequest(**serving_request(row)))
        batch = plan.batch if row["batching"] == "max" else int(row["batch"])
        ttft_seconds = plan.latency.ttft_p50_seconds
        if row["batching"] == "concurrency" and batch > plan.batch:
            # A closed loop of more clients than the replica runs: each waits for
            # (clients - slots) / slots of a request's service time before it is admitted.
            service = plan.latency.ttft_p50_seconds + plan.output_tokens * plan.latency.itl_seconds
            ttft_seconds += (batch - plan.batch) / plan.batch * service
        results.append(
            ServingResult(
                int(row["id"]),
                row["split"],
                row["engine"],
                row["gpu"],
                row["model"],
                int(row["tp"]),
                row["batching"],
                batch,
                int(row["prompt_tokens"]),
                int(row["output_tokens"]),
                float(row["output_tokens_per_second"]),
                plan.throughput.output_tokens_per_second,
                _optional(row["ttft_ms"]),
                ttft_seconds * 1000,
                _optional(row["itl_ms"]),
                plan.latency.itl_seconds * 1000,
            )
        )
    return results


def read_serving_rows(path: Path = SERVING_CSV) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def large_batch_hits(results: Sequence[ServingResult], split: str) -> tuple[int, int]:
    """(rows within ±25%, rows) at batch 32 and more in one split."""
    chosen = [r for r in results if r.split == split and r.large_batch]
    return sum(r.within for r in chosen), len(chosen)


def _median_abs(values: Sequence[float]) -> float:
    ordered = sorted(abs(v) for v in values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def band_summary(results: Sequence[ServingResult]) -> list[tuple[str, str, str, int, int, float]]:
    """(split, band, metric, within, rows, median |error|) for throughput, TTFT and ITL."""
    lines = []
    for split in ("tuned", "heldout"):
        for _, _, band in BANDS:
            chosen = [r for r in results if r.split == split and r.band == band]
            if not chosen:
                continue
            errors = [r.error for r in chosen]
            hits = sum(r.within for r in chosen)
            lines.append((split, band, "throughput", hits, len(chosen), _median_abs(errors)))
            for metric, pairs in (
                ("TTFT", [(r.measured_ttft_ms, r.estimate_ttft_ms) for r in chosen]),
                ("ITL", [(r.measured_itl_ms, r.estimate_itl_ms) for r in chosen]),
            ):
                given = [(m, e) for m, e in pairs if m is not None and math.isfinite(e)]
                if given:
                    latency_errors = [e / m - 1 for m, e in given]
                    within = sum(abs(x) <= THROUGHPUT_TOLERANCE for x in latency_errors)
                    lines.append(
                        (split, band, metric, within, len(given), _median_abs(latency_errors))
                    )
    return lines


def render_serving_markdown(results: Sequence[ServingResult]) -> list[str]:
    """The serving section of docs/planner-accuracy.md."""
    lines = [
        "## Serving at real batch sizes",
        "",
        "From `tests/data/serving-measured.csv` (`trainwright.cli.serving_accuracy` says how "
        "each row becomes a request). The estimate is one replica's output tokens/s at the "
        "row's batch: static batches as given, closed-loop concurrency capped by what the KV "
        "cache holds, and infinite-rate rows at the largest batch the KV cache holds. "
        "Efficiencies were set on the *tuned* rows; the *heldout* rows were never used.",
        "",
    ]
    for split in ("tuned", "heldout"):
        hits, total = large_batch_hits(results, split)
        if total:
            verdict = "met" if hits >= SERVING_BAR * total else "**not met**"
            lines.append(
                f"- {split}: throughput within ±25% at batch ≥ {LARGE_BATCH} on {hits} of "
                f"{total} rows ({hits / total:.0%}); the issue's bar of {SERVING_BAR:.0%} is "
                f"{verdict}."
            )
    lines += [
        "",
        "| split | batch | metric | within ±25% | rows | median abs error |",
        "|---|---|---|---|---|---|",
    ]
    for split, band, metric, hits, total, median in band_summary(results):
        lines.append(f"| {split} | {band} | {metric} | {hits} | {total} | {median:.0%} |")
    lines += [
        "",
        "| id | split | engine | GPU | model | TP | batching | batch | in/out | measured tok/s | "
        "estimate | error | TTFT ms meas/est | ITL ms meas/est |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ttft = (
            f"{r.measured_ttft_ms:,.4g} / {r.estimate_ttft_ms:,.4g}" if r.measured_ttft_ms else ""
        )
        itl = f"{r.measured_itl_ms:,.4g} / {r.estimate_itl_ms:,.4g}" if r.measured_itl_ms else ""
        lines.append(
            f"| {r.row_id} | {r.split} | {r.engine} | {r.gpu} | {r.model} | {r.tp} | "
            f"{r.batching} | {r.batch} | {r.prompt_tokens}/{r.output_tokens} | "
            f"{r.measured_tokens_per_second:,.4g} | {r.estimate_tokens_per_second:,.4g} | "
            f"{r.error:+.1%} | {ttft} | {itl} |"
        )
    return lines
