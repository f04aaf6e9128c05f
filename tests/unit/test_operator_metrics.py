"""The operator's metrics and its /metrics and /healthz endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from trainwright.operator.metrics import OperatorMetrics, serve_metrics
from trainwright.operator.status import Phase


def _value(metrics: OperatorMetrics, metric: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(metric, labels)
    return None if value is None else float(value)


def test_reconciles_count_success_and_error_with_the_error_type() -> None:
    metrics = OperatorMetrics()
    with metrics.reconcile("TrainingJob"):
        pass
    with pytest.raises(ValueError), metrics.reconcile("TrainingJob"):
        raise ValueError("boom")
    assert (
        _value(metrics, "trainwright_reconciles_total", kind="TrainingJob", result="success") == 1
    )
    assert _value(metrics, "trainwright_reconciles_total", kind="TrainingJob", result="error") == 1
    assert (
        _value(
            metrics, "trainwright_reconcile_errors_total", kind="TrainingJob", reason="ValueError"
        )
        == 1
    )
    assert _value(metrics, "trainwright_reconcile_duration_seconds_count", kind="TrainingJob") == 2


def test_jobs_by_phase_move_with_transitions_and_deletions() -> None:
    metrics = OperatorMetrics()
    metrics.set_phase("ns", "a", Phase.PLANNED)
    metrics.set_phase("ns", "b", Phase.PLANNED)
    metrics.set_phase("ns", "a", Phase.RUNNING)
    metrics.set_phase("ns", "a", Phase.RUNNING)
    assert _value(metrics, "trainwright_trainingjobs", phase="Planned") == 1
    assert _value(metrics, "trainwright_trainingjobs", phase="Running") == 1
    metrics.forget_trainingjob("ns", "a")
    assert _value(metrics, "trainwright_trainingjobs", phase="Running") == 0
    assert _value(metrics, "trainwright_trainingjobs", phase="Failed") == 0


def test_planned_gpus_and_cost_are_per_job_and_removed_on_delete() -> None:
    metrics = OperatorMetrics()
    metrics.set_plan("ns", "a", gpus=16, cost_usd=123.5)
    assert _value(metrics, "trainwright_planned_gpus", namespace="ns", name="a") == 16
    assert _value(metrics, "trainwright_planned_cost_usd", namespace="ns", name="a") == 123.5
    metrics.forget_trainingjob("ns", "a")
    assert _value(metrics, "trainwright_planned_gpus", namespace="ns", name="a") is None


def test_the_endpoint_serves_metrics_and_reports_health() -> None:
    metrics = OperatorMetrics()
    metrics.set_plan("ns", "a", gpus=8, cost_usd=None)
    healthy = {"now": False}
    server = serve_metrics(metrics, port=0, host="127.0.0.1", healthy=lambda: healthy["now"])
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'trainwright_planned_gpus{name="a",namespace="ns"} 8.0' in text
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/healthz", timeout=5)
        assert error.value.code == 503
        healthy["now"] = True
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_api_request_latency_is_a_histogram_by_verb() -> None:
    metrics = OperatorMetrics()
    metrics.observe_api_request("GET", 0.02)
    metrics.observe_api_request("GET", 0.3)
    assert _value(metrics, "trainwright_api_request_duration_seconds_count", verb="GET") == 2
    assert (
        _value(metrics, "trainwright_api_request_duration_seconds_bucket", verb="GET", le="0.025")
        == 1
    )
