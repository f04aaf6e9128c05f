"""The ``trainwright`` command.

Each subcommand lives in its own module with a ``register(subparsers)``
function; heavy libraries (statsmodels, kopf, kubernetes) are imported inside
the handlers so ``trainwright plan`` starts in well under a second.

Errors a user can fix raise :class:`UsageError` (exit 2) or
:class:`InfeasibleError`-like subclasses of :class:`CliError` with their own
exit code; they print one line on stderr and never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from trainwright.cli._common import CliError

# Modules under trainwright.cli that provide subcommands, in help order.
_COMMAND_MODULES: tuple[str, ...] = (
    "plan",
    "catalog",
    "forecast",
    "dataset",
    "operator",
    "calibration",
    "validate",
    "compare",
    "init",
)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage block before an error; a user needs the one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="trainwright",
        description="Plan GPUs for LLM training and serving, forecast demand, run the operator.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"trainwright.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except CliError as exc:
        print(f"trainwright: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `trainwright models -o json | head`: the reader left; say nothing more.
        # Point stdout at /dev/null so the interpreter's final flush cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    sys.exit(main())
