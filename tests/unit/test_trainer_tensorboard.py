"""TensorBoard events from rank 0 beside the checkpoints, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest

from trainer_fixtures import tiny_train_config
from trainwright_trainer.config import parse_config
from trainwright_trainer.exitcodes import ExitCode
from trainwright_trainer.tensorboard_events import EventWriter
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


def _events(log_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar tag as {step: value}, by tensorboard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: {e.step: e.value for e in accumulator.Scalars(tag)}
        for tag in accumulator.Tags()["scalars"]
    }


def _log(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.usefixtures("world_of_one")
def test_a_run_writes_the_same_loss_lr_grad_norm_and_eval_figures_as_its_log(
    tmp_path: Path,
) -> None:
    import torch

    torch.set_num_threads(1)
    cfg = tiny_train_config(tmp_path, max_steps=6, interval_steps=3, data={"eval_fraction": 0.2})
    assert run_training(parse_config(cfg)) == ExitCode.SUCCESS
    events = _events(tmp_path / "ckpt" / "tensorboard")
    records = _log(tmp_path)
    steps = [r for r in records if "step" in r and "loss" in r]
    evals = [r for r in records if r.get("event") == "eval"]
    progress = json.loads((tmp_path / "ckpt" / "progress.json").read_text())

    assert set(events) == {
        "train/loss",
        "train/learning_rate",
        "train/grad_norm",
        "train/tokens_per_second",
        "eval/loss",
        "eval/perplexity",
    }  # no train/mfu: a CPU has no datasheet peak to divide by
    # Event values are float32: equal to the log's float64 to float32 precision.
    assert events["train/loss"] == pytest.approx({r["step"]: r["loss"] for r in steps}, rel=1e-6)
    assert events["train/learning_rate"] == pytest.approx(
        {r["step"]: r["lr"] for r in steps}, rel=1e-6
    )
    assert events["train/grad_norm"] == pytest.approx(
        {r["step"]: r["grad_norm"] for r in steps}, rel=1e-6
    )
    assert sorted(events["train/tokens_per_second"]) == [1, 2, 3, 4, 5, 6]
    assert events["train/tokens_per_second"][6] == pytest.approx(
        progress["tokens_per_second"], rel=1e-6
    )
    assert events["eval/loss"] == pytest.approx(
        {e["at_step"]: e["eval_loss"] for e in evals}, rel=1e-6
    )
    assert sorted(events["eval/loss"]) == [0, 3, 6]
    assert events["eval/perplexity"][6] == pytest.approx(math.exp(progress["eval_loss"]), rel=1e-5)
    # A CPU rank meters no GPU energy: the progress says so rather than inventing one.
    assert progress["gpu_energy_joules"] is None and progress["mfu"] is None


def test_non_finite_values_are_left_out_and_a_disabled_writer_writes_nothing(
    tmp_path: Path,
) -> None:
    writer = EventWriter(tmp_path / "tb")
    writer.scalars(1, {"train/loss": 2.5, "train/grad_norm": math.nan, "eval/perplexity": None})
    writer.scalars(2, {"train/loss": math.inf})
    writer.close()
    assert _events(tmp_path / "tb") == {"train/loss": {1: 2.5}}
    off = EventWriter(None)
    off.scalars(1, {"train/loss": 1.0})
    off.close()
    assert not off.enabled
