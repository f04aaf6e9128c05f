"""What every subcommand shares: errors with exit codes, and output formats."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


class CliError(Exception):
    """An error the user can act on: printed as one line, exits with ``exit_code``."""

    exit_code = 2


class UsageError(CliError):
    """Bad input (a flag's value, a file's content): exit 2."""

    exit_code = 2


OUTPUT_FORMATS = ("table", "json", "yaml")


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    default = "table" if sys.stdout.isatty() else "json"
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        default=default,
        help="output format (default: table on a terminal, json otherwise)",
    )


def emit(document: Any, output: str, render_table: Callable[[Any], str]) -> None:
    """Write ``document`` to stdout as JSON, YAML or the command's table."""
    if output == "json":
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif output == "yaml":
        import yaml

        yaml.safe_dump(document, sys.stdout, sort_keys=False)
    else:
        sys.stdout.write(render_table(document))
        if not render_table(document).endswith("\n"):
            sys.stdout.write("\n")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned table: columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def positive_int(flag: str) -> Callable[[str], int]:
    """An argparse type that accepts integers > 0 and names the flag otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a positive integer, got {text!r}"
            ) from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}")
        return value

    return parse


def positive_float(flag: str) -> Callable[[str], float]:
    """An argparse type that accepts numbers > 0 and names the flag otherwise."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a positive number, got {text!r}"
            ) from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number, got {text!r}")
        return value

    return parse


def add_carbon_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--region, --grid-intensity and --pue: where a run draws its power from (the plan's
    carbon figures; spec.carbon in a manifest)."""
    parser.add_argument(
        "--region",
        metavar="R",
        help="cloud region (us-east-1, gcp:europe-west4) or grid zone (FR, US-CAMX) the run "
        "draws power from (default: the region --cloud's prices are quoted for)",
    )
    parser.add_argument(
        "--grid-intensity",
        type=positive_float("--grid-intensity"),
        metavar="G",
        help="your own grid intensity in gCO2e/kWh, in place of the table's",
    )
    parser.add_argument(
        "--pue",
        type=positive_float("--pue"),
        metavar="P",
        help="data-centre PUE, at least 1 (default: the provider's reported one)",
    )
