"""Every manifest in examples/ is valid for its kind's model (the e2e test applies them too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from trainwright.api.v1alpha1 import CapacityPlan, ModelExport, TrainingJob

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = {"TrainingJob": TrainingJob, "CapacityPlan": CapacityPlan, "ModelExport": ModelExport}


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if doc and doc.get("apiVersion") == "trainwright.io/v1alpha1":
                found.append((f"{path.name}#{index}", doc))
    return found


def test_the_examples_cover_lora_qlora_auto_a_capacity_plan_and_an_export() -> None:
    docs = dict(documents())
    jobs = [TrainingJob.from_body(d) for d in docs.values() if d["kind"] == "TrainingJob"]
    assert {j.spec.method for j in jobs} >= {"lora", "qlora"}
    assert any(j.spec.resources.gpu_type == "auto" for j in jobs)
    assert any(d["kind"] == "CapacityPlan" for d in docs.values())
    assert any(d["kind"] == "ModelExport" for d in docs.values())


@pytest.mark.parametrize(("name", "doc"), documents(), ids=[n for n, _ in documents()])
def test_an_example_validates_against_its_model(name: str, doc: dict[str, Any]) -> None:
    model = MODELS[doc["kind"]].from_body(doc)
    assert model.metadata["name"] == doc["metadata"]["name"]
    assert model.to_manifest()["spec"].keys() >= doc["spec"].keys()


def test_the_training_examples_fit_the_demo_inventory_and_tolerate_its_fake_nodes() -> None:
    # Demo inventory: 2 x 8 H100-SXM, 4 x 8 A100-80GB-SXM, 4 x 4 L4 (hack/k8s/inventory.yaml).
    demo_gpus = {"H100-SXM": 16, "A100-80GB-SXM": 32, "L4": 16}
    for _, doc in documents():
        if doc["kind"] != "TrainingJob":
            continue
        job = TrainingJob.from_body(doc)
        resources = job.spec.resources
        if resources.gpu_type == "CPU":
            # The real node's two CPU ranks (hack/k8s/node.sh); no fake node involved.
            assert (resources.nodes or 1) * (resources.gpus_per_node or 1) <= 2
            continue
        if resources.gpu_type != "auto":
            assert resources.gpus is not None
            assert resources.gpus <= demo_gpus[resources.gpu_type]
        else:
            assert resources.max_gpus is not None and resources.max_gpus <= 16
        assert any(t.key == "kwok.x-k8s.io/node" for t in job.spec.tolerations)
