"""A CapacityPlan on the local control plane gets a recommendation and today's inventory."""

from __future__ import annotations

from e2e.cluster import Kube, wait_until
from e2e.operator_harness import OperatorProcess, create, operator, status_of

__all__ = ["operator"]  # the fixture, imported so pytest finds it


def test_a_capacityplan_gets_a_recommendation_and_what_the_cluster_holds_today(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = {
        "apiVersion": "trainwright.io/v1alpha1",
        "kind": "CapacityPlan",
        "metadata": {"name": "chat-serving"},
        "spec": {
            "workload": {
                "inference": {
                    "model": {"name": "llama-3.1-8b"},
                    "precision": "bf16",
                    "promptTokens": 512,
                    "outputTokens": 256,
                    "rps": 20,
                    "ttftSloMs": 500,
                    "itlSloMs": 50,
                }
            },
            "gpuTypes": ["H100-SXM", "A100-80GB-SXM", "L4"],
            "cloud": "aws",
        },
    }
    create(kube, namespace, "capacityplans", body)
    status = wait_until(
        lambda: (
            (s := status_of(kube, namespace, "capacityplans", "chat-serving")).get("recommendation")
            and s
        ),
        timeout_s=60,
        what="chat-serving to get a recommendation",
    )
    best = status["recommendation"]
    assert status["phase"] == "Planned"
    assert best["gpuType"] in {"H100-SXM", "A100-80GB-SXM", "L4"}
    assert best["gpus"] == best["replicas"] * best["tensorParallel"]
    assert best["usdPerHour"] > 0
    assert len(status["recommendations"]) >= 2
    products = {entry["gpuProduct"] for entry in status["inventory"]["gpus"]}
    assert {"NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"} <= products
    assert sum(entry["allocatableGpus"] for entry in status["inventory"]["gpus"]) >= 16
    assert status["observedGeneration"] == 1
    sample = (
        f'trainwright_capacityplan_recommended_gpus{{name="chat-serving",namespace="{namespace}"}}'
    )
    assert f"{sample} {float(best['gpus'])}" in operator.metrics()
