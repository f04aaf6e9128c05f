"""Metrics: MFU arithmetic, peak-FLOPs lookup, the Prometheus endpoint and the progress file."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from trainwright_trainer.metrics import (
    TrainerMetrics,
    mfu,
    peak_flops_per_second,
    training_flops_per_token,
)


def test_peak_flops_come_from_the_datasheet_by_device_name() -> None:
    assert peak_flops_per_second("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_per_second("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_per_second("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_per_second("NVIDIA L4") == 121e12
    assert peak_flops_per_second("NVIDIA L40S") == 362e12
    assert peak_flops_per_second(None) is None
    assert peak_flops_per_second("Some CPU") is None


def test_full_fine_tune_costs_6n_plus_attention_per_token() -> None:
    # Llama-3.2-1B shape: 1.236e9 params, 16 layers, hidden 2048, seq 2048.
    flops = training_flops_per_token(
        params=1_235_814_400,
        trainable_params=1_235_814_400,
        num_layers=16,
        hidden_size=2048,
        seq_len=2048,
    )
    assert flops == 6 * 1_235_814_400 + 6 * 16 * 2048 * 2048


def test_lora_costs_about_4n_per_token() -> None:
    flops = training_flops_per_token(
        params=1_000_000_000, trainable_params=0, num_layers=1, hidden_size=1, seq_len=1
    )
    assert flops == 4e9 + 6


def test_mfu_is_achieved_over_peak_and_zero_without_a_peak() -> None:
    assert mfu(10_000.0, 7.6e9, 989e12) == pytest.approx(0.07685, rel=1e-3)
    assert mfu(10_000.0, 7.6e9, None) == 0.0


def test_the_endpoint_serves_the_named_metrics_and_the_progress(tmp_path: Path) -> None:
    progress = tmp_path / "progress.json"
    metrics = TrainerMetrics(enabled=True, port=0, progress_path=progress, total_steps=100)
    metrics._start_server("127.0.0.1", 0)
    try:
        metrics.record_step(
            step=40,
            epoch=1,
            loss=2.5,
            learning_rate=1e-4,
            grad_norm=0.8,
            tokens_per_second=1234.0,
            mfu_ratio=0.42,
            eta_seconds=60.0,
        )
        metrics.count(metrics.skipped_steps)
        metrics.observe_checkpoint(1.5, step=40)
        base = f"http://127.0.0.1:{metrics.port}"
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        served = json.loads(urllib.request.urlopen(f"{base}/progress", timeout=5).read())
    finally:
        metrics.close()

    assert "trainwright_train_loss 2.5" in text
    assert "trainwright_step 40.0" in text
    assert "trainwright_tokens_per_second 1234.0" in text
    assert "trainwright_mfu 0.42" in text
    assert "trainwright_skipped_steps_total 1.0" in text
    assert "trainwright_checkpoint_save_seconds_count 1.0" in text
    for name in (
        "trainwright_learning_rate",
        "trainwright_grad_norm",
        "trainwright_epoch",
        "trainwright_loss_spikes_total",
        "trainwright_rollbacks_total",
        "trainwright_oom_events_total",
    ):
        assert name in text
    assert served["step"] == 40 and served["total_steps"] == 100
    assert served["last_checkpoint_step"] == 40
    on_disk = json.loads(progress.read_text())
    assert on_disk["eta_seconds"] == 60.0 and on_disk["loss"] == 2.5


def test_a_disabled_instance_on_other_ranks_writes_nothing(tmp_path: Path) -> None:
    progress = tmp_path / "progress.json"
    metrics = TrainerMetrics(enabled=False, port=0, progress_path=progress, total_steps=10)
    metrics.record_step(
        step=1,
        epoch=0,
        loss=1.0,
        learning_rate=1.0,
        grad_norm=1.0,
        tokens_per_second=1.0,
        mfu_ratio=0.0,
        eta_seconds=None,
    )
    metrics.finish("succeeded")

    assert not progress.exists()


def _one_step(metrics: TrainerMetrics) -> None:
    metrics.record_step(
        step=1,
        epoch=0,
        loss=2.0,
        learning_rate=1e-4,
        grad_norm=1.0,
        tokens_per_second=100.0,
        mfu_ratio=0.1,
        eta_seconds=None,
    )


def test_on_cpu_the_peak_gpu_memory_is_null_not_made_up(tmp_path: Path) -> None:
    progress = tmp_path / "progress.json"
    metrics = TrainerMetrics(enabled=True, port=0, progress_path=progress, total_steps=10)
    _one_step(metrics)
    on_disk = json.loads(progress.read_text())
    assert on_disk["peak_memory_bytes"] is None
    assert on_disk["gpu_utilization"] is None
    assert "trainwright_gpu_peak_memory_bytes{" not in generate_latest(metrics.registry).decode()


def test_with_cuda_the_peak_gpu_memory_is_torch_max_allocated_in_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 37 * 2**30)
    monkeypatch.setenv("LOCAL_RANK", "0")
    progress = tmp_path / "progress.json"
    metrics = TrainerMetrics(enabled=True, port=0, progress_path=progress, total_steps=10)
    _one_step(metrics)
    assert json.loads(progress.read_text())["peak_memory_bytes"] == 37 * 2**30
    text = generate_latest(metrics.registry).decode()
    assert 'trainwright_gpu_peak_memory_bytes{gpu="0"} 3.9728447488e+10' in text
