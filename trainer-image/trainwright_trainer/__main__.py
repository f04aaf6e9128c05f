"""``python -m trainwright_trainer train --config FILE`` (run under torchrun for several ranks).

The config is validated before anything heavy is imported or loaded, so a bad
config fails in about a second with one line on stderr and exit code 64 (65 for
a missing dataset). Any :class:`~trainwright_trainer.errors.TrainerError` during
the run is reported the same way with its own code (see ``exitcodes.py``);
anything else is a crash (a traceback, exit 1), which the operator retries.
"""

from __future__ import annotations

import argparse
import json
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


class JsonFormatter(logging.Formatter):
    """One JSON object per line (what log collectors in a cluster parse best)."""

    def __init__(self, rank: str) -> None:
        super().__init__()
        self.rank = int(rank) if rank.isdigit() else rank

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "rank": self.rank,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging() -> None:
    # Rank 0 logs progress; the other ranks only warnings and errors.
    # TRAINWRIGHT_LOG_FORMAT=json|text; the default is JSON unless stderr is a terminal.
    rank = os.environ.get("RANK", "0")
    default = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("TRAINWRIGHT_LOG_FORMAT", default) == "json":
        handler.setFormatter(JsonFormatter(rank))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s rank={rank} %(levelname)s %(name)s: %(message)s")
        )
    logging.basicConfig(level=logging.INFO if rank == "0" else logging.WARNING, handlers=[handler])


def _record_exit_code(code: int) -> int:
    """Leave a failing code in ``$TRAINWRIGHT_EXIT_CODE_FILE`` for the pod's launcher.

    torchrun exits 1 whenever a worker fails; the launcher (trainwright.resources.launcher)
    exits with the code found here so the operator can tell 64/65 from 75 and 76. The
    first rank of the pod to fail writes it (O_EXCL); the others leave it alone.
    """
    path = os.environ.get("TRAINWRIGHT_EXIT_CODE_FILE")
    if code == 0 or not path:
        return code
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:  # another local rank recorded its code first, or no such directory
        return code
    with os.fdopen(fd, "w") as out:
        out.write(f"{code}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    return _record_exit_code(_main(argv))


def _main(argv: Sequence[str] | None) -> int:
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
