"""``trainwright init``: the guided start, from a use case and a dataset to a TrainingJob.

It asks, one question at a time on a terminal: the use case (a profile), the dataset
file (checked on the spot by the trainer's own reader, as ``trainwright dataset
inspect``: a preview of the first rows and the problems found), the base model (a
catalog name or a local config.json), and the GPUs, or a budget and a deadline for the
planner to search within. It then shows the plan (memory, time, cost, carbon) with
alternatives on other GPU types and counts, and writes the TrainingJob manifest
(validated by the same pydantic model the operator uses) or applies it (``--apply``).

Every question has a flag; ``--yes`` takes the flags, asks nothing and confirms
nothing, so scripts and CI run it without a terminal. A wrong answer is explained and
asked again on a terminal; with ``--yes`` it exits 2 naming the flag.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from trainwright.cli._common import (
    CliError,
    UsageError,
    add_carbon_flags,
    add_output_flag,
    emit,
    format_table,
    positive_float,
)
from trainwright.cli.plan import _carbon
from trainwright.vocabulary import CLOUDS, METHOD_CHOICES, USE_CASES

if TYPE_CHECKING:
    from trainwright.planner import ModelSpec, TrainingPlan

T = TypeVar("T")

ALTERNATIVES_SHOWN = 3
PREVIEW_ROWS = 3
PREVIEW_CHARS = 100
BAD_ROWS_SHOWN = 5
SECONDS_PER_HOUR = 3600
# The path the manifest names when --dataset-uri is not given: the file's name on the
# datasets PVC the examples use (docs/install.md).
DEFAULT_DATASET_PVC = "pvc://datasets"
_NAME_MAX = 63

_EPILOG = """\
examples:
  trainwright init                                   # asks on the terminal
  trainwright init --yes --use-case chatbot --dataset train.jsonl --model llama-3.1-8b \\
      --gpus H100-SXM:1 --manifest chatbot.yaml
  trainwright init --yes --use-case code --dataset code.jsonl --model qwen2.5-7b \\
      --gpus auto --max-cost-usd 50 --deadline-hours 12 --apply

