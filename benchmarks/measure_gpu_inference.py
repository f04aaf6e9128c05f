"""Measure prefill latency (time to first token) on a real GPU, to check the planner.

Randomly initialized models of the catalog's shapes (no weights or network needed),
Hugging Face transformers with SDPA in bf16, one prompt at a time, computing only the
last position's logits as serving engines do. Prints one JSON line per case with the
median of 10 timed forwards after 3 warm-ups. Eager PyTorch pays a CPU launch cost per
kernel, so short prompts measure the framework more than the GPU; long prompts are the
compute-bound regime the planner's prefill model describes.

Run on a CUDA machine: ``python3 benchmarks/measure_gpu_inference.py > out.jsonl``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

SHAPES = {
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
    ),
}
CASES = [
    ("llama-3.1-8b", 512),
    ("llama-3.1-8b", 2048),
    ("llama-3.1-8b", 8192),
    ("llama-3.1-8b", 16384),
    ("qwen2.5-7b", 2048),
    ("qwen2.5-7b", 8192),
]


def main() -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    models = {}
    for name, shape in SHAPES.items():
        qwen = name.startswith("qwen")
        config_cls = Qwen2Config if qwen else LlamaConfig
        model_cls = Qwen2ForCausalLM if qwen else LlamaForCausalLM
        config = config_cls(**shape, max_position_embeddings=131072, attn_implementation="sdpa")
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            models[name] = model_cls(config).eval()
        torch.set_default_dtype(torch.float32)
    for name, prompt in CASES:
        model = models[name]
        tokens = torch.randint(0, SHAPES[name]["vocab_size"], (1, prompt), device="cuda")
        samples = []
        with torch.no_grad():
            for attempt in range(13):
                torch.cuda.synchronize()
                started = time.perf_counter()
                model(input_ids=tokens, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                if attempt >= 3:
                    samples.append(time.perf_counter() - started)
        line = {
            "model": name,
            "prompt_tokens": prompt,
            "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "prefill_seconds": statistics.median(samples),
        }
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
