"""The trainer under torchrun with two CPU ranks (gloo): strategies, crashes, SIGTERM, metrics.

Each test launches ``torchrun --nproc-per-node 2 -m trainwright_trainer train`` as a
subprocess on the tiny Llama, as a TrainingJob pod would. DeepSpeed runs on CPU
with ``DS_ACCELERATOR=cpu`` and gloo collectives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from trainer_fixtures import tiny_train_config

pytestmark = pytest.mark.distributed

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
LOSS_TOLERANCE = 1e-5  # CPU fp32, two gloo ranks: resumed losses match to this


def _launch(config: dict[str, Any], workdir: Path, *, timeout: int = 300) -> tuple[int, str]:
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "0",
            "-m",
            "trainwright_trainer",
            "train",
            "--config",
            str(path),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _records(root: Path) -> list[dict[str, Any]]:
    lines = (root / "ckpt" / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _losses(root: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(root) if "step" in r}


def _latest(root: Path) -> str:
    return (root / "ckpt" / "latest").read_text().strip()


@pytest.fixture(scope="module")
def clean_full_ddp(tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    root = tmp_path_factory.mktemp("clean-full-ddp")
    code, output = _launch(tiny_train_config(root), root)
    assert code == 0, output[-3000:]
    return _losses(root)


def test_full_fine_tune_with_ddp_learns(clean_full_ddp: dict[int, float]) -> None:
    assert sorted(clean_full_ddp) == list(range(1, 21))
    assert clean_full_ddp[20] < clean_full_ddp[1] - 0.7


# LoRA on a random-init model can only sharpen the output distribution through
# the head, so the adapters include lm_head here.
LORA_TARGETS = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "lm_head",
]


def _mean(losses: dict[int, float], steps: range) -> float:
    return sum(losses[s] for s in steps) / len(steps)


# DeepSpeed gets its own guard paths checked on the way: the non-finite check
# on the loss before backward (NaN on rank 1 only), and the OOM ladder changing
# DeepSpeed's micro-batch and accumulation mid-run.
ZERO2_NAN = {"nan_grad_at_steps": [4], "fault_rank": 1}
ZERO3_OOM = {"oom_at_steps": [6]}


@pytest.mark.parametrize(
    ("method", "strategy", "faults"),
    [
        ("lora", "fsdp", {}),
        ("dora", "ddp", {}),
        ("full", "zero2", ZERO2_NAN),
        ("lora", "zero3", ZERO3_OOM),
    ],
)
def test_each_method_and_strategy_lowers_the_loss_on_two_ranks(
    tmp_path: Path, method: str, strategy: str, faults: dict[str, Any]
) -> None:
    extra: dict[str, Any] = {"faults": faults}
    if method != "full":
        extra["lora"] = {"target_modules": LORA_TARGETS}
    config = tiny_train_config(
        tmp_path,
        method=method,
        strategy=strategy,
        learning_rate=3e-3 if method == "full" else 1e-2,
        **extra,
    )
    code, output = _launch(config, tmp_path)
    losses = _losses(tmp_path)

    assert code == 0, output[-3000:]
    assert sorted(losses) == list(range(1, 21))
    records = [r for r in _records(tmp_path) if "step" in r]
    assert _mean(losses, range(16, 21)) < _mean(losses, range(1, 4)) - 0.3, losses
    assert [r["step"] for r in records if r["skipped"]] == ([4] if faults is ZERO2_NAN else [])
    micro_batches = [r["micro_batch_size"] for r in records]
    assert micro_batches == ([2] * 5 + [1] * 15 if faults is ZERO3_OOM else [2] * 20)
    assert _latest(tmp_path) == "step-000020"
    weights = "adapter_model.safetensors" if method != "full" else "model.safetensors"
    assert (tmp_path / "out" / weights).is_file()


def test_kill_during_a_save_and_kill_9_mid_run_lose_nothing_past_the_last_checkpoint(
    tmp_path: Path, clean_full_ddp: dict[int, float]
) -> None:
    # 1. Rank 1 is SIGKILLed inside the save of step 10, after its shards are written.
    code, output = _launch(
        tiny_train_config(tmp_path, faults={"crash_during_save_at_step": 10, "fault_rank": 1}),
        tmp_path,
    )
    staging = list((tmp_path / "ckpt").glob("step-000010.tmp-*"))
    assert code != 0, output[-3000:]
    assert _latest(tmp_path) == "step-000005"
    assert len(staging) == 1 and not (staging[0] / "manifest.json").exists()

    # 2. Restart: resumes from step 5 (never the partial 10), then rank 1 is SIGKILLed at 13.
    code, output = _launch(
        tiny_train_config(tmp_path, faults={"crash_at_step": 13, "fault_rank": 1}), tmp_path
    )
    assert code != 0, output[-3000:]
    assert "resumed from" in output and "step-000005 at step 5" in output
    assert not staging[0].exists()
    assert _latest(tmp_path) == "step-000010"

    # 3. Restart without faults: resumes from step 10 and finishes.
    code, output = _launch(tiny_train_config(tmp_path), tmp_path)
    assert code == 0, output[-3000:]
    assert "step-000010 at step 10" in output
    steps_logged = [r["step"] for r in _records(tmp_path) if "step" in r]
    losses = _losses(tmp_path)

    assert steps_logged[-10:] == list(range(11, 21))
    assert sorted(losses) == list(range(1, 21))
    for step, loss in clean_full_ddp.items():
        assert losses[step] == pytest.approx(loss, abs=LOSS_TOLERANCE), step


def _scrape(port_file: Path, deadline: float) -> tuple[str, dict[str, Any]]:
    while time.monotonic() < deadline:
        if port_file.exists():
            port = int(port_file.read_text())
            try:
                base = f"http://127.0.0.1:{port}"
                text = urllib.request.urlopen(f"{base}/metrics", timeout=2).read().decode()
                progress = json.loads(urllib.request.urlopen(f"{base}/progress", timeout=2).read())
            except OSError:
                time.sleep(0.2)
                continue
            if progress.get("step", 0) >= 3:
                return text, progress
        time.sleep(0.2)
    raise AssertionError("the metrics endpoint never served a step")


def test_sigterm_and_nan_on_one_rank_are_agreed_while_metrics_are_served(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "port").write_text(str(port))
    config = tiny_train_config(
        tmp_path,
        # Only rank 1 gets SIGTERM and NaN gradients: rank 0 must follow by agreement.
        faults={
            "sigterm_at_step": 15,
            "nan_grad_at_steps": [4],
            "fault_rank": 1,
            "step_sleep_seconds": 0.4,
        },
        metrics={"port": port, "log_interval_steps": 1},
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            TORCHRUN,
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "0",
            "-m",
            "trainwright_trainer",
            "train",
            "--config",
            "config.json",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        text, progress = _scrape(tmp_path / "port", time.monotonic() + 240)
        output, _ = process.communicate(timeout=240)
    finally:
        process.kill()

    for name in (
        "trainwright_train_loss",
        "trainwright_learning_rate",
        "trainwright_grad_norm",
        "trainwright_tokens_per_second",
        "trainwright_mfu",
        "trainwright_step",
        "trainwright_epoch",
        "trainwright_skipped_steps_total",
        "trainwright_loss_spikes_total",
        "trainwright_checkpoint_save_seconds_bucket",
        "trainwright_oom_events_total",
        "trainwright_rollbacks_total",
    ):
        assert name in text, name
    assert progress["total_steps"] == 20 and progress["eta_seconds"] > 0
    # torchrun itself exits 1 when workers fail; each worker's own code is 75.
    assert process.returncode != 0
    assert output.count("exitcode  : 75") >= 1 or "exitcode: 75" in output, output[-3000:]
    assert _latest(tmp_path) == "step-000015"
    final = json.loads((tmp_path / "ckpt" / "progress.json").read_text())
    assert final["state"] == "preempted" and final["step"] == 15
    skipped = [r["step"] for r in _records(tmp_path) if r.get("skipped")]
    assert skipped == [4]


def test_a_data_error_on_the_preparing_rank_ends_every_rank_with_the_data_error_code(
    tmp_path: Path,
) -> None:
    # bad_alpaca.jsonl has rows with missing fields; tolerating none of them makes the
    # preparing rank raise a DataError. The other rank must learn of it and exit 65 too,
    # well before the 120 s collective timeout, instead of waiting for a dataset path.
    config = tiny_train_config(tmp_path, max_steps=2)
    config["data"]["path"] = str(Path(config["data"]["path"]).with_name("bad_alpaca.jsonl"))
    config["data"]["format"] = "alpaca"
    config["data"]["max_bad_row_fraction"] = 0.0
    started = time.monotonic()
    code, output = _launch(config, tmp_path, timeout=200)
    elapsed_seconds = time.monotonic() - started
    assert code != 0
    # Both ranks report the data error themselves (torchrun may SIGTERM the slower one
    # after the first exits), and the root cause torchrun reports is the data-error code.
    for rank in (0, 1):
        assert f"error (rank {rank}): 24 of 24 rows (100.0%)" in output, output[-3000:]
    assert "exitcode  : 65" in output, output[-3000:]
    assert elapsed_seconds < 100, f"ranks waited {elapsed_seconds:.0f} s for each other"


def test_async_saves_on_two_gloo_ranks_complete_and_a_rerun_resumes_from_them(
    tmp_path: Path,
) -> None:
    """What a TrainingJob on the local cluster's real node runs: the operator leaves
    ``checkpoint.async_save`` on. On CPU, training and ``dcp.async_save`` once shared the
    one gloo group from two threads and both ranks hung at the first save."""
    config = tiny_train_config(tmp_path, max_steps=30, interval_steps=10)
    config["checkpoint"]["async_save"] = True
    code, output = _launch(config, tmp_path, timeout=240)
    assert code == 0, output[-3000:]
    checkpoints = sorted(p.name for p in (tmp_path / "ckpt").glob("step-*"))
    assert checkpoints[-2:] == ["step-000020", "step-000030"], checkpoints
    assert not list((tmp_path / "ckpt").glob("*.tmp-*")), "a staging directory was left behind"

    config["training"]["max_steps"] = 40
    code, output = _launch(config, tmp_path, timeout=240)
    assert code == 0, output[-3000:]
    assert "at step 30" in output, output[-3000:]
    assert max(_losses(tmp_path)) == 40
