"""hack/k8s/nodes.py turns the fake GPU inventory into kwok nodes that look like GFD-labelled ones."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
NODES_SCRIPT = REPO_ROOT / "hack" / "k8s" / "nodes.py"
DEFAULT_INVENTORY = REPO_ROOT / "hack" / "k8s" / "inventory.yaml"


def _load_nodes_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fake_gpu_nodes", NODES_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nodes = _load_nodes_module()


def test_default_inventory_has_three_gpu_types_and_ten_nodes() -> None:
    groups = nodes.node_groups(yaml.safe_load(DEFAULT_INVENTORY.read_text()))

    summary = [(g["gpuType"], g["nodes"], g["gpusPerNode"]) for g in groups]
    assert summary == [("H100-SXM", 2, 8), ("A100-80GB-SXM", 4, 8), ("L4", 4, 4)]


def test_a_node_carries_gfd_labels_and_allocatable_gpus() -> None:
    (group,) = nodes.node_groups(
        [
            {
                "gpuType": "L4",
                "product": "NVIDIA-L4",
                "memoryMiB": 23034,
                "nodes": 1,
                "gpusPerNode": 4,
            }
        ]
    )

    node = nodes.node_manifest(group, 3)

    assert node["metadata"]["name"] == "gpu-l4-3"
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert labels["nvidia.com/gpu.memory"] == "23034"
    assert labels["nvidia.com/gpu.count"] == "4"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert node["status"]["allocatable"]["cpu"] == nodes.DEFAULT_CPU


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"gpuType": "L4", "product": "NVIDIA-L4", "memoryMiB": 1, "nodes": 0, "gpusPerNode": 4},
         "inventory entry 0: nodes must be a positive integer, got 0."),
        ({"gpuType": "L4", "product": "NVIDIA-L4", "nodes": 1, "gpusPerNode": 4},
         "inventory entry 0 lacks memoryMiB."),
        ({"gpuType": "L4", "product": "NVIDIA L4", "memoryMiB": 1, "nodes": 1, "gpusPerNode": 4},
         "inventory entry 0: product must be a label value"),
        ({"gpuType": "L4", "product": "NVIDIA-L4", "memoryMiB": 1, "nodes": 1, "gpusPerNode": 4,
          "memory": "lots"},
         "inventory entry 0: memory must be a Kubernetes quantity such as 96 or 1Ti, got 'lots'."),
    ],
)  # fmt: skip
def test_a_bad_inventory_entry_is_named_with_its_field(
    entry: dict[str, object], message: str
) -> None:
    with pytest.raises(nodes.InventoryError) as raised:
        nodes.node_groups([entry])

    assert str(raised.value).startswith(message)


def test_the_script_exits_2_with_one_line_for_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "inventory.yaml"
    bad.write_text("gpuType: L4\n")

    result = subprocess.run(
        [sys.executable, str(NODES_SCRIPT), str(bad)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: the inventory must be a non-empty YAML list of GPU node groups."
    ]
    assert result.stdout == ""
