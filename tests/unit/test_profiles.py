"""Use-case profiles: every one renders a valid trainer config and a plan; user fields win.

The rules that depend on the run: the learning rate follows the effective batch
(square-root rule), epochs follow the dataset's size, and method auto picks QLoRA only
when 16-bit LoRA does not fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainwright.api.plans import plan_status_from, training_request_from
from trainwright.api.profiles import with_profile
from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.cli import main
from trainwright.planner.profiles import PROFILES, epochs_for_dataset, scaled_learning_rate
from trainwright.planner.training import TrainingRequest, plan_training
from trainwright.resources.trainer import render_trainer_config, trainer_config
from trainwright.vocabulary import USE_CASES
from trainwright_trainer.config import parse_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "profiles.md"


def _job(**spec: Any) -> TrainingJob:
    body = {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://datasets/train.jsonl", "tokens": 10_000_000},
        "resources": {"gpuType": "H100-SXM", "gpus": 8},
        **spec,
    }
    return TrainingJob.from_body(
        {
            "apiVersion": "trainwright.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "ft", "namespace": "ml"},
            "spec": body,
        }
    )


def _plan_status() -> PlanStatus:
    return PlanStatus(
        gpu_type="H100-SXM",
        num_gpus=8,
        nodes=1,
        gpus_per_node=8,
        strategy="ddp",
        micro_batch_size=2,
        gradient_accumulation_steps=1,
        gradient_checkpointing=True,
        memory_per_gpu_bytes=40_000_000_000,
        tokens_per_second=50_000.0,
    )


def test_there_is_one_profile_per_use_case_and_the_docs_give_every_reason() -> None:
    docs = DOCS.read_text()

    assert tuple(PROFILES) == USE_CASES
    for profile in PROFILES.values():
        assert f"`{profile.name}`" in docs
        assert all(choice.reason in docs for choice in profile.defaults().values())


@pytest.mark.parametrize("name", USE_CASES)
def test_every_profile_renders_a_valid_trainer_config_and_a_plan_that_fits(name: str) -> None:
    job = _job(profile=name)
    profile = PROFILES[name]
    text = render_trainer_config(trainer_config(job, _plan_status()))
    config = parse_config(yaml.safe_load(text))
    plan = plan_training(training_request_from(job.spec))

    assert config.data.seq_len == profile.seq_len.value == plan.seq_len
    assert config.training.learning_rate == profile.learning_rate.value
    assert config.training.epochs == profile.epochs.value
    assert config.lora is not None and config.lora.rank == profile.lora_rank.value
    assert config.lora.alpha == profile.lora_alpha.value
    assert config.data.train_on_prompt is profile.train_on_prompt.value
    assert plan.fits and plan.num_gpus == 8


def test_fields_the_user_set_win_over_the_profile() -> None:
    job = _job(
        profile="domain-adaptation",
        training={"seqLen": 2048, "learningRate": 5.0e-5},
        lora={"rank": 8},
    )
    effective = with_profile(job.spec)
    config = trainer_config(job, _plan_status())

    assert (config.data.seq_len, config.training.learning_rate) == (2048, 5.0e-5)
    assert config.training.epochs == 1  # from the profile
    assert config.lora is not None and (config.lora.rank, config.lora.alpha) == (8, 128.0)
    assert config.data.train_on_prompt is True
    assert job.spec.training.seq_len == 2048 and effective is not job.spec
    assert with_profile(_job().spec).training.seq_len == 2048  # no profile: the spec as is


def test_plan_training_with_a_profile_shows_its_defaults_and_flags_win(
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["plan", "training", "--model", "llama-3.1-8b", "--method", "lora", "--gpu"]
    common += ["H100-SXM", "--gpus", "8", "--profile", "code", "-o", "json"]
    assert main(common) == 0
    plan = json.loads(capsys.readouterr().out)
    assert main([*common, "--seq-len", "1024"]) == 0
    shorter = json.loads(capsys.readouterr().out)

    assert plan["seq_len"] == 4096 and shorter["seq_len"] == 1024
    assert plan["profile"]["name"] == "code"
    assert plan["profile"]["defaults"]["lora_rank"] == {
        "value": 32,
        "reason": PROFILES["code"].lora_rank.reason,
    }
    with pytest.raises(SystemExit) as bad:
        main(["plan", "training", "--model", "llama-3.1-8b", "--method", "lora", "--profile", "x"])
    assert bad.value.code == 2
    assert "--profile: invalid choice: 'x'" in capsys.readouterr().err


def _plan(num_gpus: int, micro_batch: int, accumulation: int, **extra: Any) -> PlanStatus:
    return PlanStatus(
        gpu_type="H100-SXM",
        num_gpus=num_gpus,
        nodes=1,
        gpus_per_node=num_gpus,
        strategy="ddp",
        micro_batch_size=micro_batch,
        gradient_accumulation_steps=accumulation,
        memory_per_gpu_bytes=40_000_000_000,
        tokens_per_second=50_000.0,
        **extra,
    )


@pytest.mark.parametrize(
    ("batch", "rate"),
    [(16, 1e-4), (64, 2e-4), (4, 5e-5), (1, 2.5e-5), (32, 1.41e-4), (4096, 4e-4)],
)
def test_the_learning_rate_scales_with_the_square_root_of_the_batch(
    batch: int, rate: float
) -> None:
    choice = scaled_learning_rate(PROFILES["code"], batch)

    assert choice.value == pytest.approx(rate)
    if batch != 16:
        assert "square-root rule" in choice.reason and f"sqrt({batch}/16)" in choice.reason


@pytest.mark.parametrize(
    ("profile", "tokens", "epochs"),
    [
        ("chatbot", 500_000, 4),
        ("chatbot", 10_000_000, 3),
        ("chatbot", 500_000_000, 1),
        ("qa", 1_999_999, 4),
        ("code", 2_000_000, 2),
        ("domain-adaptation", 300_000, 2),
        ("creative-writing", 100_000_000, 1),
        ("summarization", None, 2),
    ],
)
def test_epochs_follow_the_dataset_size(profile: str, tokens: int | None, epochs: int) -> None:
    assert epochs_for_dataset(PROFILES[profile], tokens).value == epochs


def test_the_trainer_config_carries_the_rate_for_the_plans_batch_and_user_fields_win() -> None:
    job = _job(profile="code", dataset={"uri": "pvc://d/t.jsonl", "tokens": 800_000})
    config = parse_config(
        yaml.safe_load(render_trainer_config(trainer_config(job, _plan(8, 4, 2))))
    )
    mine = _job(
        profile="code",
        dataset={"uri": "pvc://d/t.jsonl", "tokens": 800_000},
        training={"learningRate": 3e-5, "epochs": 1},
    )
    mine_config = trainer_config(mine, _plan(8, 4, 2))

    assert config.training.learning_rate == pytest.approx(2e-4)  # 1e-4 x sqrt(64 / 16)
    assert config.training.epochs == 3  # code's 2, one more for 0.8M tokens
    assert with_profile(job.spec).training.epochs == 3
    assert (mine_config.training.learning_rate, mine_config.training.epochs) == (3e-5, 1)
    assert trainer_config(_job(), _plan(8, 4, 2)).training.learning_rate == 2e-4  # no profile


def test_method_auto_picks_qlora_only_when_16_bit_lora_does_not_fit() -> None:
    big = plan_training(
        TrainingRequest(model="llama-3.1-70b", method="auto", gpu="H100-SXM", num_gpus=1)
    )
    searched = plan_training(
        TrainingRequest(
            model="llama-3.1-70b", method="auto", gpu_candidates=["H100-SXM"], max_gpus=1
        )
    )
    small = plan_training(
        TrainingRequest(model="llama-3.1-8b", method="auto", gpu="H100-SXM", num_gpus=1)
    )

    assert (big.method, big.fits) == ("qlora", True)
    assert big.method_reason is not None and "141.7 GiB per GPU" in big.method_reason
    assert searched.method == "qlora" and searched.num_gpus == 1
    assert searched.method_reason is not None and "fits no plan" in searched.method_reason
    assert (small.method, small.fits) == ("lora", True)
    assert small.method_reason == "method auto: 16-bit LoRA fits 1x H100-SXM, so no 4-bit base"


def test_a_job_with_method_auto_trains_the_method_its_plan_resolved() -> None:
    job = _job(
        model={"name": "llama-3.1-70b"},
        method="auto",
        profile="chatbot",
        resources={"gpuType": "H100-SXM", "gpus": 1},
    )
    status = plan_status_from(plan_training(training_request_from(job.spec)))
    text = render_trainer_config(trainer_config(job, status))
    config = parse_config(yaml.safe_load(text))

    assert status.method == "qlora" and status.method_reason is not None
    assert config.method == "qlora"
    assert config.lora is not None and config.lora.rank == PROFILES["chatbot"].lora_rank.value
    with pytest.raises(ValueError, match=r"status\.plan\.method"):
        trainer_config(job, _plan(1, 1, 1))


def test_plan_training_shows_the_resolved_rate_epochs_and_method(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["plan", "training", "--model", "llama-3.1-70b", "--method", "auto", "--gpu"]
    argv += ["H100-SXM", "--gpus", "1", "--profile", "qa", "--dataset-tokens", "500000"]
    assert main([*argv, "-o", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert main([*argv, "-o", "table"]) == 0
    table = capsys.readouterr().out

    batch = plan["micro_batch"] * plan["gradient_accumulation"]
    defaults = plan["profile"]["defaults"]
    assert plan["method"] == "qlora" and plan["method_reason"].startswith("method auto: QLoRA")
    assert plan["profile"]["effective_batch_sequences"] == batch
    assert defaults["learning_rate"]["value"] == scaled_learning_rate(PROFILES["qa"], batch).value
    assert defaults["epochs"]["value"] == 4 and "small dataset" in defaults["epochs"]["reason"]
    assert plan["duration_seconds"] == pytest.approx(
        500_000 * 4 / plan["throughput"]["tokens_per_second"], rel=0.01
    )
    assert plan["method_reason"] in table


def test_the_trainer_runs_the_epochs_planned_for_the_measured_dataset_size() -> None:
    # The dataset check measures the tokens the spec left out; the plan is made from a
    # copy that holds them, the trainer's config from the job as the user wrote it.
    job = _job(profile="chatbot", dataset={"uri": "pvc://d/t.jsonl"})
    measured = job.spec.model_copy(
        update={"dataset": job.spec.dataset.model_copy(update={"tokens": 600_000})}
    )
    status = plan_status_from(plan_training(training_request_from(measured)))
    config = trainer_config(job, status)

    assert status.epochs == 4  # chatbot's 3, one more for 0.6M tokens
    assert config.training.epochs == 4
    assert trainer_config(job, _plan(8, 2, 1)).training.epochs == 3  # an older plan: the spec's
