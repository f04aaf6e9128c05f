"""Planning a TrainingJob for the cluster it runs on (pure: spec + inventory in, plan out)."""

from __future__ import annotations

from typing import Any

from trainwright.api.v1alpha1 import TrainingJob
from trainwright.operator.inventory import Inventory, build_inventory
from trainwright.operator.planning import plan_trainingjob

PRODUCTS = {"NVIDIA-H100-80GB-HBM3": "H100-SXM", "NVIDIA-L4": "L4"}


def _inventory(h100_nodes: int, l4_nodes: int) -> Inventory:
    nodes = [
        {
            "metadata": {"name": f"{kind}-{i}", "labels": {"nvidia.com/gpu.product": product}},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}},
        }
        for kind, product, gpus, count in (
            ("h100", "NVIDIA-H100-80GB-HBM3", 8, h100_nodes),
            ("l4", "NVIDIA-L4", 4, l4_nodes),
        )
        for i in range(count)
    ]
    return build_inventory(nodes, [], product_to_gpu=PRODUCTS.get)


def _job(**spec: Any) -> TrainingJob:
    body: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://d/a.jsonl", "tokens": 2_000_000},
    }
    body.update(spec)
    return TrainingJob.from_body({"metadata": {"name": "j", "namespace": "n"}, "spec": body})


def test_a_pinned_layout_is_kept_and_selects_the_clusters_product_label() -> None:
    outcome = plan_trainingjob(
        _job(resources={"gpuType": "H100-SXM", "gpus": 16, "nodes": 2, "gpusPerNode": 8}),
        _inventory(2, 0),
    )
    assert outcome.reason == "Planned"
    assert outcome.plan is not None
    assert (outcome.plan.nodes, outcome.plan.gpus_per_node, outcome.plan.num_gpus) == (2, 8, 16)
    assert outcome.plan.gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert outcome.message.startswith("Planned 2 node(s) x 8 H100-SXM, ")


def test_eight_gpus_of_a_four_gpu_node_type_are_spread_over_two_nodes() -> None:
    outcome = plan_trainingjob(_job(resources={"gpuType": "L4", "gpus": 8}), _inventory(0, 4))
    assert outcome.plan is not None
    assert (outcome.plan.nodes, outcome.plan.gpus_per_node) == (2, 4)


def test_auto_only_considers_gpu_types_the_cluster_has() -> None:
    outcome = plan_trainingjob(_job(resources={"gpuType": "auto", "maxGpus": 8}), _inventory(0, 2))
    assert outcome.plan is not None
    assert outcome.plan.gpu_type == "L4"
    assert all(alt.gpu_type == "L4" for alt in outcome.plan.recommendations)


def test_auto_on_a_cluster_without_gpus_says_so() -> None:
    outcome = plan_trainingjob(_job(), _inventory(0, 0))
    assert (outcome.plan, outcome.reason) == (None, "InsufficientCapacity")
    assert "the cluster has no GPU nodes" in outcome.message


def test_a_pinned_count_that_runs_out_of_memory_suggests_a_count_that_fits() -> None:
    outcome = plan_trainingjob(
        _job(
            model={"name": "llama-3.1-70b"},
            method="full",
            resources={"gpuType": "H100-SXM", "gpus": 8},
        ),
        _inventory(2, 0),
    )
    assert outcome.reason == "DoesNotFit"
    assert outcome.message.startswith("8 x H100-SXM does not fit: each GPU would need ")
    assert outcome.message.endswith("would fit.")


def test_an_unknown_model_is_an_invalid_spec_with_the_planners_sentence() -> None:
    outcome = plan_trainingjob(_job(model={"name": "llama-9-1t"}), _inventory(1, 0))
    assert (outcome.plan, outcome.reason) == (None, "InvalidSpec")
    assert outcome.message.startswith("TrainingJob spec: unknown model 'llama-9-1t'")


def test_an_unreadable_config_path_names_the_field() -> None:
    outcome = plan_trainingjob(
        _job(model={"configPath": "/nonexistent/config.json"}), _inventory(1, 0)
    )
    assert outcome.reason == "InvalidSpec"
    assert "spec.model.configPath '/nonexistent/config.json'" in outcome.message
