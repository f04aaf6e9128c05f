"""``trainwright plan training|inference``: size GPUs for fine-tuning or serving.

Reads what the planner must not (a ``config.json`` given as ``--model``, a
``--prices`` file), turns flags into a request, and prints the plan as a table,
JSON or YAML. Exit codes: 0 a plan, 2 bad input, 3 nothing fits (the message
gives the smallest per-GPU memory any configuration needs).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwright.cli._common import (
    CliError,
    UsageError,
    add_carbon_flags,
    add_output_flag,
    emit,
    format_table,
    positive_float,
    positive_int,
)
from trainwright.vocabulary import (
    CLOUDS,
    INFERENCE_PRECISIONS,
    METHOD_CHOICES,
    PLANNER_OPTIMIZERS,
    STRATEGY_CHOICES,
    TRAINING_PRECISIONS,
    USE_CASES,
)

if TYPE_CHECKING:
    from trainwright.planner import ModelSpec, Price, TrainingPlan
    from trainwright.planner.calibration import Calibration

_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}

_EPILOG = """\
examples:
  trainwright plan training --model llama-3.1-8b --method qlora --gpu L4 --gpus 1
  trainwright plan training --model meta-llama/Llama-3.1-70B --method full \\
      --dataset-tokens 2B --deadline-seconds 86400
  trainwright plan inference --model llama-3.1-8b --rps 20 --ttft-slo-ms 500 --itl-slo-ms 50

--model takes a catalog key (trainwright models), a Hugging Face id the catalog
knows, or a path to a config.json (or a directory holding one).
exit codes: 0 ok, 2 bad input, 3 nothing fits.
"""


def quiet_pydantic_plugins() -> None:
    """Skip pydantic's plugin discovery, which scans every installed distribution's
    entry points (~0.1-0.3 s in a venv with torch); ``plan`` must start in under 1 s."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


class InfeasibleExit(CliError):
    """Nothing fits: exit 3 with the smallest per-GPU memory needed."""

    exit_code = 3


def token_count(flag: str) -> Any:
    """Positive integers with an optional k/M/B/T suffix (``2B`` = 2,000,000,000)."""

    def parse(text: str) -> int:
        cleaned = text.strip().replace("_", "").replace(",", "")
        scale = _SUFFIXES.get(cleaned[-1:].lower(), 1)
        number = cleaned[:-1] if scale != 1 else cleaned
        try:
            value = float(number) * scale
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a positive number of tokens such as 20000000 or 20M, got {text!r}"
            ) from None
        if not value >= 1 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number, got {text!r}")
        return int(value)

    return parse


def fraction(flag: str) -> Any:
    def parse(text: str) -> float:
        value = positive_float(flag)(text)
        if value > 1:
            raise argparse.ArgumentTypeError(f"{flag} must be in (0, 1], got {text!r}")
        return value

    return parse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="size GPUs, memory, speed and cost for fine-tuning or serving",
        description="Plan GPUs for fine-tuning (training) or serving (inference) an LLM.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="plan_kind", metavar="KIND", required=True)
    _register_training(kinds)
    _register_inference(kinds)


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M", help="catalog key, HF id or path")
    parser.add_argument("--gpu", metavar="G", help="catalog GPU key; omit to search all")
    parser.add_argument("--cloud", choices=CLOUDS, default="aws", help="price list (default aws)")
    parser.add_argument(
        "--gpu-candidates",
        metavar="G,G",
        help="restrict the search to these GPU keys (comma-separated)",
    )
    parser.add_argument("--prices", metavar="FILE", help="YAML/JSON {cloud: {gpu: usd_per_hour}}")
    parser.add_argument(
        "--calibration",
        metavar="FILE",
        help="observed runs (JSON/YAML, CONTRACTS.md's calibration format) that correct "
        "plans of the same shape",
    )
    parser.add_argument(
        "--calibration-mode",
        choices=("apply", "show"),
        default="apply",
        help="apply the observed factors (default), or only show what they would be",
    )
    add_output_flag(parser)


