"""The training loop in one process (a world of one): guards, resume, exit codes.

Multi-rank behaviour (DDP/FSDP2/DeepSpeed, kill -9) is in tests/distributed/.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from trainer_fixtures import tiny_train_config
from trainwright_trainer.__main__ import main
from trainwright_trainer.config import parse_config
from trainwright_trainer.errors import DivergedError
from trainwright_trainer.exitcodes import ExitCode
from trainwright_trainer.train import lr_at_step, run_training

LOSS_TOLERANCE = 1e-5  # CPU fp32, one rank: resumed losses match to this


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


def _run(tmp_path: Path, **kwargs: Any) -> int:
    return run_training(parse_config(tiny_train_config(tmp_path, **kwargs)))


def _log(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _losses(tmp_path: Path) -> dict[int, float]:
    """Loss per step; a step trained twice (after a resume) keeps its last value."""
    return {r["step"]: r["loss"] for r in _log(tmp_path) if "step" in r}


@pytest.fixture(scope="module")
def clean_losses(tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    mp = pytest.MonkeyPatch()
    mp.setenv("RANK", "0")
    mp.setenv("LOCAL_RANK", "0")
    mp.setenv("WORLD_SIZE", "1")
    mp.setenv("MASTER_ADDR", "127.0.0.1")
    mp.setenv("MASTER_PORT", _free_port())
    root = tmp_path_factory.mktemp("clean")
    try:
        assert _run(root, max_steps=12) == ExitCode.SUCCESS
    finally:
        mp.undo()
    return _losses(root)


def test_the_tiny_model_learns_in_twelve_steps(clean_losses: dict[int, float]) -> None:
    assert sorted(clean_losses) == list(range(1, 13))
    assert clean_losses[1] > 6.0  # about ln(vocab) at random init
    assert clean_losses[12] < clean_losses[1] - 0.3


@pytest.mark.usefixtures("world_of_one")
def test_sigterm_saves_exits_retryable_and_the_resumed_run_matches_a_clean_one(
    tmp_path: Path, clean_losses: dict[int, float]
) -> None:
    assert _run(tmp_path, max_steps=12, faults={"sigterm_at_step": 7}) == ExitCode.RETRYABLE
    progress = json.loads((tmp_path / "ckpt" / "progress.json").read_text())
    assert progress["state"] == "preempted"
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == "step-000007"

    assert _run(tmp_path, max_steps=12) == ExitCode.SUCCESS
    losses = _losses(tmp_path)

    assert sorted(losses) == list(range(1, 13))
    for step, loss in clean_losses.items():
        assert losses[step] == pytest.approx(loss, abs=LOSS_TOLERANCE), step


@pytest.mark.usefixtures("world_of_one")
def test_injected_nan_gradients_skip_that_step_only(tmp_path: Path) -> None:
    assert _run(tmp_path, max_steps=8, faults={"nan_grad_at_steps": [3, 6]}) == 0
    records = [r for r in _log(tmp_path) if "step" in r]

    assert [r["step"] for r in records if r["skipped"]] == [3, 6]
    assert all(r["grad_norm"] is None for r in records if r["skipped"])
    assert records[-1]["loss"] < records[0]["loss"]


@pytest.mark.usefixtures("world_of_one")
def test_three_injected_spikes_roll_back_to_the_last_checkpoint_with_half_the_lr(
    tmp_path: Path,
) -> None:
    code = _run(
        tmp_path,
        max_steps=14,
        interval_steps=5,
        faults={"spike_at_steps": [11, 12, 13]},
        guards={"spike_window": 10, "spike_patience": 3, "rollback_lr_factor": 0.5},
    )
    records = _log(tmp_path)
    rollbacks = [r for r in records if r.get("event") == "rollback"]
    after = [r for r in records if "step" in r][-4:]

    assert code == ExitCode.SUCCESS
    assert rollbacks == [{"event": "rollback", "at_step": 13, "to_step": 10, "lr_scale": 0.5}]
    assert [r["step"] for r in after] == [11, 12, 13, 14]
    assert all(r["lr"] == pytest.approx(3e-3 * 0.5) for r in after)
    assert not any(r["spike"] for r in after)


@pytest.mark.usefixtures("world_of_one")
def test_two_injected_ooms_halve_the_micro_batch_then_checkpoint_and_keep_the_losses(
    tmp_path: Path, clean_losses: dict[int, float]
) -> None:
    assert _run(tmp_path, max_steps=6, faults={"oom_at_steps": [3, 3]}) == ExitCode.SUCCESS
    records = [r for r in _log(tmp_path) if "step" in r]
    rungs = [
        (r["micro_batch_size"], r["gradient_accumulation_steps"], r["gradient_checkpointing"])
        for r in records
    ]

    assert rungs == [(2, 1, False)] * 2 + [(1, 2, True)] * 4
    # Same sequences per step, so the same loss as without the OOM.
    for record in records:
        assert record["loss"] == pytest.approx(clean_losses[record["step"]], abs=1e-4)


@pytest.mark.usefixtures("world_of_one")
def test_repeated_ooms_walk_the_whole_ladder_then_exit_needs_replan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(tiny_train_config(tmp_path, max_steps=6, faults={"oom_at_steps": [2, 2, 2]}))
    )

    assert main(["train", "--config", str(config)]) == ExitCode.NEEDS_REPLAN
    records = [r for r in _log(tmp_path) if "step" in r]
    err = capsys.readouterr().err.strip().splitlines()[-1]

    assert [r["step"] for r in records] == [1]
    assert "out of memory at step 2 with micro-batch 1 and gradient checkpointing on" in err


def _write(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"data": {"format": "tsv"}}, 64, "data.format: 'tsv' is not one of"),
        ({"method": "full", "lora": {"rank": 8}}, 64, "lora options are set but method is 'full'"),
        ({"data": {"path": "/nonexistent/data.jsonl"}}, 65, "does not exist"),
        ({"training": {"learning_rate": -1}}, 64, "training.learning_rate"),
        ({"model": {}}, 64, "missing required field 'model.path'"),
    ],
    ids=["unknown-format", "lora-on-full", "missing-dataset", "negative-lr", "missing-model"],
)
def test_bad_configs_fail_before_any_work_with_one_line_and_a_permanent_code(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    code: int,
    message: str,
) -> None:
    config = tiny_train_config(tmp_path)
    for section, values in change.items():
        config[section] = (
            {**config.get(section, {}), **values} if isinstance(values, dict) else values
        )
    if change.get("model") == {}:
        config["model"] = {}
    capsys.readouterr()  # building the tiny model prints progress bars

    assert main(["train", "--config", _write(tmp_path, config)]) == code
    err = capsys.readouterr().err.strip().splitlines()

    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "ckpt").exists()


def test_the_lr_warms_up_linearly_then_follows_a_cosine_to_a_tenth() -> None:
    def lr(step: int) -> float:
        return lr_at_step(step, base_lr=1.0, warmup_steps=10, total_steps=110, schedule="cosine")

    assert [lr(0), lr(4), lr(9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr(60) == pytest.approx(0.55)
    assert lr(110) == pytest.approx(0.1)
    assert lr_at_step(60, base_lr=1.0, warmup_steps=10, total_steps=110, schedule="linear") == (
        pytest.approx(0.5)
    )


@pytest.mark.usefixtures("world_of_one")
def test_async_checkpoints_are_published_and_resume_like_synchronous_ones(
    tmp_path: Path, clean_losses: dict[int, float]
) -> None:
    faults = {"sigterm_at_step": 8}
    checkpoint = {"async_save": True, "keep_last": 3}
    code = _run(tmp_path, max_steps=12, interval_steps=3, faults=faults, checkpoint=checkpoint)
    published = sorted(p.name for p in (tmp_path / "ckpt").glob("step-*"))

    assert code == ExitCode.RETRYABLE
    assert published == ["step-000003", "step-000006", "step-000008"]
    assert _run(tmp_path, max_steps=12, interval_steps=3, checkpoint=checkpoint) == 0
    losses = _losses(tmp_path)
    for step, loss in clean_losses.items():
        assert losses[step] == pytest.approx(loss, abs=LOSS_TOLERANCE), step


def test_a_failing_rank_leaves_its_exit_code_for_the_pod_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code_file = tmp_path / "exit-code"
    monkeypatch.setenv("TRAINWRIGHT_EXIT_CODE_FILE", str(code_file))
    config = tiny_train_config(tmp_path)
    config["lora"] = {"rank": 8}  # LoRA options on a full fine-tune: a config error
    capsys.readouterr()

    assert main(["train", "--config", _write(tmp_path, config)]) == ExitCode.CONFIG_ERROR
    assert code_file.read_text() == "64\n"
    # A second failing rank in the same pod keeps the first code.
    code_file.write_text("75\n")
    assert main(["train", "--config", _write(tmp_path, config)]) == ExitCode.CONFIG_ERROR
    assert code_file.read_text() == "75\n"


@pytest.mark.usefixtures("world_of_one")
def test_spikes_that_persist_after_every_rollback_end_with_the_diverged_exit_code(
    tmp_path: Path,
) -> None:
    with pytest.raises(DivergedError) as raised:
        _run(
            tmp_path,
            max_steps=5,
            interval_steps=100,
            faults={"spike_at_steps": [3, 4, 5]},
            guards={"spike_window": 2, "spike_patience": 3, "max_rollbacks": 0},
        )

    assert raised.value.exit_code == ExitCode.DIVERGED == 79
    assert "at step 5 after 0 rollbacks (guards.max_rollbacks)" in raised.value.message
    assert not any(r.get("event") == "rollback" for r in _log(tmp_path))
