"""Reading the trainer's /progress document into status.progress."""

from __future__ import annotations

import datetime

from trainwright.operator.progress import metrics_endpoint, progress_status

NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


def test_a_trainer_document_becomes_the_status_block() -> None:
    document = {
        "step": 7,
        "total_steps": 70,
        "epoch": 0,
        "loss": 2.25,
        "tokens_per_second": 512.5,
        "eta_seconds": 120.0,
        "updated_at": "2026-03-01T11:59:30Z",
        "state": "running",
        "last_checkpoint_step": 5,
    }
    progress = progress_status(document, now=NOW)
    assert progress is not None and progress.to_manifest() == {
        "step": 7,
        "totalSteps": 70,
        "epoch": 0.0,
        "loss": 2.25,
        "tokensPerSecond": 512.5,
        "etaSeconds": 120.0,
        "lastCheckpointStep": 5,
        "updatedTime": "2026-03-01T11:59:30Z",
    }


def test_a_non_finite_loss_is_left_out_and_a_foreign_document_is_ignored() -> None:
    progress = progress_status({"step": 3, "loss": float("nan"), "eta_seconds": None}, now=NOW)
    assert progress is not None and progress.loss is None and progress.eta_seconds is None
    assert progress.updated_time == NOW
    assert progress_status({}, now=NOW) is None
    assert progress_status({"step": "three"}, now=NOW) is None
    assert progress_status({"step": -1}, now=NOW) is None


def test_the_endpoint_is_the_pod_ip_and_its_named_metrics_port() -> None:
    pod = {
        "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 9500}]}]},
        "status": {"podIP": "10.0.0.7"},
    }
    assert metrics_endpoint(pod) == ("10.0.0.7", 9500)
    assert metrics_endpoint({"spec": {}, "status": {"podIP": "10.0.0.8"}}) == ("10.0.0.8", 9464)
    assert metrics_endpoint({"status": {}}) is None
