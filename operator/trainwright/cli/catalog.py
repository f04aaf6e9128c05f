"""``trainwright models`` and ``trainwright gpus``: the planner's catalogs."""

from __future__ import annotations

import argparse
from typing import Any

from trainwright.cli._common import add_output_flag, emit, format_table
from trainwright.cli.plan import quiet_pydantic_plugins


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = subparsers.add_parser(
        "models",
        help="list the model catalog (architectures, parameters, aliases, sources)",
        description="List the models the planner knows, with their Hugging Face aliases.",
    )
    add_output_flag(models)
    models.set_defaults(handler=run_models)
    gpus = subparsers.add_parser(
        "gpus",
        help="list the GPU catalog (memory, bandwidth, TFLOPS, prices)",
        description="List the GPUs the planner knows, with datasheet figures and dated prices.",
    )
    add_output_flag(gpus)
    gpus.set_defaults(handler=run_gpus)


def models_document() -> list[dict[str, Any]]:
    from trainwright.planner import list_models

    return [
        {
            "key": m.key,
            "name": m.display_name,
            "family": m.family,
            "params": m.total_params,
            "active_params": m.active_params,
            "layers": m.num_layers,
            "hidden_size": m.hidden_size,
            "heads": m.num_heads,
            "kv_heads": m.num_kv_heads,
            "head_dim": m.head_dim,
            "ffn_size": m.ffn_size,
            "vocab_size": m.vocab_size,
            "experts": m.num_experts,
            "experts_per_token": m.experts_per_token,
            "max_seq_len": m.max_seq_len,
            "aliases": list(m.aliases),
            "source": m.source,
        }
        for m in list_models()
    ]


def gpus_document() -> list[dict[str, Any]]:
    from trainwright.planner import CLOUDS, list_gpus, price_for

    documents = []
    for g in list_gpus():
        prices = {}
        for cloud in CLOUDS:
            price = price_for(g.key, cloud)
            if price is not None:
                prices[cloud] = {
                    "usd_per_gpu_hour": price.usd_per_gpu_hour,
                    "as_of": price.as_of,
                    "source": price.source,
                    "note": price.note,
                }
        documents.append(
            {
                "key": g.key,
                "name": g.display_name,
                "memory_bytes": g.memory_bytes,
                "memory_bandwidth_bytes_per_second": g.memory_bandwidth_bytes_per_second,
                "bf16_flops_per_second": g.bf16_flops_per_second,
                "fp8_flops_per_second": g.fp8_flops_per_second,
                "interconnect": g.interconnect,
                "intra_node_bytes_per_second": g.intra_node_bytes_per_second,
                "inter_node_bytes_per_second": g.inter_node_bytes_per_second,
                "product_labels": list(g.product_labels),
                "aliases": list(g.aliases),
                "prices": prices,
                "source": g.source,
            }
        )
    return documents


def render_models(document: list[dict[str, Any]]) -> str:
    rows = [
        (
            m["key"],
            f"{m['params'] / 1e9:.2f}",
            f"{m['active_params'] / 1e9:.2f}",
            m["layers"],
            m["hidden_size"],
            f"{m['heads']}/{m['kv_heads']}",
            m["vocab_size"],
            m["aliases"][0] if m["aliases"] else "",
        )
        for m in document
    ]
    headers = ("KEY", "PARAMS(B)", "ACTIVE(B)", "LAYERS", "HIDDEN", "HEADS/KV", "VOCAB", "HF ID")
    return format_table(headers, rows)


def render_gpus(document: list[dict[str, Any]]) -> str:
    from trainwright.vocabulary import CLOUDS as clouds

    rows = []
    for g in document:
        fp8 = g["fp8_flops_per_second"]
        rows.append(
            (
                g["key"],
                f"{g['memory_bytes'] / 2**30:.1f}",
                f"{g['memory_bandwidth_bytes_per_second'] / 1e12:.2f}",
                f"{g['bf16_flops_per_second'] / 1e12:.0f}",
                "-" if fp8 is None else f"{fp8 / 1e12:.0f}",
                g["interconnect"],
                *(
                    f"{g['prices'][c]['usd_per_gpu_hour']:.2f}" if c in g["prices"] else "-"
                    for c in clouds
                ),
            )
        )
    headers = (
        "KEY",
        "GIB",
        "TB/S",
        "BF16 TF",
        "FP8 TF",
        "INTERCONNECT",
        *(c.upper() for c in clouds),
    )
    return format_table(headers, rows) + "prices: USD per GPU-hour, on-demand; dates in -o json\n"


def run_models(args: argparse.Namespace) -> int:
    quiet_pydantic_plugins()
    emit(models_document(), args.output, render_models)
    return 0


def run_gpus(args: argparse.Namespace) -> int:
    quiet_pydantic_plugins()
    emit(gpus_document(), args.output, render_gpus)
    return 0
