"""Export time and peak memory for a model of a few hundred MB (``make bench`` runs it).

The model is a randomly initialised Llama built from a transformers config
(hidden 1024, 12 layers, the tests' 512-token tokenizer: 155 M parameters, about
300 MiB in bf16) saved in 100 MB shards, with a rank-16 LoRA adapter on every linear layer. Each export
runs in a fresh process, which reports its own peak RSS (``VmHWM``):

The "export held" column is the peak RSS minus the RSS after a warm-up export of
the tests' tiny model in the same process (all libraries loaded).

* merge only (safetensors, no verification): the shard-by-shard merge; the goal
  is about one shard plus the adapter, far below the model's size;
* the whole export (safetensors + GGUF q8_0 + Ollama, with verification): the
  logits check loads the model in fp32 (4 bytes a parameter), so it needs about
  twice the bf16 model; the memory figure the export Job is sized by.

With llama.cpp's tools (``trainer-image/build_llama_cpp.sh``, ``$TRAINWRIGHT_LLAMA_CPP_BIN``)
it also exports q4_k_m and reports llama.cpp's greedy-token agreement.

Run: ``python benchmarks/bench_export.py [--layers 12]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "trainer-image"), str(ROOT / "tests")]

MIB = 1024**2
SHARD = "100MB"

_CHILD = textwrap.dedent(
    """
    import json, sys, time
    sys.path[:0] = {paths!r}
    from trainwright_trainer.export.config import ExportConfig
    from trainwright_trainer.export.run import run_export

    def status_kib(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    # A warm-up export of the tests' tiny model loads every library the export uses
    # (torch, transformers, peft, gguf and what they pull in), so what the big export
    # adds to the peak is the export's own memory.
    run_export(ExportConfig.model_validate({warmup!r}))
    warm_kib = status_kib("VmRSS")
    started = time.perf_counter()
    manifest = run_export(ExportConfig.model_validate({config!r}))
    seconds = time.perf_counter() - started
    print(json.dumps({{"seconds": seconds, "peak_kib": status_kib("VmHWM"),
                      "warm_kib": warm_kib, "manifest": manifest}}))
    """
)


def tiny_adapter(root: Path) -> tuple[Path, Path]:
    """The tests' tiny Llama and a LoRA adapter on it, for the warm-up export."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer_fixtures import build_tiny_model

    base = build_tiny_model(root / "tiny")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(base)), LoraConfig(r=4, lora_alpha=8)
    )
    model.save_pretrained(str(root / "tiny-adapter"))
    return base, root / "tiny-adapter"


def build(root: Path, layers: int) -> tuple[Path, Path, int]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer_fixtures import tiny_tokenizer

    config = LlamaConfig(
        vocab_size=512,  # the tests' tokenizer: greedy text is comparable with llama.cpp
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    base = root / "base"
    model.save_pretrained(str(base), max_shard_size=SHARD)
    tiny_tokenizer().save_pretrained(str(base))
    adapted = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.01)
    adapted.save_pretrained(str(root / "adapter"))
    return base, root / "adapter", params


def run(config: dict[str, object], warmup: dict[str, object]) -> dict[str, object]:
    paths = [str(ROOT / "trainer-image"), str(ROOT / "operator")]
    code = _CHILD.format(paths=paths, config=config, warmup=warmup)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"export failed:\n{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainwright-bench-export-") as tmp:
        root = Path(tmp)
        base, adapter, params = build(root, args.layers)
        shards = sorted(base.glob("*.safetensors"))
        largest = max(p.stat().st_size for p in shards)
        print(
            f"model: {params / 1e6:.0f} M parameters, {_bytes(base) / MIB:.0f} MiB bf16 in "
            f"{len(shards)} shards (largest {largest / MIB:.0f} MiB); adapter "
            f"{_bytes(adapter) / MIB:.1f} MiB"
        )
        common = {"source": str(adapter), "base": str(base), "maxShardBytes": 100 * 10**6}
        cases = {
            "merge only (safetensors, no verification)": {
                **common,
                "formats": ["safetensors"],
                "verify": False,
                "output": str(root / "merge"),
            },
            "full export (safetensors, adapter, gguf q8_0, ollama; verified)": {
                **common,
                "formats": ["safetensors", "adapter", "gguf", "ollama"],
                "quantization": "q8_0",
                "output": str(root / "full"),
            },
        }
        from trainwright_trainer.export.llama_cpp import tool

        if tool("llama-quantize") is not None:
            cases["gguf q4_k_m by llama-quantize (verified)"] = {
                **common,
                "formats": ["gguf"],
                "quantization": "q4_k_m",
                "output": str(root / "kquant"),
            }
        tiny_base, tiny = tiny_adapter(root)
        print(f"{'case':<66} {'seconds':>8} {'peak RSS':>10} {'export held':>12}")
        for i, (label, config) in enumerate(cases.items()):
            warmup = {
                "source": str(tiny),
                "base": str(tiny_base),
                "formats": config["formats"],
                "output": str(root / f"warmup-{i}"),
            }
            result = run(config, warmup)
            peak = int(result["peak_kib"]) * 1024  # type: ignore[call-overload]
            held = peak - int(result["warm_kib"]) * 1024  # type: ignore[call-overload]
            seconds = float(result["seconds"])  # type: ignore[arg-type]
            print(f"{label:<66} {seconds:>8.1f} {peak / MIB:>7.0f} MiB {held / MIB:>8.0f} MiB")
            manifest = result["manifest"]
            assert isinstance(manifest, dict)
            sizes = ", ".join(
                f"{a['format']} {a['size_bytes'] / MIB:.0f} MiB" for a in manifest["artifacts"]
            )
            print(f"  sizes: {sizes}")
            logits = manifest["verification"].get("logits")
            if logits:
                print(
                    f"  logits vs adapter-applied model ({logits['stored_dtype']}): max abs diff "
                    f"{logits['max_abs_logit_diff']:.3g}, relative {logits['relative_diff']:.3g} "
                    f"(tolerance {logits['tolerance_relative']:g}), same greedy tokens: "
                    f"{logits['same_greedy_tokens']}"
                )
            greedy = manifest["verification"].get("llama_cpp_greedy")
            if isinstance(greedy, dict):
                print(
                    f"  llama.cpp greedy continuation of the f16 GGUF equals the merged model's: "
                    f"{greedy['ok']} ({greedy['llama_cpp']!r} vs {greedy['hugging_face']!r})"
                )
            elif greedy:
                print(f"  llama.cpp greedy check: {greedy}")
            check = manifest["verification"].get("gguf")
            if check:
                print(
                    f"  gguf: ok={check['ok']}, relative RMS error by type "
                    f"{check['relative_rms_error_by_type']}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
