"""Generate the CustomResourceDefinitions from the pydantic models.

``python -m trainwright.api.crdgen crds`` writes one YAML file per kind into
``crds/``; ``tests/unit/test_crds_drift.py`` regenerates into a temporary
directory and fails when the two differ. ``--chart-templates DIR`` also writes
the Helm chart's copy (``helm/trainwright/templates/crds/``): the same CRDs as
templates, installed when ``crds.enabled`` and kept on uninstall when
``crds.keep`` (``helm.sh/resource-policy: keep``), as cert-manager's chart does.

The conversion turns pydantic's JSON Schema (draft 2020-12) into a Kubernetes
*structural* schema (``apiextensions.k8s.io/v1``, "Specifying a structural
schema"): every ``$ref`` inlined, ``Optional[X]`` (``anyOf: [X, null]``)
reduced to ``X`` (the API server prunes nulls), numeric
``exclusiveMinimum: 0`` rewritten to OpenAPI v3.0's ``minimum: 0,
exclusiveMinimum: true``, ``title`` and ``additionalProperties: false``
dropped (pruning does that job), and every ``x-kubernetes-*`` key kept.
Output is key-sorted so it is byte-for-byte stable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from trainwright.api.v1alpha1 import CapacityPlan, ModelExport, TrainingJob
from trainwright.api.v1alpha1.common import GROUP, VERSION

CATEGORY = "trainwright"
_DROPPED_KEYS = frozenset({"title", "$defs"})


class SchemaConversionError(ValueError):
    """The model uses a construct a structural schema cannot express."""


@dataclass(frozen=True)
class Kind:
    """How one model is published as a CRD."""

    model: type[BaseModel]
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def file_name(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


def _column(
    name: str, json_path: str, type_: str, description: str, **extra: Any
) -> dict[str, Any]:
    return {"name": name, "jsonPath": json_path, "type": type_, "description": description} | extra


_AGE = _column("Age", ".metadata.creationTimestamp", "date", "Time since creation.")

KINDS: tuple[Kind, ...] = (
    Kind(
        model=TrainingJob,
        kind="TrainingJob",
        plural="trainingjobs",
        singular="trainingjob",
        short_names=("tj",),
        printer_columns=(
            _column("Phase", ".status.phase", "string", "Pending, Planned, Running, ..."),
            _column("GPUs", ".status.plan.numGpus", "integer", "Total GPUs of the plan."),
            _column("GPU Type", ".status.plan.gpuType", "string", "GPU catalog key."),
            _column("Strategy", ".status.plan.strategy", "string", "Parallelism strategy."),
            _column(
                "ETA",
                ".status.plan.estimatedFinishTime",
                "string",
                "Estimated finish time.",
            ),
            _column("Cost USD", ".status.plan.estimatedCostUsd", "number", "Estimated cost."),
            _column("Step", ".status.progress.step", "integer", "Steps done.", priority=1),
            _column("Loss", ".status.progress.loss", "number", "Latest loss.", priority=1),
            _AGE,
        ),
    ),
    Kind(
        model=CapacityPlan,
        kind="CapacityPlan",
        plural="capacityplans",
        singular="capacityplan",
        short_names=("cplan",),
        printer_columns=(
            _column("Phase", ".status.phase", "string", "Pending, Planned, Infeasible, Failed."),
            _column("GPU Type", ".status.recommendation.gpuType", "string", "Recommended GPU."),
            _column("GPUs", ".status.recommendation.gpus", "integer", "Total GPUs."),
            _column("Replicas", ".status.recommendation.replicas", "integer", "Replicas."),
            _column("USD/h", ".status.recommendation.usdPerHour", "number", "Price per hour."),
            _column(
                "Fits Today", ".status.inventory.fitsToday", "boolean", "Free GPUs suffice now."
            ),
            _AGE,
        ),
    ),
    Kind(
        model=ModelExport,
        kind="ModelExport",
        plural="modelexports",
        singular="modelexport",
        short_names=("mexport",),
        printer_columns=(
            _column("Model", ".status.modelName", "string", "Registry name (spec.modelName)."),
            _column("Version", ".status.version", "string", "Version of that name."),
            _column("Formats", ".spec.formats", "string", "Formats produced."),
            _column("Size", ".status.sizeBytes", "integer", "All artifacts, bytes."),
            _column("Phase", ".status.phase", "string", "Pending, Running, Succeeded, Failed."),
            _column(
                "Source", ".spec.source.trainingJob", "string", "Source TrainingJob.", priority=1
            ),
            _AGE,
        ),
    ),
)


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema as a Kubernetes structural schema (no $ref, no null unions)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = raw.get("$defs", {})
    schema: dict[str, Any] = _convert(raw, definitions, path="")
    return schema


def _convert(node: Any, definitions: dict[str, Any], *, path: str) -> Any:
    if not isinstance(node, dict):
        return node
    node = _inline_ref(node, definitions, path)
    node = _collapse_optional(node, definitions, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {
                name: _convert(sub, definitions, path=f"{path}.{name}")
                for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, definitions, path=f"{path}[]")
        elif key in ("anyOf", "oneOf", "allOf"):
            raise SchemaConversionError(f"{path or 'root'}: {key} has no structural equivalent")
        else:
            out[key] = value
    if "properties" in out:
        out.pop("additionalProperties", None)
    if out.get("additionalProperties") is False:
        out.pop("additionalProperties")
    _rewrite_exclusive_bounds(out)
    _drop_null_default(out)
    _drop_const(out)
    return out


def _inline_ref(node: dict[str, Any], definitions: dict[str, Any], path: str) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = ref.rsplit("/", 1)[-1]
    if name not in definitions:
        raise SchemaConversionError(f"{path or 'root'}: unknown reference {ref}")
    # Field-level keys (description, default, x-kubernetes-validations) win over the
    # referenced class's, except validations, which both contribute.
    merged = dict(definitions[name])
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "x-kubernetes-validations":
            merged[key] = list(merged.get(key, [])) + list(value)
        else:
            merged[key] = value
    return merged


def _collapse_optional(
    node: dict[str, Any], definitions: dict[str, Any], path: str
) -> dict[str, Any]:
    variants = node.get("anyOf")
    if variants is None:
        return node
    concrete = [v for v in variants if v != {"type": "null"}]
    if len(concrete) != 1:
        raise SchemaConversionError(
            f"{path or 'root'}: a union of several types has no structural schema"
        )
    inner = _inline_ref(concrete[0], definitions, path)
    merged = {k: v for k, v in node.items() if k != "anyOf"}
    validations = list(inner.get("x-kubernetes-validations", [])) + list(
        merged.pop("x-kubernetes-validations", [])
    )
    result = dict(inner) | merged
    if validations:
        result["x-kubernetes-validations"] = validations
    return result


def _rewrite_exclusive_bounds(node: dict[str, Any]) -> None:
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(bound)
        if isinstance(value, bool) or value is None:
            continue
        if node.get("type") == "integer":
            # Clearer for users: "must be greater than or equal to 1".
            del node[bound]
            node[inclusive] = value + 1 if bound == "exclusiveMinimum" else value - 1
            continue
        node[inclusive] = value
        node[bound] = True


def _drop_null_default(node: dict[str, Any]) -> None:
    if "default" in node and node["default"] is None:
        del node["default"]


def _drop_const(node: dict[str, Any]) -> None:
    # Literal["trainwright.io/v1alpha1"] on apiVersion/kind: the API server owns those.
    if "const" in node:
        node["enum"] = [node.pop("const")]


def crd_for(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    schema = structural_schema(kind.model)
    properties = schema["properties"]
    # apiVersion, kind and metadata belong to the API server: type them, nothing more.
    properties["apiVersion"] = {
        "type": "string",
        "description": properties["apiVersion"]["description"],
    }
    properties["kind"] = {"type": "string", "description": properties["kind"]["description"]}
    # The API server rejects anything under metadata but name/generateName constraints.
    properties["metadata"] = {"type": "object"}
    # The status default lives in the model; a CRD default on status would be written on create.
    properties["status"].pop("default", None)
    schema["required"] = ["spec"]
    schema.pop("default", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "trainwright"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.printer_columns),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def render(crd: dict[str, Any]) -> str:
    """Stable YAML: keys sorted, lists in model order."""
    header = "# Generated by `make crds` (python -m trainwright.api.crdgen crds). Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=True, width=100, allow_unicode=True)


_CHART_HEADER = """\
{{- /* Generated by `make crds` (python -m trainwright.api.crdgen). Do not edit. */ -}}
{{- if .Values.crds.enabled }}
"""

_CHART_METADATA = """\
metadata:
  name: %s
  {{- if .Values.crds.keep }}
  annotations:
    helm.sh/resource-policy: keep
  {{- end }}
  labels:
    {{- include "trainwright.labels" . | nindent 4 }}
