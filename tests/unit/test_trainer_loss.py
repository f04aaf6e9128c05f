"""The chunked, fused linear + cross-entropy equals the plain loss, and so do its gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainwright_trainer.loss import (
    IGNORE_INDEX,
    causal_lm_loss_sum,
    chunked_cross_entropy,
    install_chunked_loss,
)

torch.set_num_threads(1)


def _problem(tokens: int = 37, hidden: int = 16, vocab: int = 101) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, hidden, generator=generator, dtype=torch.float64, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, vocab, (tokens,), generator=generator)
    labels[::5] = IGNORE_INDEX  # prompts and padding carry no loss
    return h, w, labels


@pytest.mark.parametrize("chunk_tokens", [1, 8, 37, 1000])
def test_the_chunked_loss_and_its_gradients_equal_the_plain_ones(chunk_tokens: int) -> None:
    h, w, labels = _problem()
    plain = F.cross_entropy(h @ w.t(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    plain_grads = torch.autograd.grad(plain * 0.5, (h, w))
    chunked = chunked_cross_entropy(h, w, labels, chunk_tokens=chunk_tokens)
    chunked_grads = torch.autograd.grad(chunked * 0.5, (h, w))

    assert float(chunked.detach()) == pytest.approx(float(plain.detach()), rel=1e-12)
    for mine, reference in zip(chunked_grads, plain_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-12)


def test_a_frozen_head_gets_no_gradient_and_no_grad_mode_computes_none() -> None:
    h, w, labels = _problem()
    frozen = w.detach()
    loss = chunked_cross_entropy(h, frozen, labels, chunk_tokens=8)
    (grad_h,) = torch.autograd.grad(loss, (h,))
    plain = F.cross_entropy(h @ frozen.t(), labels, ignore_index=IGNORE_INDEX, reduction="sum")

    torch.testing.assert_close(grad_h, torch.autograd.grad(plain, (h,))[0])
    with torch.no_grad():
        assert not chunked_cross_entropy(h, w, labels, chunk_tokens=8).requires_grad


def test_a_tiny_llama_trains_the_same_with_the_chunked_head() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    plain_model = LlamaForCausalLM(config)
    chunked_model = LlamaForCausalLM(config)
    chunked_model.load_state_dict(plain_model.state_dict())
    head = install_chunked_loss(chunked_model, chunk_tokens=7)
    input_ids = torch.randint(0, 300, (2, 24))
    labels = input_ids.clone()
    labels[:, :5] = IGNORE_INDEX
    batch = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": torch.arange(24).repeat(2, 1),
    }
    plain = causal_lm_loss_sum(plain_model, batch, head=None)
    chunked = causal_lm_loss_sum(chunked_model, batch, head=head)
    plain.backward()
    chunked.backward()

    assert head is not None
    assert float(chunked.detach()) == pytest.approx(float(plain.detach()), rel=1e-5)
    for (name, a), (_, b) in zip(
        plain_model.named_parameters(), chunked_model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert set(chunked_model.state_dict()) == set(plain_model.state_dict())
    # Outside the labels context the head is a plain linear layer again (generation).
    logits = chunked_model(input_ids=input_ids).logits
    assert logits.shape == (2, 24, 300)
