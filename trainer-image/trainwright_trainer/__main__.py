"""``python -m trainwright_trainer train --config FILE`` (run under torchrun for several ranks).

The config is validated before anything heavy is imported or loaded, so a bad
config fails in about a second with one line on stderr and exit code 64 (65 for
a missing dataset). Any :class:`~trainwright_trainer.errors.TrainerError` during
the run is reported the same way with its own code (see ``exitcodes.py``);
anything else is a crash (a traceback, exit 1), which the operator retries.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from trainwright_trainer.errors import TrainerError
from trainwright_trainer.exitcodes import ExitCode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainwright_trainer",
        description="Trainwright's distributed LLM fine-tuning trainer.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="run a training job from a config file")
    train.add_argument("--config", required=True, help="YAML or JSON TrainerConfig")
    check = commands.add_parser("check", help="validate a config file and exit")
    check.add_argument("--config", required=True, help="YAML or JSON TrainerConfig")
    return parser


def _setup_logging() -> None:
    # Structured enough for log collectors: one line, a timestamp, the rank.
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s rank={rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging()
    from trainwright_trainer.config import load_config

    try:
        cfg = load_config(args.config)
        if args.command == "check":
            print(f"{args.config}: valid ({cfg.method}, {cfg.distributed.strategy})")
            return int(ExitCode.SUCCESS)
        from trainwright_trainer.train import run_training

        return run_training(cfg)
    except TrainerError as exc:
        rank = os.environ.get("RANK", "0")
        print(f"trainwright-trainer: error (rank {rank}): {exc}", file=sys.stderr)
        return int(exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