exit codes: 0 written (or applied), 2 a bad or missing answer with --yes, a file that
exists without --force, or no cluster for --apply, 3 no plan fits.
"""


class InfeasibleInit(CliError):
    """No plan fits the answers: exit 3 (as ``trainwright plan``)."""

    exit_code = 3


class Declined(Exception):
    """The user answered no to the last confirmation."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "init",
        help="guided start: use case, dataset, model, GPUs -> a checked TrainingJob",
        description=(
            "Ask for the use case, dataset, model and GPUs (or budget), check the dataset, "
            "show the plan and alternatives, and write (or apply) a TrainingJob manifest."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--use-case", help=f"one of {', '.join(USE_CASES)} (the profile)")
    parser.add_argument("--dataset", metavar="FILE", help="the dataset file, checked now")
    parser.add_argument("--model", help="a catalog model (llama-3.1-8b) or a config.json path")
    parser.add_argument(
        "--gpus",
        metavar="SPEC",
        help="TYPE:COUNT (H100-SXM:8), TYPE, COUNT, or auto (cheapest plan; default)",
    )
    parser.add_argument(
        "--max-cost-usd",
        type=positive_float("--max-cost-usd"),
        metavar="USD",
        help="budget for the whole run (with --gpus auto)",
    )
    parser.add_argument(
        "--deadline-hours",
        type=positive_float("--deadline-hours"),
        metavar="H",
        help="finish within this many hours (with --gpus auto)",
    )
    parser.add_argument("--method", choices=METHOD_CHOICES, default="auto")
    parser.add_argument("--cloud", choices=CLOUDS, default="aws", help="price list (default aws)")
    add_carbon_flags(parser.add_argument_group("energy and carbon (written to spec.carbon)"))
    parser.add_argument("--name", help="the TrainingJob's name (default MODEL-USE-CASE)")
    parser.add_argument("-n", "--namespace", default="default", help="namespace (default default)")
    parser.add_argument(
        "--dataset-uri",
        metavar="URI",
        help=f"where the cluster reads the dataset (default {DEFAULT_DATASET_PVC}/FILE-NAME)",
    )
    parser.add_argument(
        "--manifest", metavar="FILE", help="where to write the manifest (default NAME.yaml)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --manifest")
    parser.add_argument(
        "--apply", action="store_true", help="create the TrainingJob in the cluster instead"
    )
    parser.add_argument(
        "-y", "--yes", action="store_true", help="ask nothing: take the flags, confirm all"
    )
    add_output_flag(parser)
    parser.set_defaults(handler=run)


# Answers ---------------------------------------------------------------------------------


@dataclass
class GpuChoice:
    gpu_type: str | None  # None: auto
    gpus: int | None  # None: the planner's choice


@dataclass
class Dataset:
    path: Path
    report: dict[str, Any]


class Session:
    """Asks on a terminal, or takes the flags (``--yes``); says things on ``out``."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.interactive = not args.yes

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def answer(
        self,
        flag: str,
        question: str,
        parse: Callable[[str], T],
        *,
        default: str | None = None,
    ) -> T:
        """The flag's value parsed; else the answer on the terminal, asked until it parses."""
        given = getattr(self.args, flag.removeprefix("--").replace("-", "_"))
        if given is not None:
            return parse(str(given))
        if not self.interactive:
            if default is not None:
                return parse(default)
            raise UsageError(f"{flag} is required with --yes (or run init on a terminal)")
        suffix = f" [{default}]" if default is not None else ""
        while True:
            self.out.write(f"{question}{suffix}: ")
            self.out.flush()
            line = sys.stdin.readline()
            if not line:
                raise UsageError(f"no answer for {flag}: the input ended")
            text = line.strip() or (default or "")
            if not text:
                self.say(f"  an answer is needed ({flag})")
                continue
            try:
                value = parse(text)
            except UsageError as exc:
                self.say(f"  {exc}")
                continue
            # Answered as if given as the flag (the manifest names a config path as typed).
            setattr(self.args, flag.removeprefix("--").replace("-", "_"), text)
            return value

    def confirm(self, question: str) -> None:
        """Raise :class:`Declined` unless the user says yes (``--yes`` says it for them)."""
        if not self.interactive:
            return
        while True:
            self.out.write(f"{question} [Y/n]: ")
            self.out.flush()
            line = sys.stdin.readline()
            text = line.strip().lower()
            if not line or text in ("n", "no"):
                raise Declined
            if text in ("", "y", "yes"):
                return
            self.say("  answer y or n")


def parse_use_case(text: str) -> str:
    choice = text.strip().lower()
    if choice.isdigit() and 1 <= int(choice) <= len(USE_CASES):
        return USE_CASES[int(choice) - 1]
    if choice in USE_CASES:
        return choice
    raise UsageError(
        f"--use-case {text!r} is not one of {', '.join(USE_CASES)} (or 1-{len(USE_CASES)})"
    )


def check_dataset(text: str, *, seq_len: int) -> Dataset:
    """The file read the trainer's way, by ``dataset inspect``'s own code."""
    from trainwright.cli.dataset import inspect_file

    path = Path(text).expanduser()
    return Dataset(path, inspect_file(path, seq_len=seq_len, named="--dataset"))


def parse_model(text: str) -> str | ModelSpec:
    """A catalog key or alias (checked, with suggestions), or a config.json path."""
    from trainwright.cli.plan import load_model
    from trainwright.planner import PlannerError
    from trainwright.planner.lookup import get_model

    model = load_model(text.strip())
    if isinstance(model, str):
        try:
            return get_model(model).key
        except PlannerError as exc:
            raise UsageError(f"--model: {exc}") from None
    return model


def parse_gpus(text: str) -> GpuChoice:
    from trainwright.planner import PlannerError
    from trainwright.planner.lookup import get_gpu

    value = text.strip()
    if value.lower() == "auto":
        return GpuChoice(None, None)
    gpu_type, _, count = value.rpartition(":") if ":" in value else ("", "", value)
    if not count.isdigit() and not gpu_type:
        gpu_type, count = value, ""
    if count and (not count.isdigit() or int(count) < 1):
        raise UsageError(f"--gpus {text!r}: the count must be a positive integer (H100-SXM:8)")
    if gpu_type:
        try:
            gpu_type = get_gpu(gpu_type).key
        except PlannerError as exc:
            raise UsageError(f"--gpus: {exc}") from None
    return GpuChoice(gpu_type or None, int(count) if count else None)


# The flow --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from trainwright.cli.plan import quiet_pydantic_plugins

    quiet_pydantic_plugins()
    out = sys.stdout if args.output == "table" else sys.stderr
    session = Session(args, out)
    if session.interactive and not sys.stdin.isatty():
        raise UsageError(
            "init asks its questions on a terminal; pass --yes with --use-case, --dataset "
            "and --model (and --gpus) to run it without one"
        )
    try:
        document = _guided(session)
    except Declined:
        session.say("nothing written")
        return 1
    if args.output != "table":  # the table is what the session already said
        emit(document, args.output, lambda doc: "")
    return 0


def _guided(session: Session) -> dict[str, Any]:
    from trainwright.planner.profiles import get_profile

    args = session.args
    _check_region(args.region)
    if session.interactive:
        session.say("What is the fine-tune for?")
        for number, name in enumerate(USE_CASES, start=1):
            session.say(f"  {number}. {name}: {get_profile(name).description}")
    use_case = session.answer("--use-case", "Use case (number or name)", parse_use_case)
    profile = get_profile(use_case)
    dataset = session.answer(
        "--dataset",
        "Dataset file (.jsonl, .json, .csv, .parquet or .txt)",
        lambda text: _accepted_dataset(session, text, seq_len=int(profile.seq_len.value)),
    )
    model = session.answer(
        "--model", "Base model (a catalog name such as llama-3.1-8b, or a config.json)", parse_model
    )
    while True:
        gpus = session.answer(
            "--gpus", "GPUs (TYPE:COUNT such as H100-SXM:8, TYPE, COUNT, or auto)", parse_gpus,
            default="auto",
        )  # fmt: skip
        budget, deadline = _limits(session, gpus)
        body = manifest(args, use_case, dataset, model, gpus, budget, deadline)
        try:
            plan = _plan(body, model)
            break
        except InfeasibleInit as exc:
            if not session.interactive:
                raise
            session.say(f"  {exc}; choose other GPUs or limits")
            args.gpus = args.max_cost_usd = args.deadline_hours = None
    carbon = _carbon(plan, args)
    alternatives = _alternatives(body, model, plan)
    _show_plan(session, use_case, dataset, plan, carbon, alternatives)
    destination = _deliver(session, body)
    return {
        "manifest": body,
        "dataset": dataset.report,
        "plan": plan.to_contract(),
        "carbon": carbon,
        "alternatives": [
            {**alt.to_contract(), "carbon": _carbon(alt, args)} for alt in alternatives
        ],
        **destination,
    }


def _check_region(region: str | None) -> None:
    """A --region the carbon table does not know fails before any question is asked."""
    from trainwright.planner import PlannerError
    from trainwright.planner.carbon import grid_intensity

    if region is not None:
        try:
            grid_intensity(region)
        except PlannerError as exc:
            raise UsageError(f"--region: {exc}") from None


def _accepted_dataset(session: Session, text: str, *, seq_len: int) -> Dataset:
    """Check the file, show its preview and problems; a file the trainer refuses is an error."""
    dataset = check_dataset(text, seq_len=seq_len)
    report = dataset.report
    _show_dataset(session, dataset)
    if not report["trainer_accepts"]:
        raise UsageError(
            f"--dataset {dataset.path}: the trainer would refuse it "
            f"({len(report['bad_rows'])} bad of {report['rows']} rows); fix it or choose another"
        )
    return dataset


def _show_dataset(session: Session, dataset: Dataset) -> None:
    from trainwright_trainer.data.reader import read_rows

    report = dataset.report
    tokens = report["tokens"]
    estimated = " (estimated)" if tokens["estimated"] else ""
    session.say(
        f"  {report['format']} rows: {report['valid_rows']} valid of {report['rows']}, "
        f"{tokens['total']:,} tokens{estimated}, p95 {tokens['p95']} per row"
    )
    session.say("  preview:")
    for count, raw in enumerate(read_rows(dataset.path, report["file_type"])):
        if count == PREVIEW_ROWS:
            break
        text = raw.error or _one_line(raw.value)
        session.say(f"    row {raw.row}: {text}")
    bad = report["bad_rows"]
    if bad:
        session.say(f"  problems ({len(bad)} bad rows):")
        for row in bad[:BAD_ROWS_SHOWN]:
            session.say(f"    row {row['row']}: {row['reason']}")
    for suggestion in report["suggestions"]:
        session.say(f"  - {suggestion}")


def _one_line(value: Any) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def _limits(session: Session, gpus: GpuChoice) -> tuple[float | None, float | None]:
    """Budget and deadline: asked when the planner chooses the GPUs (Enter: none)."""
    if gpus.gpu_type is not None and gpus.gpus is not None:
        return None, None
    budget = session.answer(
        "--max-cost-usd", "Budget in US dollars (none: no limit)", _optional_positive,
        default="none",
    )  # fmt: skip
    deadline = session.answer(
        "--deadline-hours", "Deadline in hours (none: no deadline)", _optional_positive,
        default="none",
    )  # fmt: skip
    return budget, deadline


def _optional_positive(text: str) -> float | None:
    if text.strip().lower() in ("none", "no", "-"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a number; give a positive number or none") from None
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{text!r} must be a positive number (or none)")
    return value


def manifest(
    args: argparse.Namespace,
    use_case: str,
    dataset: Dataset,
    model: str | ModelSpec,
    gpus: GpuChoice,
    budget: float | None,
    deadline_hours: float | None,
) -> dict[str, Any]:
    """The TrainingJob the answers describe (validated into the API model by :func:`_plan`)."""
    model_key = model if isinstance(model, str) else model.key
    name = args.name or _dns_name(f"{model_key}-{use_case}")
    model_ref = {"name": model} if isinstance(model, str) else {"configPath": _config_path(args)}
    tokens = int(dataset.report["tokens"]["total"])
    spec: dict[str, Any] = {
        "model": model_ref,
        "method": args.method,
        "profile": use_case,
        "dataset": {
            "uri": args.dataset_uri or f"{DEFAULT_DATASET_PVC}/{dataset.path.name}",
            "format": dataset.report["format"],
            **({"tokens": tokens} if tokens > 0 else {}),
        },
        "resources": {"gpuType": gpus.gpu_type or "auto"},
        "cloud": args.cloud,
    }
    if gpus.gpus is not None:
        spec["resources"]["gpus"] = gpus.gpus
    limits = {
        "maxCostUsd": budget,
        "deadlineSeconds": None if deadline_hours is None else int(deadline_hours * 3600),
    }
    if any(v is not None for v in limits.values()):
        spec["budget"] = {k: v for k, v in limits.items() if v is not None}
    carbon = {
        "region": args.region,
        "gridIntensityGCo2ePerKwh": args.grid_intensity,
        "pue": args.pue,
    }
    if any(v is not None for v in carbon.values()):
        spec["carbon"] = {k: v for k, v in carbon.items() if v is not None}
    return {
        "apiVersion": "trainwright.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": args.namespace},
        "spec": spec,
    }


def _config_path(args: argparse.Namespace) -> str:
    """The config.json a --model path names (a directory means its config.json)."""
    path = Path(str(args.model)).expanduser()
    return str(path / "config.json" if path.is_dir() else path)


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:_NAME_MAX].rstrip("-") or "training"


