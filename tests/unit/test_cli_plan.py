"""`trainwright plan`, `models` and `gpus`: JSON contracts, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainwright.cli import main

GIB = 2**30


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    code = main(list(argv))
    captured = capsys.readouterr()
    document = json.loads(captured.out) if code == 0 and "-o" in argv else {}
    return code, document, captured.err


def test_plan_training_json_carries_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, plan, _ = _run(
        capsys,
        "plan",
        "training",
        "--model",
        "llama-3.1-8b",
        "--method",
        "qlora",
        "--gpu",
        "L4",
        "--gpus",
        "1",
        "--micro-batch",
        "1",
        "--gradient-checkpointing",
        "on",
        "--dataset-tokens",
        "20M",
        "-o",
        "json",
    )
    assert code == 0
    assert plan["model"] == "llama-3.1-8b" and plan["gpu"] == "L4" and plan["num_gpus"] == 1
    assert plan["fits"] is True
    assert plan["memory"]["per_gpu_bytes"] < plan["memory"]["capacity_bytes"]
    assert plan["cost"] == {
        "cloud": "aws",
        "usd_per_hour": 0.8048,
        "total_usd": pytest.approx(0.8048 * plan["duration_seconds"] / 3600, abs=0.01),
        "usd_per_gpu_hour": 0.8048,
        "price_as_of": "2024",
    }
    assert plan["duration_seconds"] == pytest.approx(
        20e6 / plan["throughput"]["tokens_per_second"], rel=1e-3
    )


def test_plan_training_without_gpu_recommends_and_ranks(capsys: pytest.CaptureFixture[str]) -> None:
    code, plan, _ = _run(
        capsys,
        "plan",
        "training",
        "--model",
        "meta-llama/Llama-3.1-70B",
        "--method",
        "lora",
        "--dataset-tokens",
        "100M",
        "--max-gpus",
        "16",
        "-o",
        "json",
    )
    assert code == 0
    assert plan["fits"] and plan["num_gpus"] <= 16
    assert plan["recommendations"] and all(alt["fits"] for alt in plan["recommendations"])
    assert plan["recommendations"][0]["recommendations"] == []


def test_plan_inference_json_carries_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, plan, _ = _run(
        capsys,
        "plan",
        "inference",
        "--model",
        "llama-3.1-8b",
        "--gpu",
        "H100-SXM",
        "--rps",
        "5",
        "--ttft-slo-ms",
        "500",
        "--itl-slo-ms",
        "50",
        "-o",
        "json",
    )
    assert code == 0
    assert plan["memory"]["kv_cache_bytes_per_token"] == 131_072
    assert set(plan["latency"]) >= {"ttft_seconds", "itl_seconds"}
    assert set(plan["throughput"]) >= {"output_tokens_per_second", "requests_per_second"}
    assert plan["throughput"]["requests_per_second"] == 5
    assert plan["latency"]["ttft_seconds"] <= 0.5 and plan["latency"]["itl_seconds"] <= 0.05
    assert plan["replicas"] >= 1 and plan["tensor_parallel"] == 1


def test_model_may_be_a_path_to_a_config_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    }
    folder = tmp_path / "tiny-qwen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    code, plan, _ = _run(
        capsys,
        "plan",
        "inference",
        "--model",
        str(folder),
        "--gpu",
        "L4",
        "--batch",
        "8",
        "-o",
        "json",
    )
    assert code == 0 and plan["model"] == "tiny-qwen"
    assert plan["memory"]["kv_cache_bytes_per_token"] == 2 * 24 * 2 * 64 * 2


def test_a_config_json_missing_a_field_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    code, _, err = _run(capsys, "plan", "inference", "--model", str(path), "-o", "json")
    assert code == 2
    assert "'num_attention_heads'" in err and err.count("\n") == 1


def test_price_file_overrides_the_catalog(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("aws:\n  H100-SXM: 6.88\n")
    code, plan, _ = _run(
        capsys,
        "plan",
        "training",
        "--model",
        "llama-3.1-8b",
        "--method",
        "lora",
        "--gpu",
        "H100-SXM",
        "--gpus",
        "8",
        "--prices",
        str(prices),
        "-o",
        "json",
    )
    assert code == 0 and plan["cost"]["usd_per_hour"] == pytest.approx(8 * 6.88)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["--model", "llama-3.1-7b", "--method", "lora"],
            "did you mean llama-3.1-70b, llama-3.1-8b",
        ),
        (
            ["--model", "llama-3.1-8b", "--method", "lora", "--gpu", "H100SXM", "--gpus", "1"],
            "unknown GPU 'H100SXM'; did you mean H100-SXM",
        ),
        (["--model", "llama-3.1-8b", "--method", "sft"], "argument --method: invalid choice"),
        (["--model", "llama-3.1-8b", "--method", "lora", "--precision", "int3"], "--precision"),
        (
            ["--model", "llama-3.1-8b", "--method", "lora", "--seq-len", "-5"],
            "--seq-len must be a positive integer",
        ),
        (
            ["--model", "llama-3.1-8b", "--method", "lora", "--dataset-tokens", "lots"],
            "--dataset-tokens must be a positive number of tokens",
        ),
        (
            ["--model", "t0-3b", "--method", "lora", "--lora-targets", "mlp"],
            "argument --lora-targets: invalid choice",
        ),
        (
            ["--model", "t0-3b", "--method", "lora", "--target-len", "0"],
            "--target-len must be a positive integer",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        code = main(["plan", "training", *argv, "-o", "json"])
        raise SystemExit(code)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert fragment in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.out == ""


def test_nothing_fits_exits_3_with_the_smallest_memory(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        capsys,
        "plan",
        "training",
        "--model",
        "llama-3.1-405b",
        "--method",
        "full",
        "--gpu-candidates",
        "L4,A10G",
        "--max-gpus",
        "8",
        "-o",
        "json",
    )
    assert code == 3
    assert "the smallest plan needs" in err and "GiB per GPU" in err


def test_models_and_gpus_list_the_catalogs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "-o", "json"]) == 0
    models = json.loads(capsys.readouterr().out)
    by_key = {m["key"]: m for m in models}
    assert by_key["mixtral-8x7b"]["active_params"] < by_key["mixtral-8x7b"]["params"]
    assert "meta-llama/Llama-3.1-8B" in by_key["llama-3.1-8b"]["aliases"]
    assert main(["gpus", "-o", "json"]) == 0
    gpus = {g["key"]: g for g in json.loads(capsys.readouterr().out)}
    assert gpus["H100-SXM"]["prices"]["aws"] == {
        "usd_per_gpu_hour": 12.29,
        "as_of": "2023-07..2025-06",
        "source": "AWS EC2 on-demand pricing page, us-east-1 (p5.48xlarge / 8)",
        "note": gpus["H100-SXM"]["prices"]["aws"]["note"],
    }
    assert "June 2025" in gpus["H100-SXM"]["prices"]["aws"]["note"]


def test_table_output_shows_fit_memory_speed_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "plan",
            "training",
            "--model",
            "llama-3.1-8b",
            "--method",
            "lora",
            "--gpu",
            "A10G",
            "--gpus",
            "1",
            "--dataset-tokens",
            "1M",
            "-o",
            "table",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for fragment in (
        "memory per GPU",
        "weights",
        "optimizer",
        "activations",
        "tokens/s",
        "$1.01/h",
    ):
        assert fragment in out


def test_exit_codes_from_a_real_process() -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trainwright.cli", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ok = run(
        "plan", "inference", "--model", "llama-3.1-8b", "--gpu", "L4", "--batch", "4", "-o", "json"
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["gpu"] == "L4"
    bad = run("plan", "inference", "--model", "llama-3.1-8b", "--rps", "0")
    assert bad.returncode == 2 and "--rps must be a positive number" in bad.stderr
    infeasible = run("plan", "inference", "--model", "llama-3.1-405b", "--gpu", "L4")
    assert infeasible.returncode == 3 and "GiB per GPU" in infeasible.stderr
    assert "Traceback" not in bad.stderr + infeasible.stderr


def test_an_explicit_plan_that_does_not_fit_prints_it_and_exits_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "plan",
            "training",
            "--model",
            "llama-3.1-70b",
            "--method",
            "full",
            "--gpu",
            "H100-SXM",
            "--gpus",
            "8",
            "-o",
            "json",
        ]
    )
    captured = capsys.readouterr()
    plan = json.loads(captured.out)
    assert code == 3
    assert plan["fits"] is False and plan["memory"]["per_gpu_bytes"] / GIB > 130
    assert plan["recommendations"][0]["num_gpus"] > 8 and plan["recommendations"][0]["fits"]
    assert "does not fit: it needs" in captured.err and captured.err.count("\n") == 1


def test_nodes_times_gpus_per_node_sets_the_world_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, plan, _ = _run(
        capsys,
        "plan",
        "training",
        "--model",
        "llama-3.1-8b",
        "--method",
        "lora",
        "--gpu",
        "H100-SXM",
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "-o",
        "json",
    )
    assert code == 0
    assert (plan["num_gpus"], plan["nodes"], plan["gpus_per_node"]) == (8, 2, 4)


def test_an_encoder_decoder_plan_takes_lora_targets_and_a_target_length(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["plan", "training", "--model", "bigscience/mt0-xxl", "--method", "lora"]
    argv += ["--gpu", "A100-80GB-SXM", "--gpus", "1", "--precision", "fp32", "--micro-batch", "8"]
    argv += ["--seq-len", "64", "--target-len", "4", "--lora-targets", "qv", "--lora-rank", "8"]
    argv += ["--gradient-checkpointing", "off", "-o", "json"]
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"] == "mt0-xxl" and plan["fits"] is True
    # 12.9e9 fp32 weights (48.1 GiB) plus 9.4e6 fp32 adapters.
    assert plan["memory"]["weights_bytes"] / 2**30 == pytest.approx(48.2, abs=0.1)
    assert plan["memory"]["logits_bytes"] == 8 * 4 * 250112 * 12


def test_a_memory_fraction_outside_zero_to_one_exits_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["plan", "training", "--model", "llama-3.1-8b", "--memory-fraction", "1.5"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "--memory-fraction must be in (0, 1]" in err
    assert "Traceback" not in err
