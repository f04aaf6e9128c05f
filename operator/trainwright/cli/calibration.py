"""``trainwright calibration export|show``: the cluster's calibration store, read out.

The store is the ConfigMap the operator writes (operator.calibration_store); ``export``
prints it in CONTRACTS.md's calibration file format, which ``trainwright plan ...
--calibration FILE`` reads; ``show`` lists each observation against its plan. Credentials
as the operator's: in-cluster in a pod, the current KUBECONFIG otherwise.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from trainwright.cli._common import UsageError, add_output_flag, emit, format_table
from trainwright.operator.calibration_defaults import POD_NAMESPACE_ENV, STORE_KEY, STORE_NAME

GIB = 2**30


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "calibration",
        help="read the cluster's calibration store (observed runs)",
        description="Read the observations the operator recorded from TrainingJobs that ran.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (
        ("export", "print the store as a calibration file (plan --calibration FILE reads it)"),
        ("show", "list the observations, observed against planned"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument(
            "-n",
            "--namespace",
            default=os.environ.get(POD_NAMESPACE_ENV) or "default",
            help="the operator's --calibration-namespace (default: $POD_NAMESPACE or default)",
        )
        action.add_argument(
            "--name", default=STORE_NAME, help=f"the store's ConfigMap (default {STORE_NAME})"
        )
        add_output_flag(action)
        action.set_defaults(handler=run_calibration)


def read_store(namespace: str, name: str) -> dict[str, Any]:
    """The store's document, validated as a calibration file; exits 2 with one sentence."""
    from kubernetes.config import ConfigException

    from trainwright.operator.calibration_store import document_of
    from trainwright.operator.kube import Kube, load_client_configuration
    from trainwright.planner.calibration import CalibrationError, parse_calibration

    try:
        kube = Kube(load_client_configuration())
    except (ConfigException, OSError) as exc:
        raise UsageError(
            f"no cluster credentials: set KUBECONFIG or run in a pod ({exc})"
        ) from None
    try:
        body = kube._get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
    except Exception as exc:  # unreachable server, forbidden: one sentence, no traceback
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise UsageError(f"cannot read configmap {namespace}/{name}: {reason}") from None
    finally:
        kube.close()
    if body is None:
        return {"observations": []}
    text = (body.get("data") or {}).get(STORE_KEY)
    document = document_of(body)
    if text and not document.get("observations") and text.strip() not in ("", "{}"):
        raise UsageError(f"configmap {namespace}/{name}: {STORE_KEY} is not a calibration file")
    try:
        parse_calibration(document, source=f"configmap {namespace}/{name}")
    except CalibrationError as exc:
        raise UsageError(f"calibration store {exc}") from None
    return document


def _table(document: dict[str, Any]) -> str:
    rows = []
    for o in document.get("observations") or []:
        planned = o.get("planned_tokens_per_second")
        ratio = f"{o['tokens_per_second'] / planned:.0%}" if planned else "-"
        peak = o.get("peak_memory_bytes")
        rows.append(
            [
                o.get("job", "-").rsplit("/", 1)[0] if o.get("job") else "-",
                o.get("gpu"),
                o.get("model"),
                o.get("method", o.get("precision")),
                o.get("strategy", "-"),
                o.get("num_gpus", o.get("tensor_parallel")),
                f"{o.get('tokens_per_second', o.get('output_tokens_per_second', 0)):,.0f}",
                f"{planned:,.0f}" if planned else "-",
                ratio,
                f"{peak / GIB:.1f}" if peak else "-",
                o.get("recorded", "-"),
            ]
        )
    if not rows:
        return "no observations recorded yet\n"
    return format_table(
        [
            "JOB",
            "GPU",
            "MODEL",
            "METHOD",
            "STRATEGY",
            "GPUS",
            "OBSERVED TOK/S",
            "PLANNED TOK/S",
            "RATIO",
            "PEAK GIB",
            "RECORDED",
        ],
        rows,
    )


def run_calibration(args: argparse.Namespace) -> int:
    document = read_store(args.namespace, args.name)
    output = args.output
    if args.action == "export" and output == "table":
        output = "json"  # a file is JSON or YAML; the table is `show`'s
    emit(document, output, _table)
    return 0