def _plan(body: dict[str, Any], model: str | ModelSpec) -> TrainingPlan:
    """Validate ``body`` as the operator would and plan it the operator's way."""
    from trainwright.api.plans import training_request_from
    from trainwright.api.v1alpha1 import TrainingJob
    from trainwright.api.v1alpha1.common import InvalidResourceError
    from trainwright.planner import InfeasibleError, PlannerError, plan_training

    try:
        job = TrainingJob.from_body(body)
    except InvalidResourceError as exc:
        raise UsageError(str(exc)) from None
    spec_model = None if isinstance(model, str) else model
    try:
        plan = plan_training(training_request_from(job.spec, model_spec=spec_model))
    except InfeasibleError as exc:
        raise InfeasibleInit(str(exc)) from None
    except PlannerError as exc:
        raise UsageError(str(exc)) from None
    if not plan.fits:
        raise InfeasibleInit(
            f"{plan.model} {plan.method} does not fit {plan.num_gpus}x {plan.gpu}: it needs "
            f"{plan.memory.per_gpu_bytes / 2**30:.1f} GiB per GPU of "
            f"{plan.memory.capacity_bytes / 2**30:.1f} GiB"
        )
    return plan


def _alternatives(
    body: dict[str, Any], model: str | ModelSpec, plan: TrainingPlan
) -> list[TrainingPlan]:
    """Other GPU types and counts: the plan's own ranked alternatives, or (for GPUs the
    user named) the cheapest plans the planner finds when it may choose them."""
    if plan.recommendations:
        return plan.recommendations[:ALTERNATIVES_SHOWN]
    free = {**body, "spec": {**body["spec"], "resources": {"gpuType": "auto"}}}
    try:
        searched = _plan(free, model)
    except CliError:
        return []
    others = [
        p
        for p in (searched, *searched.recommendations)
        if (p.gpu, p.num_gpus) != (plan.gpu, plan.num_gpus)
    ]
    return others[:ALTERNATIVES_SHOWN]


