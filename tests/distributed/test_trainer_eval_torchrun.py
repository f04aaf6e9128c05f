"""Evaluation under torchrun with two CPU ranks: the held-out loss is reduced over both
ranks, and sample generation on a sharded (FSDP2) model runs in lockstep without hanging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainer_fixtures import tiny_model_dir, tiny_train_config
from trainwright_trainer.data.dataset import holdout_split, load_prepared

pytestmark = pytest.mark.distributed

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def _launch(config: dict[str, Any], workdir: Path) -> tuple[int, str]:
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0"]
    command += ["-m", "trainwright_trainer", "train", "--config", str(path)]
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    return done.returncode, done.stdout + done.stderr


def _direct_eval_loss(root: Path, fraction: float, seed: int) -> float:
    """transformers' loss of the base model plus the saved adapter on the held-out split."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    (prepared,) = [p for p in (root / "data-cache").iterdir() if (p / "stats.json").is_file()]
    dataset = load_prepared(prepared)
    arrays = dataset.take(holdout_split(len(dataset), fraction, seed)[1])
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir()), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(root / "out")).eval()
    with torch.no_grad():
        out = model(
            **{k: torch.from_numpy(v.astype(np.int64)) for k, v in arrays.items()},
        )
    return float(out.loss)


def test_lora_fsdp_on_two_ranks_reports_the_eval_loss_of_the_whole_split(tmp_path: Path) -> None:
    config = tiny_train_config(
        tmp_path,
        method="lora",
        strategy="fsdp",
        max_steps=8,
        interval_steps=4,
        learning_rate=1e-2,
        data={"eval_fraction": 0.2},
        evaluation={"samples": 2, "sample_max_new_tokens": 6},
    )
    code, output = _launch(config, tmp_path)
    lines = (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()
    evals = [r for r in map(json.loads, lines) if r.get("event") == "eval"]
    samples = (tmp_path / "ckpt" / "samples.jsonl").read_text().splitlines()

    assert code == 0, output[-3000:]
    assert [e["at_step"] for e in evals] == [0, 4, 8]
    assert evals[-1]["eval_loss"] == pytest.approx(_direct_eval_loss(tmp_path, 0.2, 7), rel=1e-4)
    assert [json.loads(s)["label"] for s in samples] == ["base"] * 2 + ["eval"] * 2 + ["final"] * 2
    assert json.loads((tmp_path / "ckpt" / "best.json").read_text())["step"] in (4, 8)
