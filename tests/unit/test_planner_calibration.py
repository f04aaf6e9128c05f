"""Calibration: observed runs move plans of their shape part of the way, never past the roofline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from trainwright.cli import main
from trainwright.planner import (
    InferenceRequest,
    TrainingRequest,
    get_model,
    plan_inference,
    plan_training,
)
from trainwright.planner.calibration import (
    CalibrationError,
    parse_calibration,
    shrunk_factor,
)
from trainwright.planner.inference import MAX_SPEED_FACTOR
from trainwright.planner.throughput import flops_per_token

LORA_8B = {"model": "llama-3.1-8b", "method": "lora", "gpu": "H100-SXM", "num_gpus": 1}
LORA_8B_RUN = {**LORA_8B, "micro_batch": 2, "seq_len": 2048, "dataset_tokens": 10**8}
SERVE_8B = {"model": "llama-3.1-8b", "gpu": "H100-SXM", "batch": 64}


def _training(share: float, plan: Any, **overrides: Any) -> dict[str, Any]:
    """An observed run at ``share`` of ``plan``'s tokens/s, of the same layout by default."""
    observed = {
        "kind": "training",
        "model": plan.model,
        "method": plan.method,
        "gpu": plan.gpu,
        "num_gpus": plan.num_gpus,
        "strategy": plan.strategy,
        "micro_batch": plan.micro_batch,
        "seq_len": plan.seq_len,
        "precision": "bf16",
        "tokens_per_second": share * plan.throughput.tokens_per_second,
        "peak_memory_bytes": None,
    }
    return {**observed, **overrides}


def _calibrate(*observations: dict[str, Any], enabled: bool = True):  # type: ignore[no-untyped-def]
    return parse_calibration(
        {"observations": list(observations)}, source="observed.json", enabled=enabled
    )


@pytest.fixture(scope="module")
def physics():  # type: ignore[no-untyped-def]
    return plan_training(TrainingRequest(**LORA_8B_RUN))


def test_one_observation_moves_a_plan_half_way_and_four_move_it_most_of_the_way(physics) -> None:  # type: ignore[no-untyped-def]
    # Our H100 LoRA run reached 54% of the planned tokens/s (issue 12).
    one = _calibrate(_training(0.54, physics))
    four = _calibrate(*[_training(0.54, physics)] * 4)
    once = plan_training(TrainingRequest(**LORA_8B_RUN, calibration=one))
    often = plan_training(TrainingRequest(**LORA_8B_RUN, calibration=four))
    planned = physics.throughput.tokens_per_second
    assert once.throughput.tokens_per_second == pytest.approx(planned * 0.54**0.5, rel=1e-3)
    assert often.throughput.tokens_per_second == pytest.approx(planned * 0.54**0.8, rel=1e-3)
    # Duration and cost follow the calibrated speed.
    assert once.duration_seconds == pytest.approx(physics.duration_seconds / 0.54**0.5, rel=1e-3)
    assert once.cost.total_usd == pytest.approx(physics.cost.total_usd / 0.54**0.5, rel=1e-2)
    summary = often.calibration
    assert summary is not None and summary.applied and summary.observations == 4
    assert summary.throughput_factor == pytest.approx(0.54**0.8, abs=1e-4)
    assert summary.shape == {
        "gpu": "H100-SXM",
        "method": "lora",
        "strategy": physics.strategy,
        "size_class": "3-15B",
    }


def test_observations_pool_within_a_shape_and_never_across_gpus_methods_or_sizes(physics) -> None:  # type: ignore[no-untyped-def]
    same_class = _training(0.5, physics, model="qwen2.5-7b", num_gpus=2, micro_batch=1)
    other_gpu = _training(0.5, physics, gpu="A100-80GB-SXM")
    other_method = _training(0.5, physics, method="qlora")
    other_size = _training(0.5, physics, model="llama-3.1-70b", num_gpus=8)
    unknown = _training(0.5, physics, model="my-private-model")
    calibration = _calibrate(same_class, other_gpu, other_method, other_size, unknown)
    plan = plan_training(TrainingRequest(**LORA_8B_RUN, calibration=calibration))
    assert plan.calibration is not None
    assert plan.calibration.observations == 1 and plan.calibration.available == 5
    assert plan.throughput.tokens_per_second < physics.throughput.tokens_per_second


def test_no_observation_can_claim_more_than_the_gpus_peak(physics) -> None:  # type: ignore[no-untyped-def]
    bragging = _calibrate(*[_training(20.0, physics)] * 8)
    plan = plan_training(TrainingRequest(**LORA_8B_RUN, calibration=bragging))
    assert plan.calibration is not None and plan.calibration.roofline_capped
    _, hardware = flops_per_token(
        get_model("llama-3.1-8b"),
        method="lora",
        seq_len=2048,
        recompute={"on": "full", "off": "off", "selective": "selective"}[
            plan.gradient_checkpointing
        ],
    )
    assert plan.throughput.tokens_per_second * hardware == pytest.approx(989e12, rel=1e-6)


def test_observed_peak_memory_corrects_memory_within_bounds(physics) -> None:  # type: ignore[no-untyped-def]
    heavier = _training(1.0, physics, peak_memory_bytes=int(1.3 * physics.memory.per_gpu_bytes))
    plan = plan_training(TrainingRequest(**LORA_8B_RUN, calibration=_calibrate(heavier)))
    expected = physics.memory.per_gpu_bytes * 1.3**0.5
    assert plan.memory.per_gpu_bytes == pytest.approx(expected, rel=1e-3)
    wild = _training(1.0, physics, peak_memory_bytes=40 * physics.memory.per_gpu_bytes)
    bounded = plan_training(TrainingRequest(**LORA_8B_RUN, calibration=_calibrate(*[wild] * 9)))
    assert bounded.calibration is not None and bounded.calibration.memory_factor == 2.0