def _show_plan(
    session: Session,
    use_case: str,
    dataset: Dataset,
    plan: TrainingPlan,
    carbon: dict[str, Any] | None,
    alternatives: list[TrainingPlan],
) -> None:
    from trainwright.cli.plan import profile_document

    tokens = dataset.report["tokens"]["total"]
    profile = profile_document(use_case, plan, dataset_tokens=tokens or None)
    defaults = profile["defaults"]
    session.say("")
    session.say(
        f"Plan: {plan.model} {plan.method} on {plan.num_gpus}x {plan.gpu} "
        f"({plan.strategy}, micro-batch {plan.micro_batch} x accumulation "
        f"{plan.gradient_accumulation})"
    )
    if plan.method_reason:
        session.say(f"  {plan.method_reason}")
    memory = plan.memory
    rows = [
        ("memory", f"{memory.per_gpu_bytes / 2**30:.1f} of {memory.capacity_bytes / 2**30:.1f} "
                   "GiB per GPU"),
        ("time", _hours(plan.duration_seconds)
         + f" for {defaults['epochs']['value']} epoch(s) at {plan.throughput.tokens_per_second:,.0f} tokens/s"),
        ("cost", f"{_usd(plan.cost.total_usd)} at {_usd(plan.cost.usd_per_hour)}/h on "
                 f"{plan.cost.cloud}"),
        ("carbon", _carbon_text(carbon)),
        ("learning rate", f"{defaults['learning_rate']['value']:g} "
                          f"({profile['effective_batch_sequences']} sequences per step)"),
        ("epochs", f"{defaults['epochs']['value']}: {defaults['epochs']['reason']}"),
    ]  # fmt: skip
    details = format_table(("", ""), rows).split("\n", 1)[1].rstrip("\n")
    session.say("  " + details.replace("\n", "\n  "))
    if alternatives:
        session.say("Alternatives:")
        table = format_table(
            ("GPU", "GPUS", "TIME", "COST", "CO2E"),
            [
                (
                    alt.gpu,
                    alt.num_gpus,
                    _hours(alt.duration_seconds),
                    _usd(alt.cost.total_usd),
                    _kg(_carbon(alt, session.args)),
                )
                for alt in alternatives
            ],
        )
        session.say("  " + table.rstrip("\n").replace("\n", "\n  "))


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no dataset size)"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * SECONDS_PER_HOUR:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / SECONDS_PER_HOUR:.1f} h"


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.2f}" if value >= 1 else f"${value:.2g}"


