"""``trainwright validate``: check TrainingJob / CapacityPlan / ModelExport manifests offline.

The same models the operator and the CRDs are generated from, so a manifest that
passes here passes the API server's schema, and a bad one gets the sentence the
operator would report (``TrainingJob spec.resources.gpus: input should be greater
than 0.``). Documents of other kinds (a PVC next to a TrainingJob) are skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainwright.cli._common import CliError, UsageError, add_output_flag, emit, format_table

_EPILOG = """\
examples:
  trainwright validate examples/                 every *.yaml / *.yml / *.json in the folder
  trainwright validate job.yaml -o json
  kustomize build overlays/prod | trainwright validate -

exit codes: 0 all valid, 1 some manifest is invalid, 2 a file cannot be read or parsed.
"""


class InvalidManifests(CliError):
    """At least one manifest failed validation: exit 1 after the report."""

    exit_code = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check trainwright.io manifests against the API models",
        description="Validate TrainingJob, CapacityPlan and ModelExport manifests offline.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR|-", help="manifests; - reads stdin")
    add_output_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    results = [
        _check(source, index, document)
        for source, text in _read_all(args.paths)
        for index, document in _documents(source, text)
    ]
    trainwright_results = [r for r in results if r is not None]
    if not trainwright_results:
        raise UsageError("no TrainingJob, CapacityPlan or ModelExport manifests found in the input")
    emit(trainwright_results, args.output, _table)
    invalid = sum(1 for r in trainwright_results if not r["valid"])
    if invalid:
        raise InvalidManifests(f"{invalid} of {len(trainwright_results)} manifests are invalid")
    return 0


def _read_all(paths: list[str]) -> list[tuple[str, str]]:
    sources: list[tuple[str, str]] = []
    for name in paths:
        if name == "-":
            sources.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        elif path.is_file():
            files = [path]
        else:
            raise UsageError(f"{name} is not a file or directory")
        for file in files:
            try:
                sources.append((str(file), file.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read {file}: {exc}") from None
    return sources


def _documents(source: str, text: str) -> list[tuple[int, Any]]:
    import yaml

    try:
        return [(i, d) for i, d in enumerate(yaml.safe_load_all(text)) if d is not None]
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{source} is not valid YAML: {first}") from None


def _check(source: str, index: int, document: Any) -> dict[str, Any] | None:
    from trainwright.api.v1alpha1 import (
        API_VERSION,
        CapacityPlan,
        InvalidResourceError,
        ModelExport,
        TrainingJob,
    )

    if not isinstance(document, dict) or document.get("apiVersion") != API_VERSION:
        return None
    validators: dict[str, Callable[[Any], object]] = {
        "TrainingJob": TrainingJob.from_body,
        "CapacityPlan": CapacityPlan.from_body,
        "ModelExport": ModelExport.from_body,
    }
    kind = str(document.get("kind", ""))
    metadata = document.get("metadata")
    name = str(metadata.get("name", "")) if isinstance(metadata, dict) else ""
    result: dict[str, Any] = {"source": f"{source}#{index}", "kind": kind, "name": name}
    validate = validators.get(kind)
    if validate is None:
        accepted = ", ".join(validators)
        return result | {"valid": False, "error": f"kind {kind!r} is not one of {accepted}."}
    try:
        validate(document)
    except InvalidResourceError as exc:
        return result | {"valid": False, "error": str(exc)}
    return result | {"valid": True, "error": None}


def _table(results: list[dict[str, Any]]) -> str:
    rows = [
        (r["source"], r["kind"], r["name"], "ok" if r["valid"] else r["error"]) for r in results
    ]
    return format_table(("SOURCE", "KIND", "NAME", "RESULT"), rows)
