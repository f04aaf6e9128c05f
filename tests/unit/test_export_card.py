"""The model card of an export names the run's final train loss and its eval loss/perplexity,
also when the trainer's output was saved outside its checkpoint directory (spec.output)."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainer_fixtures import tiny_model_dir, tiny_train_config
from trainwright.api.v1alpha1 import ModelExport, TrainingJob
from trainwright.resources.export import (
    ExportInputs,
    export_config,
    export_job,
    training_checkpoint_uri,
    training_output_uri,
)
from trainwright_trainer.__main__ import main
from trainwright_trainer.exitcodes import ExitCode
from trainwright_trainer.export.card import final_losses, model_card


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step LoRA run with held-out data; its adapter saved in out/, beside ckpt/."""
    import torch

    from trainwright_trainer.config import parse_config
    from trainwright_trainer.train import run_training

    root = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": _free_port(),
    }.items():
        mp.setenv(name, value)
    torch.set_num_threads(1)
    config = tiny_train_config(
        root, method="lora", max_steps=4, interval_steps=2, data={"eval_fraction": 0.2}
    )
    try:
        assert run_training(parse_config(config)) == ExitCode.SUCCESS
    finally:
        mp.undo()
    return root


def _export_card(root: Path, name: str, **extra: Any) -> str:
    config = root / f"{name}.yaml"
    out = root / name
    config.write_text(
        yaml.safe_dump(
            {
                "source": str(root / "out"),
                "base": str(tiny_model_dir()),
                "formats": ["safetensors"],
                "output": str(out),
                "verify": False,
                **extra,
            }
        )
    )
    assert main(["export", "--config", str(config)]) == ExitCode.SUCCESS
    return (out / "safetensors" / "README.md").read_text()


def _row(card: str, name: str) -> str:
    [line] = [x for x in card.splitlines() if x.startswith(f"| {name} |")]
    return line.split("|")[2].strip()


def test_an_adapter_saved_elsewhere_gets_its_losses_from_the_named_train_log(
    lora_run: Path,
) -> None:
    records = [
        json.loads(x) for x in (lora_run / "ckpt" / "train_log.jsonl").read_text().splitlines()
    ]
    last_step = [r for r in records if "step" in r and r.get("loss") is not None][-1]
    last_eval = [r for r in records if r.get("event") == "eval"][-1]

    # Without the log's location the output alone does not lead to it: the known gap.
    blind = _export_card(lora_run, "blind")
    assert _row(blind, "Final train loss") == "not recorded"
    assert _row(blind, "Final eval loss") == "not measured"

    card = _export_card(lora_run, "named", trainLog=str(lora_run / "ckpt" / "train_log.jsonl"))
    assert float(_row(card, "Final train loss")) == pytest.approx(last_step["loss"], rel=1e-4)
    assert _row(card, "Step of that loss") == "4"
    assert float(_row(card, "Final eval loss")) == pytest.approx(last_eval["eval_loss"], rel=1e-4)
    assert float(_row(card, "Eval perplexity")) == pytest.approx(
        math.exp(last_eval["eval_loss"]), rel=1e-4
    )
    assert _row(card, "Step of that evaluation") == "4"
    manifest = json.loads((lora_run / "named" / "manifest.json").read_text())
    assert manifest["lineage"]["eval_loss"] == pytest.approx(last_eval["eval_loss"])


def test_the_best_evaluation_is_named_when_it_is_not_the_last(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    rows = [
        {"step": 1, "loss": 2.5},
        {"event": "eval", "at_step": 1, "eval_loss": 2.0, "eval_perplexity": 7.389, "best_step": 1},
        {"step": 2, "loss": None, "skipped": True},
        {"event": "eval", "at_step": 2, "eval_loss": 2.2, "eval_perplexity": 9.025, "best_step": 1},
    ]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    losses = final_losses(log)
    assert (losses["train_loss"], losses["train_step"]) == (2.5, 1)  # a skipped step has none
    assert (losses["eval_loss"], losses["eval_step"], losses["eval_perplexity"]) == (2.2, 2, 9.025)
    assert (losses["best_eval_step"], losses["best_eval_loss"]) == (1, 2.0)
    assert "| Best eval loss | 2 (step 1) |" in model_card(losses)


def test_the_export_pod_reads_the_train_log_from_the_runs_checkpoint_claim() -> None:
    job = TrainingJob.from_body(
        {
            "metadata": {"name": "ft", "namespace": "ml"},
            "spec": {
                "model": {"name": "llama-3.1-8b"},
                "method": "lora",
                "dataset": {"uri": "pvc://datasets/a.jsonl"},
                "checkpoint": {"pvc": "checkpoints"},
                "output": {"uri": "pvc://adapters/ft"},
            },
        }
    )
    export = ModelExport.from_body(
        {
            "metadata": {"name": "ft-x", "namespace": "ml"},
            "spec": {
                "source": {"trainingJob": "ft"},
                "formats": ["safetensors"],
                "output": {"uri": "pvc://exports/ft"},
            },
        }
    )
    source = training_output_uri(job)
    assert source == "pvc://adapters/ft"
    inputs = ExportInputs(
        source_uri=source,
        base_uri=None,
        version="0.1.0",
        model_name="ft",
        checkpoint_uri=training_checkpoint_uri(job),
    )
    assert export_config(export, inputs).train_log == "/mnt/pvc/checkpoints/ft/train_log.jsonl"
    pod = export_job(export, inputs)["spec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert {"checkpoints", "adapters", "exports"} <= claims
    mounts = {m["mountPath"]: m["readOnly"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/mnt/pvc/checkpoints"] is True
