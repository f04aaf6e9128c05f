"""Write kubeconform's JSON schemas from a Kubernetes release's OpenAPI v2 document.

Usage: python3 k8s_schemas.py SWAGGER_JSON OUTPUT_DIR

One standalone, strict schema per kind (``deployment-apps-v1.json``, named as
kubeconform's ``{{ .ResourceKind }}{{ .KindSuffix }}`` expects), the way
openapi2jsonschema writes yannh/kubernetes-json-schema: every object that lists
its properties rejects unknown ones, IntOrString and Quantity accept a number or
a string, and optional values may be null (helm renders empty values as null).
Each file carries only the definitions its kind reaches, under ``definitions``,
referenced locally. Standard library only: it runs before the virtualenv exists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

_REF = "#/definitions/"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """One schema made strict; walks the schema keywords, not property names."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    if out.get("format") == "int-or-string":
        del out["format"]
        out.pop("type", None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}, {"type": "null"}]
    elif isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _fix_special(definitions: dict[str, Any]) -> None:
    definitions[_QUANTITY] = {
        "description": "A Kubernetes quantity: a number or a string such as 500m or 1Gi.",
        "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}],
    }
    definitions[_INT_OR_STRING] = {
        "description": "An int32 or a string.",
        "oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}],
    }


def _references(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            found.add(ref[len(_REF) :])
        for value in node.values():
            found |= _references(value)
    elif isinstance(node, list):
        for value in node:
            found |= _references(value)
    return found


def _closure(name: str, definitions: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen[current] = definitions[current]
        todo.extend(_references(definitions[current]) - seen.keys())
    return seen


def _file_name(kind: str, group: str, version: str) -> str:
    # kubeconform's KindSuffix: the first label of the group, then the version.
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix.lower()}.json"


def write_schemas(swagger: dict[str, Any], output: Path) -> int:
    definitions = {name: _strict(node) for name, node in swagger["definitions"].items()}
    _fix_special(definitions)
    output.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, node in definitions.items():
        for gvk in node.get("x-kubernetes-group-version-kind", []):
            if "metadata" not in node.get("properties", {}):
                continue  # options and events of the wire protocol, not objects one applies
            schema = {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "$ref": _REF + name,
                "definitions": _closure(name, definitions),
            }
            target = output / _file_name(gvk["kind"], gvk["group"], gvk["version"])
            target.write_text(json.dumps(schema, sort_keys=True), encoding="utf-8")
            written += 1
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: k8s_schemas.py SWAGGER_JSON OUTPUT_DIR", file=sys.stderr)
        return 2
    swagger = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    write_schemas(swagger, Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
