"""Use-case profiles: every one renders a valid trainer config and a plan; user fields win."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainwright.api.plans import training_request_from
from trainwright.api.profiles import with_profile
from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.cli import main
from trainwright.planner.profiles import PROFILES
from trainwright.planner.training import plan_training
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
