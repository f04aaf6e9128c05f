"""``gpuType: auto`` with a deadline: a GPU type free now over a cheaper one that is busy.

A 200M-token LoRA of Llama 3.1 8B on a cluster of 2 x 8 H100, 4 x 8 A100 and 4 x 4 L4: the
cheapest plan is 4 L4s (about 19 h, $60.75); 16 H100s take 26 min for $84.39. Before a
24 h deadline the L4s are taken when they are free, and the H100s when the L4s are busy
(the wait for them has no known end); without a deadline the cheapest plan waits.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_operator_trainingjob import NS, TJ, World, _condition, _trainingjob, world

from trainwright.api.v1alpha1 import TrainingJob
from trainwright.operator.inventory import Inventory, build_inventory
from trainwright.operator.planning import plan_trainingjob

PRODUCTS = {
    "NVIDIA-H100-80GB-HBM3": "H100-SXM",
    "NVIDIA-A100-SXM4-80GB": "A100-80GB-SXM",
    "NVIDIA-L4": "L4",
}
POOLS = (("h100", "NVIDIA-H100-80GB-HBM3", 8, 2), ("a100", "NVIDIA-A100-SXM4-80GB", 8, 4))
DAY = 86_400

__all__ = ["world"]  # the fixture, imported for pytest


def _cluster(*, busy: tuple[str, ...] = ()) -> Inventory:
    """The cluster with every GPU of the ``busy`` kinds held by a running pod."""
    pools = (*POOLS, ("l4", "NVIDIA-L4", 4, 4))
    nodes = [
        {
            "metadata": {"name": f"{kind}-{i}", "labels": {"nvidia.com/gpu.product": product}},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}},
        }
        for kind, product, gpus, count in pools
        for i in range(count)
    ]
    pods = [
        {
            "spec": {
                "nodeName": f"{kind}-{i}",
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
            },
            "status": {"phase": "Running"},
        }
        for kind, _, gpus, count in pools
        if kind in busy
        for i in range(count)
    ]
    return build_inventory(nodes, pods, product_to_gpu=PRODUCTS.get)


def _job(deadline_seconds: int | None, gpu_type: str = "auto") -> TrainingJob:
    spec: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://d/a.jsonl", "tokens": 200_000_000},
        "resources": {"gpuType": gpu_type, "maxGpus": 16},
    }
    if deadline_seconds is not None:
        spec["budget"] = {"deadlineSeconds": deadline_seconds}
    return TrainingJob.from_body({"metadata": {"name": "j", "namespace": "n"}, "spec": spec})


def test_the_cheapest_gpu_type_is_planned_when_it_is_free() -> None:
    outcome = plan_trainingjob(_job(DAY), _cluster())
    assert outcome.plan is not None
    assert (outcome.plan.gpu_type, outcome.plan.num_gpus) == ("L4", 4)
    assert outcome.plan.estimated_cost_usd == 60.75
    assert outcome.message.startswith("Planned ")


def test_before_a_deadline_a_free_gpu_type_wins_over_a_cheaper_busy_one_and_says_why() -> None:
    outcome = plan_trainingjob(_job(DAY), _cluster(busy=("l4",)))
    assert outcome.reason == "Planned" and outcome.plan is not None
    assert (outcome.plan.gpu_type, outcome.plan.num_gpus) == ("H100-SXM", 16)
    assert outcome.plan.estimated_duration_seconds is not None
    assert outcome.plan.estimated_duration_seconds <= DAY
    assert outcome.message.startswith(
        "GPU type H100-SXM, free now, over the cheaper 4 x L4 (about $60.75 against $84.39): "
        "only 0 of its 16 GPUs are free and nothing says when 4 will be, so waiting for them "
        "could miss the 24.0 h deadline (spec.budget.deadlineSeconds). Planned 2 node(s) x 8 "
        "H100-SXM"
    )
    # The busy cheaper plan stays among the alternatives.
    assert ("L4", 4) in {(a.gpu_type, a.num_gpus) for a in outcome.plan.recommendations}


def test_when_the_fastest_type_is_busy_too_the_next_free_one_that_meets_the_deadline_wins() -> None:
    outcome = plan_trainingjob(_job(DAY), _cluster(busy=("l4", "h100")))
    assert outcome.plan is not None
    assert (outcome.plan.gpu_type, outcome.plan.num_gpus) == ("A100-80GB-SXM", 16)
    assert "over the cheaper 4 x L4" in outcome.message


def test_without_a_deadline_or_with_a_pinned_type_the_cheapest_plan_waits() -> None:
    waiting = plan_trainingjob(_job(None), _cluster(busy=("l4",)))
    assert waiting.plan is not None and waiting.plan.gpu_type == "L4"
    assert waiting.message.startswith("Planned ")
    pinned = plan_trainingjob(_job(DAY, gpu_type="L4"), _cluster(busy=("l4",)))
    assert pinned.plan is not None and pinned.plan.gpu_type == "L4"


def test_free_capacity_is_not_judged_from_an_inventory_that_counted_no_pods() -> None:
    nodes_only = build_inventory(
        [
            {
                "metadata": {"name": "l4-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
                "status": {"allocatable": {"nvidia.com/gpu": "4"}},
            },
            {
                "metadata": {
                    "name": "h100-0",
                    "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                },
                "status": {"allocatable": {"nvidia.com/gpu": "8"}},
            },
        ],
        None,
        product_to_gpu=PRODUCTS.get,
    )
    outcome = plan_trainingjob(_job(DAY), nodes_only)
    assert outcome.plan is not None and outcome.plan.gpu_type == "L4"


@pytest.mark.asyncio
async def test_the_controller_counts_free_gpus_for_auto_with_a_deadline(world: World) -> None:
    """The world's cluster: 2 x 8 H100 and 2 x 4 L4; both L4 nodes are busy."""
    for i in range(2):
        world.server.objects["v1/pods", NS, f"other-{i}"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"other-{i}", "namespace": NS},
            "spec": {
                "nodeName": f"l4-{i}",
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": "4"}}}],
            },
            "status": {"phase": "Running"},
        }
    spec = _job(DAY).spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", **spec)
    status = await world.reconcile("ft")
    assert status["plan"]["gpuType"] == "H100-SXM"
    planned = _condition(status, "Planned")["message"]
    assert planned.startswith("GPU type H100-SXM, free now, over the cheaper ")
    assert "only 0 of its 8 GPUs are free" in planned
