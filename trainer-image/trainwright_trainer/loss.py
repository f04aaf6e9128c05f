"""The causal-LM loss without the full logits tensor: a chunked, fused linear + cross-entropy.

With a 128k-token vocabulary the logits are the largest activation of a step: a
micro-batch of 8 x 4096 tokens holds 4.2 G logits, 8 GB in bf16 plus the fp32 upcast
and the log-softmax autograd keeps (about 6-10 bytes per logit in all). Here the output
head and the cross-entropy run together, ``chunk_tokens`` rows at a time: each chunk's
fp32 logits are computed, turned into the loss and, when a gradient is wanted, at once
into the gradients of the hidden states and of the head weight (softmax minus the
one-hot target), then dropped. Only one chunk's logits ever exist, and nothing of them
is kept for backward, whose only work is to scale the saved gradients. The FLOPs are
those of the plain head (one forward and two gradient matmuls per chunk, the weight
gradient skipped when the head is frozen, as under LoRA). This is the approach of
Liger Kernel's ``FusedLinearCrossEntropy`` (Hsu et al. 2024, arXiv:2410.10989, §3.3)
in plain PyTorch.

It works inside the model's own forward: :func:`install_chunked_loss` replaces the
``forward`` of the model's output head (an ``nn.Linear``) on that one instance, so DDP,
FSDP2 and DeepSpeed see an ordinary forward call with their hooks, the state dict is
unchanged, and while :meth:`ChunkedLossHead.labels` is active the head returns the summed
loss where the logits would be. Outside it (generation) the head is a plain linear layer.
Models whose logits are post-processed after the head (Gemma 2's soft-capping) keep the
plain loss.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE_INDEX",
    "ChunkedLossHead",
    "causal_lm_loss_sum",
    "chunked_cross_entropy",
    "install_chunked_loss",
]

IGNORE_INDEX = -100


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` against ``labels``, chunk by chunk."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        chunk_tokens: int,
        grad_enabled: bool,
    ) -> torch.Tensor:
        # forward() runs with grad mode off; whether gradients are wanted is decided outside.
        want_hidden = grad_enabled and hidden.requires_grad
        want_weight = grad_enabled and weight.requires_grad
        grad_hidden = torch.zeros_like(hidden) if want_hidden else None
        # At least fp32 for the softmax and the sums, as the plain loss's .float() does.
        wide = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
        grad_weight = (
            torch.zeros(weight.shape, dtype=wide, device=weight.device) if want_weight else None
        )
        total = torch.zeros((), dtype=wide, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_tokens):
            rows = hidden[start : start + chunk_tokens]
            target = labels[start : start + chunk_tokens]
            valid = target != IGNORE_INDEX
            safe = torch.where(valid, target, 0)
            logits = (rows @ weight.t()).to(wide)
            picked = logits.gather(1, safe.unsqueeze(1)).squeeze(1)
            # log-sum-exp in place (torch.logsumexp would allocate a second chunk).
            peak = logits.amax(dim=1, keepdim=True)
            sums = logits.sub_(peak).exp_().sum(dim=1)
            lse = peak.squeeze(1) + sums.log()
            total += ((lse - picked) * valid).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d(loss)/d(logits) = softmax - one_hot, zero on ignored rows; in place.
            probs = logits.div_(sums.unsqueeze(1))
            probs[torch.arange(len(safe), device=probs.device), safe] -= 1.0
            probs.mul_(valid.unsqueeze(1))
            grad_logits = probs.to(rows.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_tokens] = grad_logits @ weight.to(rows.dtype)
            if grad_weight is not None:
                grad_weight += (grad_logits.t() @ rows).to(wide)
        ctx.grad_hidden = grad_hidden
        ctx.grad_weight = grad_weight.to(weight.dtype) if grad_weight is not None else None
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        grad_hidden = ctx.grad_hidden * grad_output if ctx.grad_hidden is not None else None
        grad_weight = ctx.grad_weight * grad_output if ctx.grad_weight is not None else None
        ctx.grad_hidden = ctx.grad_weight = None
        return grad_hidden, grad_weight, None, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *, chunk_tokens: int
) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, labels, ignore_index=-100, reduction="sum")``
    with at most ``chunk_tokens`` rows of logits alive; ``hidden`` is [N, H], ``labels`` [N]."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    grad_enabled = torch.is_grad_enabled()
    loss: torch.Tensor = _FusedLinearCrossEntropy.apply(
        hidden, weight, labels, chunk_tokens, grad_enabled
    )
    return loss


class ChunkedLossHead:
    """The output head of one model, answering with the summed loss while labels are set."""

    def __init__(self, head: torch.nn.Linear, chunk_tokens: int) -> None:
        self.head = head
        self.chunk_tokens = chunk_tokens
        self._labels: torch.Tensor | None = None
        plain = type(head).forward

        def forward(module: torch.nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
            labels = self._labels
            if labels is None:
                return plain(module, hidden)
            # Position t predicts token t + 1: drop the last position and the first label.
            rows = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
            return chunked_cross_entropy(
                rows, module.weight, labels[:, 1:].reshape(-1), chunk_tokens=self.chunk_tokens
            )

        head.forward = types.MethodType(forward, head)  # type: ignore[method-assign]

    @contextlib.contextmanager
    def labels(self, labels: torch.Tensor) -> Iterator[None]:
        """While active, the head returns the summed cross-entropy against ``labels``."""
        self._labels = labels
        try:
            yield
        finally:
            self._labels = None


def install_chunked_loss(model: Any, chunk_tokens: int) -> ChunkedLossHead | None:
    """Make ``model``'s output head a :class:`ChunkedLossHead`; None where that is not safe.

    ``model`` is the Hugging Face (or peft) model before any distributed wrapper.
    """
    if chunk_tokens <= 0:
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    text_config = getattr(config, "text_config", config)
    if getattr(text_config, "final_logit_softcapping", None):
        return None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    # Exactly nn.Linear without a bias: a peft-wrapped head has its own forward.
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    return ChunkedLossHead(head, chunk_tokens)


def causal_lm_loss_sum(
    model: Any,
    batch: dict[str, torch.Tensor],
    *,
    head: ChunkedLossHead | None,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> torch.Tensor:
    """Summed next-token cross-entropy over label tokens of one micro-batch (on its device).

    No ``attention_mask``: transformers reads packed documents' boundaries from
    ``position_ids``. With ``head`` the loss comes out of the head itself (no logits).
    """
    input_ids, labels, position_ids = batch["input_ids"], batch["labels"], batch["position_ids"]
    with autocast or contextlib.nullcontext():
        if head is not None:
            with head.labels(labels):
                loss: torch.Tensor = model(input_ids=input_ids, position_ids=position_ids).logits
            return loss
        logits = model(input_ids=input_ids, position_ids=position_ids).logits
    shift_logits = logits[:, :-1, :].float()
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
