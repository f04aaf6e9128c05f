"""Evaluation on held-out data: the reported eval loss, samples, the best checkpoint.

The loop runs in one process on the tiny model (tests/trainer_fixtures.py); the
stopping rules are checked on constructed loss curves without torch.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainer_fixtures import tiny_train_config
from trainwright_trainer.config import parse_config
from trainwright_trainer.data.dataset import holdout_split, load_prepared
from trainwright_trainer.errors import ConfigError, DataError
from trainwright_trainer.exitcodes import ExitCode
from trainwright_trainer.stopping import EarlyStopping, OverfitWatch
from trainwright_trainer.train import run_training


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture
def world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": _free_port(),
    }.items():
        monkeypatch.setenv(name, value)


def _records(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    lines = (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == event]


def _direct_eval_loss(model_dir: Path, cache_root: Path, fraction: float, seed: int) -> float:
    """Mean token cross-entropy of the saved model on the held-out split, by transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    (prepared,) = [p for p in cache_root.iterdir() if (p / "stats.json").is_file()]
    dataset = load_prepared(prepared)
    _, held_out = holdout_split(len(dataset), fraction, seed)
    arrays = dataset.take(held_out)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(arrays["input_ids"].astype(np.int64)),
            position_ids=torch.from_numpy(arrays["position_ids"].astype(np.int64)),
            labels=torch.from_numpy(arrays["labels"].astype(np.int64)),
        )
    return float(out.loss)


@pytest.mark.usefixtures("world_of_one")
def test_the_reported_eval_loss_equals_a_direct_evaluation_of_the_saved_model(
    tmp_path: Path,
) -> None:
    import torch

    torch.set_num_threads(1)
    cfg = tiny_train_config(
        tmp_path,
        max_steps=6,
        interval_steps=3,
        data={"eval_fraction": 0.2},
        evaluation={"samples": 2, "sample_max_new_tokens": 8},
    )
    assert run_training(parse_config(cfg)) == ExitCode.SUCCESS
    evals = _records(tmp_path, "eval")
    progress = json.loads((tmp_path / "ckpt" / "progress.json").read_text())
    direct = _direct_eval_loss(tmp_path / "out", tmp_path / "data-cache", 0.2, seed=7)

    assert [e["at_step"] for e in evals] == [0, 3, 6]
    assert evals[-1]["eval_loss"] == pytest.approx(direct, rel=1e-5)
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.3  # it learned
    assert progress["eval_loss"] == pytest.approx(direct, rel=1e-5)
    assert progress["eval_perplexity"] == pytest.approx(math.exp(direct), rel=1e-5)
    assert progress["eval_step"] == 6 and progress["overfitting"] is False

    best = json.loads((tmp_path / "ckpt" / "best.json").read_text())
    best_eval = min(evals[1:], key=lambda e: e["eval_loss"])
    assert best["step"] == best_eval["at_step"] == progress["best_step"]
    assert best["eval_loss"] == pytest.approx(best_eval["eval_loss"])
    assert (tmp_path / "ckpt" / best["checkpoint"] / "manifest.json").is_file()

    samples = [
        json.loads(x) for x in (tmp_path / "ckpt" / "samples.jsonl").read_text().splitlines()
    ]
    assert [(s["step"], s["label"]) for s in samples] == [
        (0, "base"),
        (0, "base"),
        (3, "eval"),
        (3, "eval"),
        (6, "final"),
        (6, "final"),
    ]
    assert all(s["prompt"] and s["reference"] for s in samples)


def test_the_held_out_split_is_decided_by_the_seed_alone() -> None:
    train, held_out = holdout_split(40, 0.2, seed=7)
    again = holdout_split(40, 0.2, seed=7)
    other = holdout_split(40, 0.2, seed=8)

    assert len(held_out) == 8 and len(train) == 32
    assert sorted([*train, *held_out]) == list(range(40))
    assert np.array_equal(held_out, again[1])
    assert not np.array_equal(held_out, other[1])
    with pytest.raises(DataError, match="eval_fraction"):
        holdout_split(1, 0.5, seed=7)


def test_eval_fraction_and_eval_path_exclude_each_other(tmp_path: Path) -> None:
    cfg = tiny_train_config(tmp_path, data={"eval_fraction": 0.1, "eval_path": "x.jsonl"})
    with pytest.raises(ConfigError, match=r"at most one of data.eval_fraction and data.eval_path"):
        parse_config(cfg)