"""


def render_chart_template(crd: dict[str, Any]) -> str:
    """The CRD as a Helm template: metadata from the chart, the rest verbatim."""
    body = {key: value for key, value in crd.items() if key != "metadata"}
    spec = yaml.safe_dump({"spec": body.pop("spec")}, sort_keys=True, width=100, allow_unicode=True)
    head = yaml.safe_dump(body, sort_keys=True, width=100)
    # Helm would read "{{" in a description or a CEL rule as template syntax.
    spec = spec.replace("{{", '{{ "{{" }}')
    name = str(crd["metadata"]["name"])
    return _CHART_HEADER + head + _CHART_METADATA % name + spec + "{{- end }}\n"


def write_chart_templates(directory: Path) -> list[Path]:
    """Write every kind's CRD as a chart template into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        target = directory / f"{kind.plural}.yaml"
        target.write_text(render_chart_template(crd_for(kind)), encoding="utf-8")
        written.append(target)
    return written


def write_crds(directory: Path) -> list[Path]:
    """Write every kind's CRD into ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        target = directory / kind.file_name
        target.write_text(render(crd_for(kind)), encoding="utf-8")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainwright.api.crdgen",
        description="Write the CustomResourceDefinitions generated from the API models.",
    )
    parser.add_argument("directory", type=Path, help="output directory (crds)")
    parser.add_argument(
        "--chart-templates",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write the Helm chart's CRD templates here (helm/trainwright/templates/crds)",
    )
    args = parser.parse_args(argv)
    written = write_crds(args.directory)
    if args.chart_templates is not None:
        written += write_chart_templates(args.chart_templates)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
