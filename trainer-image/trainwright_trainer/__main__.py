"""``python -m trainwright_trainer train --config FILE`` (run under torchrun for several ranks).

``python -m trainwright_trainer export ...`` merges and converts a trained model
(:mod:`trainwright_trainer.export`); its flags are a public contract
(CONTRACTS.md, "Exporter").

The config is validated before anything heavy is imported or loaded, so a bad
config fails in about a second with one line on stderr and exit code 64 (65 for
a missing dataset). Any :class:`~trainwright_trainer.errors.TrainerError` during
the run is reported the same way with its own code (see ``exitcodes.py``);
anything else is a crash (a traceback, exit 1), which the operator retries.

``python -m trainwright_trainer dataset-check --data FILE`` prints the dataset report
as JSON (:mod:`trainwright_trainer.data.check`): the operator's pre-flight pod.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from trainwright_trainer.errors import ConfigError, TrainerError
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
    _export_parser(commands.add_parser("export", help="merge and convert a trained model"))
    _dataset_check_parser(
        commands.add_parser(
            "dataset-check", help="report on a dataset as JSON (the operator's pre-flight pod)"
        )
    )
    return parser


def _dataset_check_parser(check: argparse.ArgumentParser) -> None:
    from trainwright_trainer.config import DATA_FORMATS

    check.add_argument("--data", required=True, help="the dataset file, as the trainer sees it")
    check.add_argument("--format", choices=DATA_FORMATS, default="auto", help="row format")
    check.add_argument("--seq-len", type=int, help="report rows this sequence length truncates")
    check.add_argument("--tokenizer", help="the model's directory (else tokens are estimated)")
    check.add_argument("--report", help="also write the compact report here (termination log)")


def _run_dataset_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trainwright_trainer.data.check import check_dataset, write_report

    report = check_dataset(
        Path(args.data),
        data_format=args.format,
        seq_len=args.seq_len,
        tokenizer_dir=args.tokenizer,
    )
    print(write_report(report, args.report))
    return int(ExitCode.SUCCESS)


def _export_parser(export: argparse.ArgumentParser) -> None:
    from trainwright_trainer.export.config import COMBINATIONS, EXPORT_FORMATS, QUANTIZATIONS

    export.add_argument("--config", help="YAML or JSON with the ModelExport spec's fields")
    export.add_argument(
        "--source",
        action="append",
        help="trainer output or checkpoint dir, HF model dir or PEFT adapter dir "
        "(repeat with --weights to combine adapters)",
    )
    export.add_argument("--weights", help="comma-separated weights, one per --source")
    export.add_argument("--combination", choices=COMBINATIONS, help="how several adapters mix")
    export.add_argument("--base", help="base model directory (for an adapter)")
    export.add_argument(
        "--trainer-config", help="the trainer's config file (for a LoRA checkpoint source)"
    )
    export.add_argument("--formats", help=f"comma-separated: {', '.join(EXPORT_FORMATS)}")
    export.add_argument("--quantization", choices=QUANTIZATIONS, help="GGUF type")
    export.add_argument("--output", help="export directory (must not hold an export)")


def _export_config(args: argparse.Namespace) -> Any:
    """The ExportConfig from --config, or from the flags (flags override the file)."""
    from trainwright_trainer.export.config import load_export_config, parse_export_config

    data: dict[str, Any] = {}
    if args.config:
        data = load_export_config(args.config).model_dump(by_alias=False, exclude_unset=True)
    sources = args.source or []
    if len(sources) == 1 and not args.weights:
        data["source"] = sources[0]
    elif sources:
        weights = (args.weights or "").split(",") if args.weights else ["1"] * len(sources)
        if len(weights) != len(sources):
            raise ConfigError(f"--weights: {len(weights)} weights for {len(sources)} --source")
        try:
            data["sources"] = [
                {"path": p, "weight": float(w)} for p, w in zip(sources, weights, strict=True)
            ]
        except ValueError:
            raise ConfigError(f"--weights: {args.weights!r} is not a list of numbers") from None
    for flag in ("base", "quantization", "output", "combination", "trainer_config"):
        if getattr(args, flag):
            data[flag] = getattr(args, flag)
    if args.formats:
        data["formats"] = [f.strip() for f in args.formats.split(",") if f.strip()]
    if "output" not in data:
        raise ConfigError("--output: required (the directory the export is written to)")
    if not data.get("source") and not data.get("sources"):
        raise ConfigError("--source: required (a model, adapter, trainer output or checkpoint)")
    return parse_export_config(data, origin="export")


def _run_export(args: argparse.Namespace) -> int:
    from trainwright_trainer.export.run import run_export

    manifest = run_export(_export_config(args))
    for artifact in manifest["artifacts"]:
        print(f"{artifact['format']}: {artifact['path']} ({artifact['size_bytes']} bytes)")
    if not manifest["verification"]["ok"]:
        print("trainwright-trainer: export written but verification failed", file=sys.stderr)
        return int(ExitCode.DATA_ERROR)
    return int(ExitCode.SUCCESS)


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
        if args.command == "export":
            return _run_export(args)
        if args.command == "dataset-check":
            return _run_dataset_check(args)
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


def _exit(code: int) -> None:
    """Leave with ``code``; a failing rank skips the interpreter's teardown.

    At interpreter exit, the C++ destructors of torch's process groups run while the
    peer ranks are going away too, and can abort the process ("terminate called without
    an active exception", SIGABRT): torchrun then reports -6 instead of the trainer's
    code (seen on a loaded machine with a data error on both ranks).
    """
    if code == 0:
        sys.exit(0)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
