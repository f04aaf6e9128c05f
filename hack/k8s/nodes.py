"""Turn a fake GPU inventory file (hack/k8s/inventory.yaml) into kwok Node manifests.

Usage: python3 hack/k8s/nodes.py INVENTORY.yaml > nodes.json   (then kubectl apply -f)

Each node carries the labels NVIDIA GPU feature discovery sets on real GPU nodes
(https://github.com/NVIDIA/k8s-device-plugin, docs/gpu-feature-discovery) and allocatable
nvidia.com/gpu as the device plugin reports it, plus the kwok annotation that hands the node
to kwok. Bad input exits 2 with one sentence naming the entry and field.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import yaml

REQUIRED_FIELDS = ("gpuType", "product", "memoryMiB", "nodes", "gpusPerNode")
DEFAULT_CPU = "96"
DEFAULT_MEMORY = "1Ti"
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


class InventoryError(ValueError):
    """The inventory file is not a list of GPU node groups of the documented shape."""


def _positive_int(entry: dict[str, Any], field: str, where: str) -> int:
    value = entry[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InventoryError(f"{where}: {field} must be a positive integer, got {value!r}.")
    return value


def _quantity(entry: dict[str, Any], field: str, default: str, where: str) -> str:
    value = str(entry.get(field, default))
    if not QUANTITY.match(value):
        raise InventoryError(
            f"{where}: {field} must be a Kubernetes quantity such as 96 or 1Ti, got {value!r}."
        )
    return value


def _label(entry: dict[str, Any], field: str, where: str) -> str:
    value = str(entry[field])
    if not LABEL_VALUE.match(value):
        raise InventoryError(
            f"{where}: {field} must be a label value (letters, digits, '-', '_', '.'; "
            f"at most 63 characters), got {value!r}."
        )
    return value


def node_groups(document: Any) -> list[dict[str, Any]]:
    """Validate the parsed inventory and return its entries with defaults filled in."""
    if not isinstance(document, list) or not document:
        raise InventoryError("the inventory must be a non-empty YAML list of GPU node groups.")
    groups = []
    for index, entry in enumerate(document):
        where = f"inventory entry {index}"
        if not isinstance(entry, dict):
            raise InventoryError(
                f"{where} must be a mapping with fields {', '.join(REQUIRED_FIELDS)}."
            )
        missing = [field for field in REQUIRED_FIELDS if field not in entry]
        if missing:
            raise InventoryError(f"{where} lacks {', '.join(missing)}.")
        groups.append(
            {
                "gpuType": _label(entry, "gpuType", where),
                "product": _label(entry, "product", where),
                "memoryMiB": _positive_int(entry, "memoryMiB", where),
                "nodes": _positive_int(entry, "nodes", where),
                "gpusPerNode": _positive_int(entry, "gpusPerNode", where),
                "cpu": _quantity(entry, "cpu", DEFAULT_CPU, where),
                "memory": _quantity(entry, "memory", DEFAULT_MEMORY, where),
            }
        )
    return groups


def node_manifest(group: dict[str, Any], index: int) -> dict[str, Any]:
    """One kwok-managed Node of a group, as GPU feature discovery would label it."""
    name = f"gpu-{group['gpuType'].lower()}-{index}"
    resources = {
        "cpu": group["cpu"],
        "memory": group["memory"],
        "pods": "110",
        "nvidia.com/gpu": str(group["gpusPerNode"]),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": group["product"],
                "nvidia.com/gpu.memory": str(group["memoryMiB"]),
                "nvidia.com/gpu.count": str(group["gpusPerNode"]),
                "trainwright.io/gpu-type": group["gpuType"],
            },
        },
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: nodes.py INVENTORY.yaml", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as handle:
            groups = node_groups(yaml.safe_load(handle))
    except OSError as error:
        print(
            f"error: cannot read the inventory file {argv[1]}: {error.strerror}.", file=sys.stderr
        )
        return 2
    except yaml.YAMLError as error:
        print(f"error: {argv[1]} is not valid YAML: {error}", file=sys.stderr)
        return 2
    except InventoryError as error:
        print(f"error: {argv[1]}: {error}", file=sys.stderr)
        return 2
    items = [node_manifest(g, i) for g in groups for i in range(g["nodes"])]
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
