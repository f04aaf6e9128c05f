"""Measure fp32 PEFT fine-tuning peak memory on a real GPU (the PEFT README's setting).

Builds randomly initialized T5 v1.1 / mT5 / BLOOM models of the planner's catalog
shapes (no weights or network needed) directly on the GPU in fp32, adds LoRA r=8
(alpha 32, dropout 0.1) on PEFT's default targets (T5: q, v; BLOOM: query_key_value),
and runs three AdamW steps on batch 8: 64 source tokens and 4 target tokens for the
encoder-decoders, 64 tokens for BLOOM, as the PEFT example scripts on twitter_complaints.
Prints one JSON line per configuration with ``max_memory_allocated`` and
``max_memory_reserved`` (bytes, peaks since the model was built, counting it).

Run on a CUDA machine: ``python3 benchmarks/measure_gpu_peft_fp32.py [NAME ...]``
(needs torch, transformers, peft; not run by ``make bench``).
"""

from __future__ import annotations

import json
import subprocess
import sys

T5_COMMON = {
    "num_layers": 24,
    "num_decoder_layers": 24,
    "d_kv": 64,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "dropout_rate": 0.1,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
}
CONFIGS = {
    "t0-3b-lora": (
        "t5",
        {**T5_COMMON, "d_model": 2048, "d_ff": 5120, "num_heads": 32, "vocab_size": 32128},
        "lora",
    ),
    "t0-3b-full": (
        "t5",
        {**T5_COMMON, "d_model": 2048, "d_ff": 5120, "num_heads": 32, "vocab_size": 32128},
        "full",
    ),
    "mt0-xxl-lora": (
        "t5",
        {**T5_COMMON, "d_model": 4096, "d_ff": 10240, "num_heads": 64, "vocab_size": 250112},
        "lora",
    ),
    "bloomz-7b1-lora": (
        "bloom",
        {"hidden_size": 4096, "n_layer": 30, "n_head": 32, "vocab_size": 250880},
        "lora",
    ),
}
BATCH, SOURCE, TARGET, STEPS = 8, 64, 4, 3


def measure(name: str) -> dict[str, object]:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BloomConfig, BloomForCausalLM, T5Config, T5ForConditionalGeneration

    kind, shape, method = CONFIGS[name]
    torch.manual_seed(0)
    device = torch.device("cuda")
    with device:
        if kind == "t5":
            model = T5ForConditionalGeneration(T5Config(**shape))
            task = TaskType.SEQ_2_SEQ_LM
        else:
            model = BloomForCausalLM(BloomConfig(**shape))
            task = TaskType.CAUSAL_LM
    model = model.float()
    if method == "lora":
        config = LoraConfig(task_type=task, r=8, lora_alpha=32, lora_dropout=0.1)
        model = get_peft_model(model, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = shape["vocab_size"]
    tokens = torch.randint(0, vocab, (BATCH, SOURCE), device=device)
    if kind == "t5":
        batch = {
            "input_ids": tokens,
            "labels": torch.randint(0, vocab, (BATCH, TARGET), device=device),
        }
    else:
        batch = {"input_ids": tokens, "labels": tokens.clone()}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(STEPS):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return {
        "name": name,
        "max_memory_allocated": torch.cuda.max_memory_allocated(),
        "max_memory_reserved": torch.cuda.max_memory_reserved(),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--one":
        print(json.dumps(measure(argv[1])), flush=True)
        return 0
    for name in argv or list(CONFIGS):
        done = subprocess.run([sys.executable, __file__, "--one", name], check=False)
        if done.returncode:
            print(json.dumps({"name": name, "error": done.returncode}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
