"""The CRDs' CEL rules, evaluated offline (cel-python) the way the API server runs them.

The API server defaults an object, then evaluates each ``x-kubernetes-validations``
rule with ``self`` bound to the node it sits on (and ``oldSelf`` to the stored
node for transition rules, on updates only). tests/e2e/test_crd_validation.py
checks the same against a real API server; this runs in milliseconds.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from trainwright.api.crdgen import KINDS, crd_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_ENV = celpy.Environment()
SCHEMAS = {k.kind: crd_for(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for k in KINDS}


def defaulted(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server does before validating."""
    if isinstance(value, dict) and "properties" in schema:
        result = dict(value)
        for name, sub in schema["properties"].items():
            if name not in result and "default" in sub:
                result[name] = copy.deepcopy(sub["default"])
            if name in result:
                result[name] = defaulted(sub, result[name])
        return result
    if isinstance(value, list) and "items" in schema:
        return [defaulted(schema["items"], item) for item in value]
    return value


def rules_on(
    schema: dict[str, Any], new: Any, old: Any, path: str = ""
) -> Iterator[tuple[str, dict[str, str], Any, Any]]:
    """Every (path, rule, self, oldSelf) the API server would evaluate for this object."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule, new, old
    if isinstance(new, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in new:
                old_child = old.get(name) if isinstance(old, dict) else None
                yield from rules_on(sub, new[name], old_child, f"{path}.{name}")


@cache
def compiled(expression: str) -> celpy.Runner:
    return _ENV.program(_ENV.compile(expression))


def failures(kind: str, body: dict[str, Any], old_body: dict[str, Any] | None = None) -> list[str]:
    """``path: message`` for every rule that does not hold (transition rules only on update)."""
    schema = SCHEMAS[kind]
    new = defaulted(schema, body)
    old = defaulted(schema, old_body) if old_body is not None else None
    failed = []
    for path, rule, self_value, old_value in rules_on(schema, new, old):
        is_transition = "oldSelf" in rule["rule"]
        if is_transition and old_value is None:
            continue
        activation = {"self": celpy.json_to_cel(self_value)}
        if is_transition:
            activation["oldSelf"] = celpy.json_to_cel(old_value)
        program = compiled(rule["rule"])
        outcome = program.evaluate(activation)
        # An evaluation error (e.g. a missing field) is a failure too, as on the API server.
        if not (isinstance(outcome, celpy.celtypes.BoolType) and bool(outcome)):
            failed.append(f"{path + rule.get('fieldPath', '') or 'root'}: {rule['message']}")
    return failed


def examples() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("apiVersion") == "trainwright.io/v1alpha1":
                found.append((f"{path.name}:{doc['kind']}", doc))
    return found


def lora_job(**spec_changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(dict(examples())["training-lora.yaml:TrainingJob"])
    body["spec"].update(spec_changes)
    return body


@pytest.mark.parametrize(("name", "body"), examples(), ids=[n for n, _ in examples()])
def test_every_example_passes_every_rule_on_create_and_on_an_unchanged_update(
    name: str, body: dict[str, Any]
) -> None:
    assert failures(body["kind"], body) == []
    assert failures(body["kind"], body, old_body=body) == []


@pytest.mark.parametrize(
    ("spec_changes", "expected"),
    [
        (
            {"model": {"name": "llama-3.1-8b", "configPath": "/m/config.json"}},
            ".spec.model: model: set exactly one of name or configPath",
        ),
        (
            {"model": {"uri": "pvc://m/llama"}},
            ".spec.model: model: set exactly one of name or configPath",
        ),
        (
            {"method": "full"},
            ".spec.lora: lora is only allowed with method auto, lora, qlora or dora",
        ),
        (
            {"priorityClass": "high"},
            ".spec.priorityClass: priorityClass is only allowed with queue (it names a Kueue "
            "WorkloadPriorityClass)",
        ),
        (
            {"resources": {"gpusPerNode": 8}},
            ".spec.resources: resources.gpusPerNode needs a concrete resources.gpuType, not auto",
        ),
        (
            {"resources": {"gpuType": "L4", "gpus": 12, "maxGpus": 8}},
            ".spec.resources: resources.gpus must not exceed resources.maxGpus",
        ),
        (
            {"resources": {"gpuType": "L4", "gpus": 12, "nodes": 2, "gpusPerNode": 4}},
            ".spec.resources: resources.gpus must equal resources.nodes x resources.gpusPerNode",
        ),
        (
            {"checkpoint": {"pvc": "ckpt", "uri": "s3://b/c"}},
            ".spec.checkpoint: checkpoint: set at most one of uri or pvc",
        ),
    ],
)
def test_a_broken_training_job_fails_exactly_the_rule_that_names_its_field(
    spec_changes: dict[str, Any], expected: str
) -> None:
    assert failures("TrainingJob", lora_job(**spec_changes)) == [expected]


def test_method_auto_with_adapter_options_and_a_profile_passes_every_rule() -> None:
    body = lora_job(method="auto", profile="chatbot")
    assert body["spec"]["lora"] and failures("TrainingJob", body) == []


def test_changing_the_method_fails_the_transition_rule_but_creating_with_it_does_not() -> None:
    old = lora_job()
    new = lora_job(method="dora")
    assert failures("TrainingJob", new) == []
    assert failures("TrainingJob", new, old_body=old) == [".spec.method: method is immutable"]


def test_a_running_job_cannot_change_its_inputs_but_can_be_suspended() -> None:
    running = lora_job() | {"status": {"phase": "Running"}}
    resized = lora_job(resources={"gpuType": "H100-SXM", "gpus": 16}) | {
        "status": {"phase": "Running"}
    }
    suspended = lora_job(suspend=True) | {"status": {"phase": "Running"}}
    [message] = failures("TrainingJob", resized, old_body=running)
    assert message.startswith("root: spec.model, spec.lora, spec.dataset, spec.training")
    assert message.endswith("are immutable while the job is Running (suspend it first)")
    assert failures("TrainingJob", suspended, old_body=running) == []
    higher_rank = lora_job(lora={"rank": 64}) | {"status": {"phase": "Running"}}
    assert len(failures("TrainingJob", higher_rank, old_body=running)) == 1
    moved = lora_job(checkpoint={"pvc": "elsewhere"}) | {"status": {"phase": "Running"}}
    assert len(failures("TrainingJob", moved, old_body=running)) == 1
    stopped = running | {"status": {"phase": "Suspended"}}
    assert failures("TrainingJob", resized | {"status": {"phase": "Suspended"}}, stopped) == []


def test_a_broken_capacity_plan_and_export_fail_the_rules_that_name_their_fields() -> None:
    plan = copy.deepcopy(dict(examples())["capacityplan-chat.yaml:CapacityPlan"])
    plan["spec"]["workload"]["inference"]["batch"] = 8
    assert failures("CapacityPlan", plan) == [
        ".spec.workload.inference: set at most one of rps or batch"
    ]
    del plan["spec"]["workload"]["inference"]
    assert failures("CapacityPlan", plan) == [
        ".spec.workload: workload: set exactly one of inference or training"
    ]
    export = copy.deepcopy(dict(examples())["modelexport.yaml:ModelExport"])
    export["spec"]["formats"] = ["safetensors"]
    assert failures("ModelExport", export) == [
        ".spec.quantization: quantization needs format gguf or ollama",
        ".spec.ollama: ollama options need format ollama",
    ]