def test_early_stopping_stops_after_patience_evaluations_without_a_min_delta_gain() -> None:
    # Evaluations every 100 steps; 1.19 at step 400 is not 0.02 below 1.20.
    curve = [(100, 2.0), (200, 1.5), (300, 1.2), (400, 1.19), (500, 1.25), (600, 1.3), (700, 1.1)]
    rule = EarlyStopping(patience=3, min_delta=0.02)
    stopped_at = next(
        step for step, loss in curve if (rule.observe(step, loss), rule.should_stop)[1]
    )

    assert stopped_at == 600
    assert (rule.best_step, rule.best_loss) == (300, 1.2)


def test_early_stopping_without_patience_only_tracks_the_best() -> None:
    rule = EarlyStopping(patience=None)
    improved = [rule.observe(step, loss) for step, loss in [(1, 3.0), (2, 3.5), (3, 2.5), (4, 9.0)]]

    assert improved == [True, False, True, False]
    assert not rule.should_stop and rule.best_step == 3


def test_overfitting_needs_k_evaluations_of_falling_train_and_rising_eval_loss() -> None:
    watch = OverfitWatch(evaluations=3)
    # Eval loss bottoms out at the second evaluation, then rises three times in a row.
    history = [(2.0, 2.1), (1.5, 1.8), (1.2, 1.85), (1.0, 1.9), (0.9, 1.95), (0.8, 2.0)]
    flags = [watch.observe(train, eval_) for train, eval_ in history]

    assert flags == [False, False, False, False, True, True]
    assert watch.observe(0.85, 2.1) is False  # the train loss rose: not the pattern
    restored = OverfitWatch(evaluations=3)
    restored.load_state_dict(watch.state_dict())
    assert restored.history == watch.history


@pytest.mark.usefixtures("world_of_one")
def test_early_stopping_ends_the_run_and_saves_the_best_checkpoint_as_the_output(
    tmp_path: Path,
) -> None:
    import torch

    torch.set_num_threads(1)
    # A min delta no evaluation can beat: step 2 is the best, step 4 is one without gain.
    cfg = tiny_train_config(
        tmp_path,
        max_steps=10,
        interval_steps=2,
        data={"eval_fraction": 0.2},
        evaluation={"early_stopping_patience": 1, "early_stopping_min_delta": 100.0, "samples": 0},
    )
    assert run_training(parse_config(cfg)) == ExitCode.SUCCESS
    evals = {e["at_step"]: e["eval_loss"] for e in _records(tmp_path, "eval")}
    progress = json.loads((tmp_path / "ckpt" / "progress.json").read_text())
    best = json.loads((tmp_path / "ckpt" / "best.json").read_text())
    direct = _direct_eval_loss(tmp_path / "out", tmp_path / "data-cache", 0.2, seed=7)

    assert sorted(evals) == [0, 2, 4]
    assert _records(tmp_path, "early_stop") == [{"event": "early_stop", "at_step": 4}]
    assert (progress["state"], progress["early_stopped"], progress["best_step"]) == (
        "succeeded",
        True,
        2,
    )
    assert best["step"] == 2 and (tmp_path / "ckpt" / "step-000002").is_dir()
    assert direct == pytest.approx(evals[2], rel=1e-5)  # the output is step 2's weights
    assert direct != pytest.approx(evals[4], rel=1e-5)
    assert not (tmp_path / "ckpt" / "samples.jsonl").exists()  # samples: 0 turns them off


def test_retention_keeps_the_best_checkpoint_and_best_json_points_at_it(tmp_path: Path) -> None:
    from trainwright_trainer.checkpoint import CheckpointManager

    manager = CheckpointManager(
        tmp_path, rank=0, keep_last=1, barrier=lambda: None, broadcast=lambda value: value
    )
    for step in (1, 2, 3):
        (tmp_path / f"step-{step:06d}").mkdir()
    manager.mark_best(1, {"eval_loss": 1.5, "eval_perplexity": 4.48})
    manager._retain()

    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000001", "step-000003"]
    assert json.loads((tmp_path / "best.json").read_text()) == {
        "checkpoint": "step-000001",
        "step": 1,
        "eval_loss": 1.5,
        "eval_perplexity": 4.48,
    }
