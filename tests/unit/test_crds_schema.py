"""The generated CRDs are structural, documented, and carry the names, columns and rules users rely on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from trainwright.api.crdgen import KINDS, Kind, crd_for


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from walk(schema[key], f"{path}[]")


def schema_of(kind: str) -> dict[str, Any]:
    crd = crd_for(next(k for k in KINDS if k.kind == kind))
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def node(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    for part in dotted.split("."):
        schema = schema["properties"][part]
    return schema


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_schema_node_is_structural_and_typed(kind: Kind) -> None:
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, sub in walk(schema):
        # Kubernetes' one exception to "every node is typed": an int-or-string field.
        assert "type" in sub or sub.get("x-kubernetes-int-or-string") is True, (
            f"{kind.kind}{path} has no type"
        )
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "title", "const"):
            assert forbidden not in sub, f"{kind.kind}{path} has {forbidden}"
        assert not ("properties" in sub and "additionalProperties" in sub), path
        # OpenAPI v3.0 (what the API server speaks): exclusiveMinimum is a flag on minimum.
        assert isinstance(sub.get("exclusiveMinimum", False), bool), path


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_user_and_status_field_has_a_description(kind: Kind) -> None:
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = [
        path
        for path, sub in walk(schema)
        if path.startswith((".spec", ".status"))
        and not path.endswith("[]")
        and not sub.get("description")
    ]
    assert missing == []


def test_metadata_is_left_to_the_api_server() -> None:
    # Anything under metadata but name/generateName constraints makes the CRD invalid.
    for kind in KINDS:
        assert schema_of(kind.kind)["properties"]["metadata"] == {"type": "object"}


def test_the_names_scope_and_subresources_follow_the_contract() -> None:
    names = {k.kind: crd_for(k)["spec"]["names"] for k in KINDS}
    assert names["TrainingJob"]["plural"] == "trainingjobs"
    assert names["TrainingJob"]["shortNames"] == ["tj"]
    assert names["CapacityPlan"]["shortNames"] == ["cplan"]
    assert names["ModelExport"]["shortNames"] == ["mexport"]
    for kind in KINDS:
        crd = crd_for(kind)
        assert crd["metadata"]["name"] == f"{kind.plural}.trainwright.io"
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["names"]["categories"] == ["trainwright"]
        version = crd["spec"]["versions"][0]
        assert version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}


def test_kubectl_get_tj_shows_phase_gpus_type_strategy_eta_cost_and_age() -> None:
    crd = crd_for(next(k for k in KINDS if k.kind == "TrainingJob"))
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if c.get("priority", 0) == 0]
    assert default == ["Phase", "GPUs", "GPU Type", "Strategy", "ETA", "Cost USD", "Age"]
    paths = {c["name"]: c["jsonPath"] for c in columns}
    assert paths["GPUs"] == ".status.plan.numGpus"
    assert paths["Cost USD"] == ".status.plan.estimatedCostUsd"
    schema = schema_of("TrainingJob")
    for column in columns:
        if column["jsonPath"].startswith(".status"):
            node(schema, column["jsonPath"][1:])  # every column points at a real field


def test_defaults_and_bounds_reach_the_api_server() -> None:
    spec = node(schema_of("TrainingJob"), "spec")
    assert node(spec, "maxRestarts")["default"] == 3
    assert node(spec, "strategy")["enum"] == ["auto", "ddp", "fsdp", "zero1", "zero2", "zero3"]
    assert node(spec, "resources.gpus")["minimum"] == 1
    assert node(spec, "budget.maxCostUsd")["exclusiveMinimum"] is True
    assert node(spec, "budget.maxCostUsd")["minimum"] == 0
    assert node(spec, "training")["default"] == {}
    assert node(spec, "training.seqLen")["default"] == 2048
    assert spec["required"] == ["model", "method", "dataset"]


def test_cel_rules_cover_exclusive_fields_immutability_and_running_jobs() -> None:
    schema = schema_of("TrainingJob")
    spec = node(schema, "spec")
    model_rules = [r["rule"] for r in node(spec, "model")["x-kubernetes-validations"]]
    assert model_rules == ["has(self.name) != has(self.configPath)"]
    spec_rules = {r["rule"]: r for r in spec["x-kubernetes-validations"]}
    assert spec_rules["self.method == oldSelf.method"]["fieldPath"] == ".method"
    assert "!has(self.lora) || self.method in ['auto', 'lora', 'qlora', 'dora']" in spec_rules
    root_rule = schema["x-kubernetes-validations"][0]
    assert root_rule["rule"].startswith("!has(oldSelf.status)")
    assert "self.spec.model == oldSelf.spec.model" in root_rule["rule"]
    assert "immutable while the job is Running" in root_rule["message"]
    conditions = node(schema, "status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
