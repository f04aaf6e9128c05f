"""The checkpoint protocol: staging, manifest with checksums, atomic pointer, retention."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

from trainwright_trainer.checkpoint import (
    MANIFEST_NAME,
    POINTER_NAME,
    CheckpointError,
    CheckpointManager,
    find_resume_checkpoint,
    verify_checkpoint,
)
from trainwright_trainer.config import parse_config
from trainwright_trainer.distributed import DistEnv, TorchTrainEngine


def _writer(payload: bytes):
    def write(staging: Path) -> None:
        (staging / "dcp").mkdir()
        (staging / "dcp" / "shard-0.distcp").write_bytes(payload)

    return write


def _manager(root: Path, keep_last: int = 3) -> CheckpointManager:
    return CheckpointManager(root, rank=0, keep_last=keep_last)


def test_a_saved_checkpoint_is_published_with_a_manifest_and_the_pointer(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    manager.save(12, _writer(b"weights"), extra_state={"step": 12})

    final = tmp_path / "step-000012"
    manifest = json.loads((final / MANIFEST_NAME).read_text())
    assert (tmp_path / POINTER_NAME).read_text().strip() == "step-000012"
    assert manifest["step"] == 12
    assert manifest["files"]["dcp/shard-0.distcp"]["bytes"] == 7
    assert set(manifest["files"]) == {"dcp/shard-0.distcp", "extra/rank-00000.pt"}
    assert not list(tmp_path.glob("*.tmp-*"))
    assert manager.load_extra_state(final) == {"step": 12}


def test_resume_falls_back_past_a_checkpoint_whose_shard_was_corrupted(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    manager.save(5, _writer(b"five"), extra_state={})
    manager.save(10, _writer(b"tens"), extra_state={})
    # Same size, different bytes: only the checksum can tell.
    (tmp_path / "step-000010" / "dcp" / "shard-0.distcp").write_bytes(b"TENS")

    with pytest.raises(CheckpointError, match="sha256"):
        verify_checkpoint(tmp_path / "step-000010")
    assert find_resume_checkpoint(tmp_path) == (5, tmp_path / "step-000005")


def test_a_save_killed_before_its_manifest_is_never_resumed_and_is_cleaned(
    tmp_path: Path,
) -> None:
    manager = _manager(tmp_path)
    manager.save(5, _writer(b"five"), extra_state={})

    class Killed(Exception):
        pass

    def die(staging: Path) -> None:
        raise Killed(staging)

    with pytest.raises(Killed):
        manager.save(10, _writer(b"half"), extra_state={}, before_publish=die)
    staging = list(tmp_path.glob("step-000010.tmp-*"))

    assert len(staging) == 1 and not (staging[0] / MANIFEST_NAME).exists()
    assert find_resume_checkpoint(tmp_path) == (5, tmp_path / "step-000005")
    assert _manager(tmp_path).clean_staging() == staging
    assert not staging[0].exists()


def test_a_final_directory_without_a_manifest_is_skipped(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    manager.save(3, _writer(b"three"), extra_state={})
    (tmp_path / "step-000009").mkdir()
    (tmp_path / "step-000009" / "junk").write_bytes(b"x")
    (tmp_path / POINTER_NAME).write_text("step-000009\n")

    assert find_resume_checkpoint(tmp_path) == (3, tmp_path / "step-000003")


def test_a_file_the_manifest_does_not_list_fails_verification(tmp_path: Path) -> None:
    _manager(tmp_path).save(4, _writer(b"four"), extra_state={})
    (tmp_path / "step-000004" / "dcp" / "stray.distcp").write_bytes(b"?")

    with pytest.raises(CheckpointError, match="not in the manifest"):
        verify_checkpoint(tmp_path / "step-000004")


def test_retention_keeps_only_the_newest_k_checkpoints(tmp_path: Path) -> None:
    manager = _manager(tmp_path, keep_last=2)
    for step in (5, 10, 15, 20):
        manager.save(step, _writer(str(step).encode()), extra_state={})

    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000015", "step-000020"]
    assert find_resume_checkpoint(tmp_path) == (20, tmp_path / "step-000020")


def test_an_async_save_is_published_only_when_it_is_waited_for(tmp_path: Path) -> None:
    published: list[int] = []
    manager = CheckpointManager(
        tmp_path, rank=0, keep_last=3, on_published=lambda step, _s: published.append(step)
    )
    future: Future[None] = Future()

    def write(staging: Path) -> Future[None]:
        _writer(b"async")(staging)
        return future

    manager.save(7, write, extra_state={})
    assert find_resume_checkpoint(tmp_path) is None
    future.set_result(None)
    seconds = manager.wait()

    assert published == [7]
    assert seconds is not None and seconds >= 0
    assert find_resume_checkpoint(tmp_path) == (7, tmp_path / "step-000007")


def _engine(tmp_path: Path) -> TorchTrainEngine:
    data = tmp_path / "d.txt"
    data.write_text("x")
    cfg = parse_config(
        {
            "model": {"path": "unused"},
            "method": "full",
            "data": {"path": str(data)},
            "training": {"learning_rate": 0.1},
        }
    )
    env = DistEnv(0, 0, 1, torch.device("cpu"), "gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    return TorchTrainEngine(cfg, env, model, torch.float32)


def test_dcp_round_trip_restores_model_and_optimizer_state_exactly(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        engine.model(x).square().mean().backward()
        engine.optimizer_step()
        engine.zero_grad()
    manager = _manager(tmp_path / "ckpt")
    manager.save(3, lambda s: engine.write_checkpoint(s, async_save=False), extra_state={})
    saved = {k: v.clone() for k, v in engine.model.state_dict().items()}
    saved_avg = engine.optimizer.state[engine.optimizer.param_groups[0]["params"][0]]["exp_avg"]
    saved_avg = saved_avg.clone()

    fresh = _engine(tmp_path)
    with torch.no_grad():
        for p in fresh.model.parameters():
            p.add_(1.0)
    fresh.model(x).square().mean().backward()
    fresh.optimizer_step()
    fresh.load_checkpoint(tmp_path / "ckpt" / "step-000003")

    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    restored = fresh.optimizer.state[fresh.optimizer.param_groups[0]["params"][0]]["exp_avg"]
    assert torch.equal(restored, saved_avg)
