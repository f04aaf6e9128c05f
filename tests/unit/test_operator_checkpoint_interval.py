"""checkpoint.intervalSteps: auto on kmock's API server: the first attempt's interval, then
Young/Daly from the trainer's measured save and step time for the attempt after a failure."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_operator_trainingjob import NS, TJ, World, _condition, _failed_pod, _trainingjob, world

from trainwright.api.v1alpha1 import InvalidResourceError, TrainingJob
from trainwright.operator.progress import progress_status
from trainwright_trainer.metrics import TrainerMetrics

__all__ = ["world"]  # the fixture

AUTO = {"checkpoint": {"pvc": "ckpt", "intervalSteps": "auto"}}


async def _config(world: World) -> dict[str, Any]:
    config_map = await world.need("ConfigMap", "ft-trainer")
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return loaded


@pytest.mark.asyncio
async def test_the_first_attempt_saves_at_the_default_and_says_it_is_measuring(
    world: World,
) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", **AUTO)
    status = await world.reconcile("ft")

    chosen = status["plan"]["checkpointInterval"]
    assert chosen["steps"] == 500
    assert "until a save and a step are measured" in chosen["message"]
    assert (await _config(world))["checkpoint"]["interval_steps"] == 500


@pytest.mark.asyncio
async def test_the_attempt_after_a_failure_saves_at_young_dalys_interval(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", **AUTO)
    await world.reconcile("ft")
    body = await world.call(world.kube.get_custom, "trainingjobs", NS, "ft")
    # The trainer measured 30 s per save and 1.5 s per step; the run began 10 h ago.
    progress = {"step": 900, "checkpointSaveSeconds": 30.0, "stepSeconds": 1.5}
    started = {"startTime": "2026-03-01T02:00:00Z", "progress": progress}
    world.server.objects[TJ, NS, "ft"] = {**body, "status": {**body["status"], **started}}
    failed = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}
    await world.set_job_status("ft-a0", failed)
    world.server.objects["v1/pods", NS, "p0"] = _failed_pod("ft-a0", 75)

    status = await world.reconcile("ft", full=False)

    # 16 GPUs, 1 failure in 10 h (160 GPU-h): MTBF = (50,677.0 + 160) h / (2 x 16) = 1,588.66 h
    # = 5,719,163 s; sqrt(2 x 30 x 5,719,163) = 18,524.3 s; / 1.5 s per step = 12,349.5 -> 12,350
    chosen = status["plan"]["checkpointInterval"]
    assert chosen["steps"] == 12_350
    assert chosen["mtbfSeconds"] == pytest.approx(5_719_163, abs=1)
    assert (chosen["saveSeconds"], chosen["stepSeconds"]) == (30.0, 1.5)
    assert chosen["message"].startswith("Checkpoint every 12350 step(s): sqrt(2 x 30 s save")
    assert (status["attempt"], _condition(status, "Running")["reason"]) == (1, "Restarting")
    assert (await _config(world))["checkpoint"]["interval_steps"] == 12_350
    await world.need("Job", "ft-a1")


@pytest.mark.asyncio
async def test_a_fixed_interval_is_kept_across_attempts(world: World) -> None:
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", checkpoint={"intervalSteps": 50})
    status = await world.reconcile("ft")
    assert "checkpointInterval" not in status["plan"]
    assert (await _config(world))["checkpoint"]["interval_steps"] == 50


def test_the_trainers_progress_carries_the_measured_save_and_step_time(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    metrics = TrainerMetrics(enabled=True, port=0, progress_path=path, total_steps=10)
    metrics.observe_checkpoint(2.5, step=2)
    metrics.record_step(
        step=3,
        epoch=0,
        loss=1.0,
        learning_rate=1e-3,
        grad_norm=1.0,
        tokens_per_second=100.0,
        mfu_ratio=0.0,
        eta_seconds=7.0,
        step_seconds=0.25,
    )
    metrics.close()
    document = json.loads(path.read_text(encoding="utf-8"))
    assert (document["checkpoint_save_seconds"], document["step_seconds"]) == (2.5, 0.25)
    shown = progress_status(document, now=datetime.datetime.now(datetime.UTC))
    assert shown is not None
    assert (shown.checkpoint_save_seconds, shown.step_seconds) == (2.5, 0.25)


def test_the_crd_takes_a_number_or_auto_and_the_operator_refuses_anything_else() -> None:
    crd = yaml.safe_load(
        (
            Path(__file__).resolve().parents[2] / "crds" / "trainwright.io_trainingjobs.yaml"
        ).read_text()
    )
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    field = spec["properties"]["checkpoint"]["properties"]["intervalSteps"]
    assert field["x-kubernetes-int-or-string"] is True and field["default"] == 500
    with pytest.raises(InvalidResourceError, match="intervalSteps"):
        TrainingJob.from_body(_trainingjob("ft", checkpoint={"intervalSteps": "often"}))
    with pytest.raises(InvalidResourceError, match="intervalSteps"):
        TrainingJob.from_body(_trainingjob("ft", checkpoint={"intervalSteps": 0}))