def _register_training(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser(
        "training",
        help="fine-tuning memory, throughput, duration and cost",
        description="Plan a fine-tuning run; without --gpu, find the cheapest plan that fits.",
    )
    _common_flags(parser)
    parser.add_argument(
        "--method",
        required=True,
        choices=METHOD_CHOICES,
        help="auto: lora when 16-bit LoRA fits the GPUs searched, else qlora",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--gpus", type=positive_int("--gpus"), metavar="N", help="GPUs in all")
    size.add_argument("--nodes", type=positive_int("--nodes"), metavar="N")
    parser.add_argument("--gpus-per-node", type=positive_int("--gpus-per-node"), metavar="G")
    parser.add_argument("--strategy", choices=STRATEGY_CHOICES, default="auto")
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS, default="bf16")
    parser.add_argument("--micro-batch", type=positive_int("--micro-batch"), metavar="B")
    parser.add_argument("--global-batch-size", type=positive_int("--global-batch-size"))
    parser.add_argument(
        "--profile",
        choices=USE_CASES,
        help=(
            "use case whose defaults (and reasons) fill --seq-len, --lora-rank and --epochs "
            "(for --dataset-tokens) and show the learning rate for the plan's batch"
        ),
    )
    # Unset: the profile's value, else the planner's default (2048, 16 and 1).
    parser.add_argument("--seq-len", type=positive_int("--seq-len"), metavar="S")
    parser.add_argument(
        "--gradient-checkpointing", choices=("auto", "on", "off", "selective"), default="auto"
    )
    parser.add_argument(
        "--optimizer",
        choices=PLANNER_OPTIMIZERS,
        default="adamw",
    )
    parser.add_argument("--lora-rank", type=positive_int("--lora-rank"), metavar="R")
    parser.add_argument(
        "--lora-targets",
        choices=("all", "qkv", "qv"),
        default="all",
        help="linears with adapters: all (default), qkv (attention q, k, v) or qv (query, value)",
    )
    parser.add_argument(
        "--target-len",
        type=positive_int("--target-len"),
        metavar="T",
        help="decoder tokens per sequence of an encoder-decoder (default: --seq-len)",
    )
    parser.add_argument("--dataset-tokens", type=token_count("--dataset-tokens"), metavar="T")
    parser.add_argument("--epochs", type=positive_float("--epochs"), metavar="E")
    parser.add_argument("--tensor-parallel", type=positive_int("--tensor-parallel"), default=1)
    parser.add_argument("--pipeline-parallel", type=positive_int("--pipeline-parallel"), default=1)
    parser.add_argument(
        "--pipeline-interleave",
        type=positive_int("--pipeline-interleave"),
        default=1,
        help="virtual pipeline stages per GPU (Megatron interleaved schedule)",
    )
    parser.add_argument(
        "--sequence-parallel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Megatron sequence parallelism (default: on when --tensor-parallel > 1)",
    )
    parser.add_argument("--deadline-seconds", type=positive_float("--deadline-seconds"))
    parser.add_argument("--max-gpus", type=positive_int("--max-gpus"))
    parser.add_argument("--max-cost-usd", type=positive_float("--max-cost-usd"))
    parser.add_argument(
        "--framework",
        choices=("hf", "torchtune", "megatron"),
        default="hf",
        help="training stack whose memory and speed to model (default hf: Transformers + "
        "PEFT, what Trainwright's trainer runs)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile (fewer activations)")
    parser.add_argument(
        "--no-flash-attention",
        dest="flash_attention",
        action="store_false",
        help="eager attention that stores the s x s scores",
    )
    parser.add_argument("--cpu-offload", action="store_true", help="offload states to host RAM")
    parser.add_argument(
        "--optimizer-in-backward",
        action="store_true",
        help="step each parameter during backward (no full gradient buffer)",
    )
    parser.add_argument(
        "--fp32-gradients", action="store_true", help="accumulate gradients in fp32 (Megatron)"
    )
    parser.add_argument(
        "--mfu",
        type=fraction("--mfu"),
        metavar="U",
        help="override the hardware FLOPs utilization (0-1)",
    )
    parser.add_argument(
        "--memory-fraction",
        type=fraction("--memory-fraction"),
        default=1.0,
        metavar="F",
        help="share of each GPU's memory a plan may fill (0-1; default 1): leave headroom",
    )
    add_carbon_flags(parser.add_argument_group('energy and carbon (the plan\'s "carbon" key)'))
    parser.set_defaults(handler=run_training)


def _register_inference(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser(
        "inference",
        help="serving memory, latency, replicas and cost",
        description="Plan serving; without --gpu, find the cheapest GPU, TP and replicas.",
    )
    _common_flags(parser)
    parser.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="bf16")
    parser.add_argument("--tensor-parallel", type=positive_int("--tensor-parallel"), metavar="N")
    parser.add_argument("--prompt-tokens", type=positive_int("--prompt-tokens"), default=512)
    parser.add_argument("--output-tokens", type=positive_int("--output-tokens"), default=256)
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--batch", type=positive_int("--batch"), metavar="B")
    load.add_argument("--rps", type=positive_float("--rps"), metavar="R", help="requests/s")
    parser.add_argument("--ttft-slo-ms", type=positive_float("--ttft-slo-ms"), metavar="X")
    parser.add_argument("--itl-slo-ms", type=positive_float("--itl-slo-ms"), metavar="Y")
    parser.add_argument(
        "--gpu-memory-utilization",
        type=fraction("--gpu-memory-utilization"),
        default=0.9,
        help="share of GPU memory the engine may use (vLLM default 0.9)",
    )
    parser.add_argument(
        "--quant-group-size",
        type=positive_int("--quant-group-size"),
        default=128,
        help="int4 weights per scale (AWQ/GPTQ 128, gpt-fast 32)",
    )
    parser.set_defaults(handler=run_inference)


def load_model(value: str) -> str | ModelSpec:
    """A catalog name stays a string; a path to a config.json becomes a ModelSpec."""
    path = Path(value)
    if path.is_dir():
        path = path / "config.json"
    elif not (path.suffix == ".json" or path.exists()):
        return value
    from trainwright.planner import PlannerError, model_from_hf_config

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--model: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--model: {path} is not valid JSON ({exc.msg}, line {exc.lineno})"
        ) from None
    if not isinstance(config, dict):
        raise UsageError(f"--model: {path} must hold a JSON object")
    name = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    try:
        return model_from_hf_config(config, name=name)
    except PlannerError as exc:
        raise UsageError(f"--model {path}: {exc}") from None


