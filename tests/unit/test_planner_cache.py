"""plan_training keeps recent plans: a pure function of a frozen request."""

from __future__ import annotations

from trainwright.planner.training import TrainingRequest, plan_training


def test_the_same_request_twice_gets_the_same_plan_and_any_change_plans_anew() -> None:
    request = TrainingRequest(
        model="llama-3.1-8b", method="lora", gpu="H100-SXM", num_gpus=2, dataset_tokens=10**7
    )
    first = plan_training(request)
    again = plan_training(TrainingRequest(**request.model_dump()))  # equal, not identical
    assert again is first
    longer = plan_training(request.model_copy(update={"seq_len": 4096}))
    assert longer is not first
    assert longer.seq_len == 4096 and first.seq_len == 2048
    more_data = plan_training(request.model_copy(update={"dataset_tokens": 2 * 10**7}))
    assert (more_data.duration_seconds or 0) > (first.duration_seconds or 0) > 0


def test_a_request_with_list_fields_is_cached_by_value() -> None:
    request = TrainingRequest(
        model="qwen2.5-7b", method="qlora", gpu_candidates=["L4", "A10G"], dataset_tokens=10**6
    )
    first = plan_training(request)
    assert plan_training(request.model_copy(update={"gpu_candidates": ["L4", "A10G"]})) is first
    other = plan_training(request.model_copy(update={"gpu_candidates": ["L4"]}))
    assert other.gpu == "L4"
