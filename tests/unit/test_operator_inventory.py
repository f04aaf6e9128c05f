"""The cluster GPU inventory, built from Node and Pod dicts."""

from __future__ import annotations

from typing import Any

from trainwright.operator.inventory import build_inventory, pod_gpu_request

PRODUCTS = {"NVIDIA-H100-80GB-HBM3": "H100-SXM", "NVIDIA-L4": "L4"}


def _node(
    name: str,
    product: str | None,
    gpus: int,
    *,
    ready: str = "True",
    cordoned: bool = False,
) -> dict[str, Any]:
    labels = {"nvidia.com/gpu.product": product} if product else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": cordoned},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "64"},
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


def _pod(node: str, gpus: int, phase: str = "Running") -> dict[str, Any]:
    return {
        "spec": {
            "nodeName": node,
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def _cluster() -> list[dict[str, Any]]:
    return [
        *(_node(f"h100-{i}", "NVIDIA-H100-80GB-HBM3", 8) for i in range(4)),
        *(_node(f"l4-{i}", "NVIDIA-L4", 4) for i in range(2)),
        _node("cpu-0", None, 0),
        _node("h100-cordoned", "NVIDIA-H100-80GB-HBM3", 8, cordoned=True),
        _node("h100-notready", "NVIDIA-H100-80GB-HBM3", 8, ready="False"),
        _node("mystery-0", "NVIDIA-Mystery-9000", 8),
    ]


def test_nodes_group_by_catalog_gpu_and_skip_unusable_ones() -> None:
    inventory = build_inventory(_cluster(), [], product_to_gpu=PRODUCTS.get)
    assert inventory.gpu_types() == ["H100-SXM", "L4"]
    h100 = inventory.pools["H100-SXM"]
    assert (h100.nodes, h100.allocatable_gpus, h100.free_gpus) == (4, 32, 32)
    assert inventory.pools["L4"].max_gpus_per_node == 4
    assert inventory.unknown_products == ("NVIDIA-Mystery-9000",)


def test_running_pods_take_gpus_and_finished_pods_give_them_back() -> None:
    pods = [
        _pod("h100-0", 8),
        _pod("h100-1", 4),
        _pod("h100-2", 8, phase="Succeeded"),
        {"spec": {"containers": []}, "status": {"phase": "Pending"}},
    ]
    inventory = build_inventory(_cluster(), pods, product_to_gpu=PRODUCTS.get)
    h100 = inventory.pools["H100-SXM"]
    assert h100.free_per_node == (0, 4, 8, 8)
    assert h100.nodes_holding(8, free_only=True) == 2
    assert h100.nodes_holding(8, free_only=False) == 4


def test_a_plan_that_fits_the_free_nodes_fits_now() -> None:
    inventory = build_inventory(_cluster(), [], product_to_gpu=PRODUCTS.get)
    check = inventory.check("H100-SXM", nodes=4, gpus_per_node=8)
    assert (check.fits_cluster, check.fits_now) == (True, True)


def test_a_plan_that_fits_only_when_work_finishes_waits() -> None:
    pods = [_pod("h100-0", 8)]
    inventory = build_inventory(_cluster(), pods, product_to_gpu=PRODUCTS.get)
    check = inventory.check("H100-SXM", nodes=4, gpus_per_node=8)
    assert (check.fits_cluster, check.fits_now) == (True, False)
    assert "the free GPUs hold 3 such pod(s) now" in check.message


def test_a_plan_larger_than_the_cluster_says_what_the_cluster_has() -> None:
    inventory = build_inventory(_cluster(), [], product_to_gpu=PRODUCTS.get)
    check = inventory.check("H100-SXM", nodes=5, gpus_per_node=8)
    assert not check.fits_cluster
    assert check.message == (
        "The plan needs 5 node(s) x 8 H100-SXM, but the H100-SXM nodes hold only 4 pod(s) of "
        "8 GPUs; "
        "4 H100-SXM node(s) with up to 8 GPUs (32 of 32 free), "
        "2 L4 node(s) with up to 4 GPUs (8 of 8 free)."
    )


def test_a_gpu_type_missing_from_the_cluster_does_not_fit() -> None:
    inventory = build_inventory(_cluster(), [], product_to_gpu=PRODUCTS.get)
    check = inventory.check("A100-80GB-SXM", nodes=1, gpus_per_node=1)
    assert not check.fits_cluster
    assert "the cluster has no A100-80GB-SXM nodes" in check.message


def test_an_empty_cluster_says_it_has_no_gpu_nodes() -> None:
    inventory = build_inventory([], [], product_to_gpu=PRODUCTS.get)
    assert inventory.describe() == "no GPU nodes"
    assert (
        "no nodes labelled nvidia.com/gpu.product"
        in inventory.check("L4", nodes=1, gpus_per_node=1).message
    )


def test_a_pod_holds_the_larger_of_request_and_limit_over_its_containers() -> None:
    pod = {
        "spec": {
            "containers": [
                {"resources": {"requests": {"nvidia.com/gpu": "2"}, "limits": {}}},
                {"resources": {"limits": {"nvidia.com/gpu": "4"}}},
                {},
            ]
        }
    }
    assert pod_gpu_request(pod) == 6


def test_inventory_status_lists_pools_largest_first() -> None:
    inventory = build_inventory(_cluster(), [_pod("l4-0", 1)], product_to_gpu=PRODUCTS.get)
    assert inventory.to_status()[1] == {
        "gpuType": "L4",
        "product": "NVIDIA-L4",
        "nodes": 2,
        "gpusPerNode": 4,
        "allocatableGpus": 8,
        "freeGpus": 7,
    }


def test_an_inventory_from_nodes_alone_does_not_claim_free_gpus() -> None:
    inventory = build_inventory(_cluster(), None, product_to_gpu=PRODUCTS.get)
    assert not inventory.pods_counted
    assert inventory.describe() == (
        "4 H100-SXM node(s) with up to 8 GPUs, 2 L4 node(s) with up to 4 GPUs"
    )


def test_one_pod_per_rank_may_share_a_node_that_has_the_ranks() -> None:
    """Two one-rank pods fit the real node's two CPU ranks; a third does not."""
    real_node = {
        "metadata": {
            "name": "trainwright-real-0",
            "labels": {"trainwright.io/device.product": "Trainwright-CPU"},
        },
        "status": {
            "allocatable": {"trainwright.io/cpu-rank": "2", "cpu": "2"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    inventory = build_inventory([real_node], [])
    assert inventory.gpu_types() == ["CPU"]
    assert inventory.check("CPU", nodes=2, gpus_per_node=1).fits_now
    assert not inventory.check("CPU", nodes=3, gpus_per_node=1).fits_cluster
    busy = {
        "spec": {
            "nodeName": "trainwright-real-0",
            "containers": [{"resources": {"requests": {"trainwright.io/cpu-rank": "1"}}}],
        },
        "status": {"phase": "Running"},
    }
    check = build_inventory([real_node], [busy]).check("CPU", nodes=2, gpus_per_node=1)
    assert (check.fits_cluster, check.fits_now) == (True, False)
