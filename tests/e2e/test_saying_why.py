"""Saying why a TrainingJob does not start, on the local control plane with the real
operator process and kube-scheduler (issue 15: a missing PVC named within 30 s)."""

from __future__ import annotations

import time

from e2e.cluster import Kube, wait_until
from e2e.operator_harness import (
    OperatorProcess,
    condition,
    create,
    operator,
    status_of,
    trainingjob,
)

__all__ = ["operator"]  # the fixture, imported so pytest finds it


def test_a_dataset_on_a_claim_that_does_not_exist_is_named_within_30_seconds(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = trainingjob("no-claim", resources={"gpuType": "H100-SXM", "gpus": 8})
    body["spec"]["dataset"]["uri"] = "pvc://data/alpaca.jsonl"
    started = time.monotonic()
    create(kube, namespace, "trainingjobs", body)

    def explained() -> dict[str, object] | None:
        status = status_of(kube, namespace, "trainingjobs", "no-claim")
        running = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Running"), None
        )
        return status if running and running.get("reason") == "MissingReference" else None

    status = wait_until(explained, timeout_s=30, what="Running=False reason MissingReference")
    elapsed = time.monotonic() - started
    running = condition(status, "Running")
    assert status["phase"] == "Planned"
    assert running["status"] == "False"
    assert running["message"] == (
        f"PersistentVolumeClaim {namespace}/data named by spec.dataset.uri does not exist; "
        "the trainer pods wait for it and start once it is created."
    )
    assert status["message"] == running["message"]
    print(f"missing PVC named {elapsed:.1f} s after the TrainingJob was applied")
