"""Measure memory-bound decode steps on a real GPU, to check the planner's decode model.

A minimal Llama-style decoder in plain PyTorch (bf16 weights of the catalog's shapes,
random values): per layer RMSNorm, fused QKV, SDPA over a static KV cache, output
projection, RMSNorm, fused gate/up, SiLU, down projection; then the LM head for one
token per sequence. One decode step is captured in a CUDA graph, as gpt-fast and vLLM
do, and replayed; prints the median seconds per step per batch size as JSON lines.

Run on a CUDA machine: ``python3 benchmarks/measure_gpu_decode.py > out.jsonl``.
"""

from __future__ import annotations

import json
import statistics
import sys

SHAPES = {
    "llama-3.1-8b": (4096, 14336, 32, 32, 8, 128256),
    "qwen2.5-7b": (3584, 18944, 28, 28, 4, 152064),
}
CONTEXT_TOKENS = 1024
BATCHES = (1, 8, 32, 64)


def measure(name: str, batch: int) -> float:
    import torch
    import torch.nn.functional as F

    hidden, ffn, layers, heads, kv_heads, vocab = SHAPES[name]
    head_dim = hidden // heads
    bf16 = {"device": "cuda", "dtype": torch.bfloat16}
    qkv_out = (heads + 2 * kv_heads) * head_dim
    weights = [
        (
            torch.randn(hidden, qkv_out, **bf16) * 0.02,
            torch.randn(hidden, hidden, **bf16) * 0.02,
            torch.randn(hidden, 2 * ffn, **bf16) * 0.02,
            torch.randn(ffn, hidden, **bf16) * 0.02,
        )
        for _ in range(layers)
    ]
    head = torch.randn(hidden, vocab, **bf16) * 0.02
    cache = [
        (
            torch.randn(batch, kv_heads, CONTEXT_TOKENS, head_dim, **bf16),
            torch.randn(batch, kv_heads, CONTEXT_TOKENS, head_dim, **bf16),
        )
        for _ in range(layers)
    ]
    x_in = torch.randn(batch, hidden, **bf16)

    def rms(x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype)

    def step() -> torch.Tensor:
        x = x_in
        for (w_qkv, w_o, w_gu, w_d), (k, v) in zip(weights, cache, strict=True):
            qkv = rms(x) @ w_qkv
            q = qkv[:, : heads * head_dim].view(batch, heads, 1, head_dim)
            attn = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            x = x + attn.reshape(batch, hidden) @ w_o
            gate, up = (rms(x) @ w_gu).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ w_d
        return rms(x) @ head

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    samples = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(30):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1000)
    return statistics.median(samples[5:])


def main() -> int:
    import torch

    for name in SHAPES:
        for batch in BATCHES:
            seconds = measure(name, batch)
            torch.cuda.empty_cache()
            line = {
                "model": name,
                "batch": batch,
                "context_tokens": CONTEXT_TOKENS,
                "gpu": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "step_seconds": seconds,
            }
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