def test_calibration_can_be_shown_without_being_applied(physics) -> None:  # type: ignore[no-untyped-def]
    shown = _calibrate(_training(0.54, physics), enabled=False)
    plan = plan_training(TrainingRequest(**LORA_8B_RUN, calibration=shown))
    assert plan.throughput.tokens_per_second == physics.throughput.tokens_per_second
    assert plan.memory.per_gpu_bytes == physics.memory.per_gpu_bytes
    assert plan.calibration is not None and not plan.calibration.applied
    assert plan.calibration.throughput_factor == pytest.approx(0.54**0.5, abs=1e-4)


def _serving(share: float, planned: float, **overrides: Any) -> dict[str, Any]:
    observed = {
        "kind": "inference",
        "model": "llama-3.1-8b",
        "gpu": "H100-SXM",
        "precision": "bf16",
        "tensor_parallel": 1,
        "batch": 64,
        "prompt_tokens": 512,
        "output_tokens": 256,
        "output_tokens_per_second": share * planned,
        "ttft_seconds": None,
        "itl_seconds": None,
    }
    return {**observed, **overrides}


def test_serving_observations_slow_every_step_and_grow_the_fleet() -> None:
    physics = plan_inference(InferenceRequest(**SERVE_8B))
    planned = physics.throughput.output_tokens_per_second
    at_32 = plan_inference(InferenceRequest(**{**SERVE_8B, "batch": 32}))
    planned_32 = at_32.throughput.output_tokens_per_second
    calibration = _calibrate(*[_serving(0.6, planned_32, batch=32)] * 3, _serving(0.6, planned))
    plan = plan_inference(InferenceRequest(**SERVE_8B, calibration=calibration))
    # Four observations at 60% (one at this batch, three at batch 32): 0.6^(4/5).
    assert plan.throughput.output_tokens_per_second == pytest.approx(planned * 0.6**0.8, rel=1e-3)
    assert plan.latency.itl_seconds == pytest.approx(
        physics.latency.itl_seconds / 0.6**0.8, rel=1e-3
    )
    load = {"model": "llama-3.1-8b", "gpu": "H100-SXM", "rps": 40, "itl_slo_ms": 60}
    fleet = plan_inference(InferenceRequest(**load))
    slower = plan_inference(InferenceRequest(**load, calibration=calibration))
    assert slower.replicas * slower.tensor_parallel >= fleet.replicas * fleet.tensor_parallel
    assert slower.cost.usd_per_hour >= fleet.cost.usd_per_hour


def test_serving_calibration_stops_at_the_bandwidth_roofline() -> None:
    planned = plan_inference(InferenceRequest(**SERVE_8B)).throughput.output_tokens_per_second
    plan = plan_inference(
        InferenceRequest(**SERVE_8B, calibration=_calibrate(*[_serving(5.0, planned)] * 6))
    )
    assert plan.calibration is not None and plan.calibration.roofline_capped
    assert plan.calibration.throughput_factor == pytest.approx(MAX_SPEED_FACTOR)
    assert plan.throughput.output_tokens_per_second == pytest.approx(
        planned * MAX_SPEED_FACTOR, rel=1e-3
    )


def test_shrinkage_is_a_geometric_mean_pulled_toward_one() -> None:
    assert shrunk_factor([]) == 1.0
    assert shrunk_factor([0.25]) == pytest.approx(0.5)
    assert shrunk_factor([2.0, 0.5]) == pytest.approx(1.0)
    assert shrunk_factor([0.5] * 9) == pytest.approx(math.exp(0.9 * math.log(0.5)))


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"observations": [{"kind": "training", "model": "x"}]}, "observations[0].gpu"),
        ({"observations": [{"kind": "bogus"}]}, "observations[0]"),
        (["not", "an", "object"], "an object with an 'observations' list"),
    ],
)
def test_a_malformed_file_names_itself_and_the_field(document: object, field: str) -> None:
    with pytest.raises(CalibrationError, match=r"^observed\.json: ") as error:
        parse_calibration(document, source="observed.json")
    assert field in str(error.value)


def test_the_cli_applies_a_calibration_file_and_says_so(
    tmp_path: Path,
    physics,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "observed.json"
    path.write_text(json.dumps({"observations": [_training(0.54, physics)]}), encoding="utf-8")
    argv = ["plan", "training", "--model", "llama-3.1-8b", "--method", "lora", "--gpu"]
    argv += ["H100-SXM", "--gpus", "1", "--micro-batch", "2", "--calibration", str(path)]
    assert main([*argv, "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    calibration = document["calibration"]
    assert {"applied", "observations", "throughput_factor", "memory_factor"} <= set(calibration)
    assert calibration["applied"] and calibration["observations"] == 1
    assert document["throughput"]["tokens_per_second"] == pytest.approx(
        physics.throughput.tokens_per_second * 0.54**0.5, rel=1e-3
    )
    assert main([*argv, "-o", "table"]) == 0
    assert "calibration: 1 observation(s) of this shape (H100-SXM, lora" in capsys.readouterr().out


def test_the_cli_rejects_a_malformed_calibration_file_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "observed.yaml"
    path.write_text(
        "observations:\n  - kind: inference\n    model: llama-3.1-8b\n", encoding="utf-8"
    )
    argv = ["plan", "inference", "--model", "llama-3.1-8b", "--calibration", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "observations[0].gpu" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