def _kg(carbon: dict[str, Any] | None) -> str:
    return "unknown" if carbon is None else f"{carbon['kg_co2e']:.3g} kg"


def _carbon_text(carbon: dict[str, Any] | None) -> str:
    if carbon is None:
        return "unknown (no duration or no GPU power figure)"
    return (
        f"{carbon['kg_co2e']:.3g} kg CO2e ({carbon['energy_kwh']:.3g} kWh at "
        f"{carbon['g_co2e_per_kwh']:.0f} g/kWh, {carbon['zone']}, PUE {carbon['pue']:g})"
    )


def _deliver(session: Session, body: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest (never over a file without --force) or create it in the cluster."""
    args = session.args
    name = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    if args.apply:
        session.confirm(f"Create TrainingJob {name} in the cluster?")
        _apply(body)
        session.say(f"created trainingjob {name}")
        return {"written": None, "applied": True}
    path = Path(args.manifest or f"{body['metadata']['name']}.yaml")
    if path.exists() and not args.force:
        if not session.interactive:
            raise UsageError(f"--manifest {path} exists; pass --force to overwrite it")
        session.confirm(f"{path} exists. Overwrite it?")
    else:
        session.confirm(f"Write {path}?")
    import yaml

    try:
        path.write_text(yaml.safe_dump(body, sort_keys=False))
    except OSError as exc:
        raise UsageError(f"--manifest {path}: cannot write it ({exc.strerror or exc})") from None
    session.say(f"wrote {path}; apply it with: kubectl apply -f {path}")
    return {"written": str(path), "applied": False}


def _apply(body: dict[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException

    from trainwright.operator.kube import Kube, load_client_configuration

    meta = body["metadata"]
    try:
        kube = Kube(load_client_configuration())
    except (ConfigException, OSError) as exc:
        raise UsageError(
            f"--apply needs a cluster: set KUBECONFIG or run in a pod ({exc}); "
            "or leave out --apply to write the manifest"
        ) from None
    path = f"/apis/trainwright.io/v1alpha1/namespaces/{meta['namespace']}/trainingjobs"
    try:
        kube.request("POST", path, body=body)
    except ApiException as exc:
        if exc.status == 409:
            raise UsageError(
                f"trainingjob {meta['namespace']}/{meta['name']} already exists; pass --name"
            ) from None
        raise UsageError(f"--apply: the API server refused it: {exc.reason}") from None
    except Exception as exc:  # unreachable server: one sentence, no traceback
        raise UsageError(f"--apply: cannot reach the cluster ({type(exc).__name__})") from None
    finally:
        kube.close()