def load_prices(value: str | None) -> tuple[Price, ...] | None:
    """Parse a --prices file (JSON, or YAML) into price overrides."""
    if value is None:
        return None
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--prices: cannot read {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, ImportError) as exc:
        raise UsageError(f"--prices: {path} is not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--prices: {path} must map clouds to {{gpu: usd_per_gpu_hour}}")
    from trainwright.planner import PlannerError, prices_from_mapping

    try:
        return prices_from_mapping(data)
    except PlannerError as exc:
        raise UsageError(f"--prices {path}: {exc}") from None


def load_calibration(value: str | None, mode: str) -> Calibration | None:
    """Parse a --calibration file; a bad one exits 2 naming the file and the field."""
    if value is None:
        return None
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"--calibration: cannot read calibration file {path}: {exc.strerror or exc}"
        ) from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--calibration: {path} is not valid JSON/YAML: {first}") from None
    from trainwright.planner.calibration import CalibrationError, parse_calibration

    try:
        return parse_calibration(data, source=str(path), enabled=mode == "apply")
    except CalibrationError as exc:
        raise UsageError(f"--calibration: calibration file {exc}") from None


def _candidates(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def run_training(args: argparse.Namespace) -> int:
    quiet_pydantic_plugins()
    from trainwright.planner import TrainingRequest, plan_training

    fields = {
        "model": load_model(args.model),
        "method": args.method,
        "gpu": args.gpu,
        "num_gpus": args.gpus,
        "nodes": args.nodes,
        "gpus_per_node": args.gpus_per_node,
        "strategy": args.strategy,
        "precision": args.precision,
        "micro_batch": args.micro_batch,
        "global_batch_size": args.global_batch_size,
        "seq_len": args.seq_len,
        "gradient_checkpointing": args.gradient_checkpointing,
        "optimizer": args.optimizer,
        "lora_rank": args.lora_rank,
        "lora_targets": args.lora_targets,
        "target_len": args.target_len,
        "dataset_tokens": args.dataset_tokens,
        "epochs": args.epochs,
        "cloud": args.cloud,
        "tensor_parallel": args.tensor_parallel,
        "pipeline_parallel": args.pipeline_parallel,
        "pipeline_interleave": args.pipeline_interleave,
        "sequence_parallel": args.sequence_parallel,
        "deadline_seconds": args.deadline_seconds,
        "max_gpus": args.max_gpus,
        "max_cost_usd": args.max_cost_usd,
        "gpu_candidates": _candidates(args.gpu_candidates),
        "prices": load_prices(args.prices),
        "framework": args.framework,
        "flash_attention": args.flash_attention,
        "compile": args.compile,
        "cpu_offload": args.cpu_offload,
        "optimizer_in_backward": args.optimizer_in_backward,
        "fp32_gradients": args.fp32_gradients,
        "utilization": args.mfu,
        "memory_fraction": args.memory_fraction,
        "calibration": load_calibration(args.calibration, args.calibration_mode),
    }
    if args.gpus_per_node and not (args.nodes or args.gpus):
        raise UsageError("--gpus-per-node needs --nodes (or use --gpus N)")
    epochs_given = args.epochs is not None
    _apply_profile(args.profile, fields)
    plan = _run(lambda: plan_training(TrainingRequest(**fields)))
    document = plan.to_contract()
    document["carbon"] = _carbon(plan, args)
    if args.profile is not None:
        document["profile"] = profile_document(
            args.profile, plan, dataset_tokens=args.dataset_tokens if not epochs_given else None
        )
    emit(document, args.output, render_training)
    if not plan.fits:
        raise InfeasibleExit(
            f"{plan.model} {plan.method} on {plan.num_gpus}x {plan.gpu} does not fit: it needs "
            f"{plan.memory.per_gpu_bytes / 2**30:.1f} GiB per GPU of "
            f"{plan.memory.capacity_bytes / 2**30:.1f} GiB"
        )
    return 0


def _carbon(plan: TrainingPlan, args: argparse.Namespace) -> dict[str, Any] | None:
    """The whole run's energy and CO2e (trainwright.planner.carbon); None without a duration."""
    from trainwright.planner import PlannerError
    from trainwright.planner.carbon import training_plan_carbon

    try:
        estimate = training_plan_carbon(
            plan, location=args.region, g_co2e_per_kwh=args.grid_intensity, pue=args.pue
        )
    except PlannerError as exc:
        flag = "--pue" if "pue" in str(exc) else "--region"
        raise UsageError(f"{flag}: {exc}") from None
    return estimate.model_dump(mode="json") if estimate is not None else None


def run_inference(args: argparse.Namespace) -> int:
    quiet_pydantic_plugins()
    from trainwright.planner import InferenceRequest, plan_inference

    fields = {
        "model": load_model(args.model),
        "gpu": args.gpu,
        "precision": args.precision,
        "tensor_parallel": args.tensor_parallel,
        "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens,
        "batch": args.batch,
        "rps": args.rps,
        "ttft_slo_ms": args.ttft_slo_ms,
        "itl_slo_ms": args.itl_slo_ms,
        "cloud": args.cloud,
        "gpu_candidates": _candidates(args.gpu_candidates),
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "quant_group_size": args.quant_group_size,
        "prices": load_prices(args.prices),
        "calibration": load_calibration(args.calibration, args.calibration_mode),
    }
    plan = _run(lambda: plan_inference(InferenceRequest(**fields)))
    emit(plan.to_contract(), args.output, render_inference)
    return 0


def _run(make_plan: Any) -> Any:
    """Call the planner, turning its errors into one-line exits (2 bad input, 3 infeasible)."""
    from pydantic import ValidationError

    from trainwright.planner import InfeasibleError, PlannerError

    try:
        return make_plan()
    except InfeasibleError as exc:
        raise InfeasibleExit(str(exc)) from None
    except PlannerError as exc:
        raise UsageError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:
            raise UsageError(message) from None
        field = "--" + str(first["loc"][0]).replace("_", "-")
        raise UsageError(f"{field}: {message}") from None


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (give --dataset-tokens)"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _as_of(cost: dict[str, Any]) -> str:
    return f" (price as of {cost['price_as_of']})" if cost.get("price_as_of") else ""


def _apply_profile(name: str | None, fields: dict[str, Any]) -> None:
    """Fill the unset --seq-len, --lora-rank and --epochs from the profile (flags win);
    epochs follow --dataset-tokens."""
    from trainwright.planner.profiles import get_profile, resolved_defaults

    profile = get_profile(name) if name is not None else None
    if profile is not None:
        defaults = resolved_defaults(profile, dataset_tokens=fields["dataset_tokens"])
        for field, key in (
            ("seq_len", "seq_len"),
            ("lora_rank", "lora_rank"),
            ("epochs", "epochs"),
        ):
            if fields[field] is None:
                fields[field] = defaults[key].value
    for field in ("seq_len", "lora_rank", "epochs"):
        if fields[field] is None:
            del fields[field]  # the planner's own default


def profile_document(
    name: str, plan: TrainingPlan, *, dataset_tokens: int | None = None
) -> dict[str, Any]:
    """The profile's defaults and reasons as this plan resolves them: epochs for
    ``dataset_tokens``, the learning rate for the plan's sequences per optimizer step."""
    from trainwright.planner.profiles import get_profile, resolved_defaults

    data_parallel = plan.num_gpus // (plan.tensor_parallel * plan.pipeline_parallel)
    batch = plan.micro_batch * plan.gradient_accumulation * data_parallel
    profile = get_profile(name)
    defaults = resolved_defaults(
        profile, dataset_tokens=dataset_tokens, effective_batch_sequences=batch
    )
    document = profile.to_json(defaults)
    document["effective_batch_sequences"] = batch
    return document


def render_training(plan: dict[str, Any]) -> str:
    """The plan a person reads at a glance: fit, memory breakdown, speed, duration, cost."""
    memory = plan["memory"]
    fit = "fits" if plan["fits"] else "DOES NOT FIT"
    lines = [
        f"{plan['model']} {plan['method']} on {plan['num_gpus']}x {plan['gpu']} "
        f"({plan['nodes']} node(s) x {plan['gpus_per_node']}), strategy {plan['strategy']}, "
        f"TP {plan['tensor_parallel']} PP {plan['pipeline_parallel']}",
        f"micro-batch {plan['micro_batch']} x grad-accum {plan['gradient_accumulation']} "
        f"x seq {plan['seq_len']}, gradient checkpointing {plan['gradient_checkpointing']}",
        f"memory per GPU: {_gib(memory['per_gpu_bytes'])} of {_gib(memory['capacity_bytes'])} "
        f"GiB: {fit}",
    ]
    rows = [
        ("weights", _gib(memory["weights_bytes"])),
        ("gradients", _gib(memory["gradients_bytes"])),
        ("optimizer", _gib(memory["optimizer_bytes"])),
        ("activations", _gib(memory["activations_bytes"])),
        ("  of which logits", _gib(memory["logits_bytes"])),
        ("other", _gib(memory["other_bytes"])),
    ]
    if memory.get("overlap_bytes"):
        rows.append(("gradients reuse freed activations", "-" + _gib(memory["overlap_bytes"])))
    lines += ["  " + line for line in format_table(("PART", "GiB"), rows).splitlines()]
    throughput, cost = plan["throughput"], plan["cost"]
    lines.append(
        f"throughput: {throughput['tokens_per_second']:,.0f} tokens/s, MFU {throughput['mfu']:.1%}"
    )
    lines.append(f"duration: {_duration(plan['duration_seconds'])}")
    lines += _calibration_lines(plan.get("calibration"))
    lines.append(
        f"cost: {_money(cost['usd_per_hour'])}/h on {cost['cloud']}{_as_of(cost)}, "
        f"total {_money(cost['total_usd'])}"
    )
    lines += _carbon_lines(plan.get("carbon"))
    if plan["recommendations"]:
        lines.append("alternatives (best first):")
        alternatives = [
            (
                alt["gpu"],
                alt["num_gpus"],
                alt["strategy"],
                alt["micro_batch"],
                alt["gradient_checkpointing"],
                _gib(alt["memory"]["per_gpu_bytes"]),
                f"{alt['throughput']['tokens_per_second']:,.0f}",
                _money(alt["cost"]["usd_per_hour"]),
                _money(alt["cost"]["total_usd"]),
            )
            for alt in plan["recommendations"]
        ]
        headers = ("GPU", "GPUS", "STRATEGY", "MB", "CKPT", "GIB/GPU", "TOK/S", "$/H", "TOTAL")
        lines += ["  " + line for line in format_table(headers, alternatives).splitlines()]
    if plan.get("method_reason"):
        lines.append(plan["method_reason"])
    lines += [f"warning: {warning}" for warning in plan["warnings"]]
    lines += _profile_lines(plan.get("profile"))
    return "\n".join(lines) + "\n"


def _carbon_lines(carbon: dict[str, Any] | None) -> list[str]:
    if not carbon:
        return []
    return [
        f"carbon: {carbon['kg_co2e']:.3g} kg CO2e, {carbon['energy_kwh']:.3g} kWh "
        f"({carbon['gpu_hours']:.3g} GPU-hours at ~{carbon['gpu_watts']:.0f} W, PUE "
        f"{carbon['pue']:g}) at {carbon['g_co2e_per_kwh']:.0f} g/kWh in {carbon['zone']} "
        f"({carbon['intensity_source']}, {carbon['intensity_year']})"
    ]


def _profile_lines(profile: dict[str, Any] | None) -> list[str]:
    """The profile's defaults, one a line with its reason."""
    if profile is None:
        return []
    rows = [(name, d["value"], d["reason"]) for name, d in profile["defaults"].items()]
    lines = [f"profile {profile['name']} ({profile['description']}); fields you set win:"]
    return lines + [
        "  " + line for line in format_table(("FIELD", "VALUE", "WHY"), rows).splitlines()
    ]


def _calibration_lines(calibration: dict[str, Any] | None) -> list[str]:
    """One line: how many observations of this plan's shape moved it, and by how much."""
    if calibration is None:
        return []
    shape = ", ".join(calibration["shape"].values())
    if not calibration["observations"]:
        return [
            f"calibration: no observations of this shape ({shape}) among "
            f"{calibration['available']} in {calibration['source']}; the physics alone"
        ]
    state = "applied" if calibration["applied"] else "not applied (--calibration-mode show)"
    capped = ", capped at the roofline" if calibration["roofline_capped"] else ""
    return [
        f"calibration: {calibration['observations']} observation(s) of this shape ({shape}): "
        f"throughput x{calibration['throughput_factor']:.2f}{capped}, memory "
        f"x{calibration['memory_factor']:.2f}, {state}"
    ]


def render_inference(plan: dict[str, Any]) -> str:
    memory, latency = plan["memory"], plan["latency"]
    throughput, cost = plan["throughput"], plan["cost"]
    lines = [
        f"{plan['model']} {plan['precision']} on {plan['replicas']} replica(s) x "
        f"{plan['tensor_parallel']}x {plan['gpu']} (TP {plan['tensor_parallel']}), "
        f"batch {plan['batch']}",
        f"memory per GPU: {_gib(memory['per_gpu_bytes'])} of {_gib(memory['capacity_bytes'])} "
        f"GiB; weights {_gib(memory['weights_bytes'])} GiB in all; KV cache "
        f"{memory['kv_cache_bytes_per_token']:,} bytes/token; up to "
        f"{memory['max_concurrent_sequences']} concurrent sequences",
        f"latency: TTFT p50 {latency['ttft_p50_seconds'] * 1000:.0f} ms, p95 "
        f"{latency['ttft_p95_seconds'] * 1000:.0f} ms (prefill "
        f"{latency['prefill_seconds'] * 1000:.0f} ms + p95 queue wait "
        f"{latency['queue_wait_p95_seconds'] * 1000:.0f} ms); ITL mean "
        f"{latency['itl_seconds'] * 1000:.1f} ms, p50 {latency['itl_p50_seconds'] * 1000:.1f} "
        f"ms, p95 {latency['itl_p95_seconds'] * 1000:.1f} ms",
        f"throughput: {throughput['output_tokens_per_second']:,.0f} output tokens/s, "
        f"{throughput['requests_per_second']:.2f} requests/s; one replica sustains "
        f"{throughput['replica_capacity_output_tokens_per_second']:,.0f} tokens/s at batch "
        f"{plan['batch']}, {throughput['headroom']:.0%} headroom",
        f"cost: {_money(cost['usd_per_hour'])}/h on {cost['cloud']}{_as_of(cost)}, "
        f"{_money(cost['usd_per_million_tokens'])} per million output tokens",
        *_calibration_lines(plan.get("calibration")),
    ]
    if plan["recommendations"]:
        lines.append("alternatives (best first):")
        rows = [
            (
                alt["gpu"],
                alt["tensor_parallel"],
                alt["replicas"],
                alt["batch"],
                f"{alt['latency']['ttft_seconds'] * 1000:.0f}",
                f"{alt['latency']['itl_seconds'] * 1000:.1f}",
                _money(alt["cost"]["usd_per_hour"]),
                _money(alt["cost"]["usd_per_million_tokens"]),
            )
            for alt in plan["recommendations"]
        ]
        headers = ("GPU", "TP", "REPLICAS", "BATCH", "TTFT MS", "ITL MS", "$/H", "$/M TOK")
        lines += ["  " + line for line in format_table(headers, rows).splitlines()]
    lines += [f"warning: {warning}" for warning in plan["warnings"]]
    return "\n".join(lines) + "\n"
