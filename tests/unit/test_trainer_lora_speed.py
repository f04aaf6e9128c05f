"""The trainer's speed options compute what the plain loop computes, and compile falls back.

Each option (``lora.adapter_dtype``, ``training.compile_layers``) must leave the loss and
the adapters' gradients as they are without it, within the precision of the dtype: a
speed-up that changes the training is a bug. Their speed is measured by ``benchmarks/bench_lora.py``, not here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer_fixtures import TRAINER_DATA_DIR, tiny_model_dir, tiny_train_config
from trainwright_trainer.config import parse_config
from trainwright_trainer.loss import causal_lm_loss_sum, install_chunked_loss
from trainwright_trainer.model import build_model, decoder_layers
from trainwright_trainer.train import run_training

CPU = torch.device("cpu")
SEQ_LEN = 32


def _cfg(*, dtype: str = "fp32", lora: dict[str, Any] | None = None, **training: Any) -> Any:
    return parse_config(
        {
            "model": {"path": str(tiny_model_dir()), "dtype": dtype},
            "method": "lora",
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, **(lora or {})},
            "data": {"path": str(TRAINER_DATA_DIR / "text.txt")},
            "training": training,
        }
    )


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(5, 500, (2, SEQ_LEN), generator=generator)
    labels = input_ids.clone()
    labels[:, :4] = -100
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": torch.arange(SEQ_LEN).repeat(2, 1),
    }


def _loss_and_adapter_grads(cfg: Any) -> tuple[float, dict[str, torch.Tensor]]:
    """One forward/backward with the trainer's loss; B set non-zero so A gets gradients."""
    torch.manual_seed(0)
    bundle = build_model(cfg, CPU)
    model = bundle.model
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                noise = torch.randn(param.shape, generator=generator) * 0.02
                param.copy_(noise.to(param.dtype))
    head = install_chunked_loss(model, cfg.training.loss_chunk_tokens)
    loss = causal_lm_loss_sum(model, _batch(), head=head)
    loss.backward()
    grads = {
        name: param.grad.float().clone()
        for name, param in model.named_parameters()
        if param.requires_grad and param.grad is not None
    }
    return float(loss), grads


def _assert_same(
    got: tuple[float, dict[str, torch.Tensor]],
    want: tuple[float, dict[str, torch.Tensor]],
    *,
    rtol: float,
    atol: float,
) -> None:
    assert got[0] == pytest.approx(want[0], rel=rtol)
    assert got[1].keys() == want[1].keys()
    assert len(want[1]) == 2 * 7 * 2  # A and B on 7 linear layers in each of 2 layers
    for name, grad in want[1].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(got[1][name], grad, rtol=rtol, atol=atol, msg=name)


def test_adapters_in_the_compute_dtype_match_fp32_adapters_within_bf16_precision() -> None:
    reference = _loss_and_adapter_grads(_cfg(dtype="fp32"))
    fp32_adapters = _loss_and_adapter_grads(_cfg(dtype="bf16"))
    bf16_adapters = _loss_and_adapter_grads(_cfg(dtype="bf16", lora={"adapter_dtype": "compute"}))
    bundle = build_model(_cfg(dtype="bf16", lora={"adapter_dtype": "compute"}), CPU)
    dtypes = {p.dtype for n, p in bundle.model.named_parameters() if "lora_" in n}

    assert dtypes == {torch.bfloat16}
    # Against an all-fp32 model, both bf16 runs are off by bf16's rounding (8 mantissa
    # bits, ~0.4% a rounding, a few chained): measured at most 1.5% of each gradient's
    # largest element for either adapter dtype.
    for run in (fp32_adapters, bf16_adapters):
        assert run[0] == pytest.approx(reference[0], rel=1e-3)
        for name, want in reference[1].items():
            error = (run[1][name] - want).abs().max() / want.abs().max()
            assert error < 0.03, name


def test_fp32_adapters_stay_fp32_over_a_bf16_base_by_default() -> None:
    bundle = build_model(_cfg(dtype="bf16"), CPU)
    dtypes = {p.dtype for n, p in bundle.model.named_parameters() if "lora_" in n}
    base = bundle.model.get_input_embeddings().weight.dtype

    assert (dtypes, base) == ({torch.float32}, torch.bfloat16)


def test_compiled_layers_give_the_eager_loss_and_adapter_gradients() -> None:
    eager = _loss_and_adapter_grads(_cfg())
    # aot_eager traces forward and backward like inductor, without generating code.
    compiled = _loss_and_adapter_grads(_cfg(compile_layers=True, compile_backend="aot_eager"))

    _assert_same(compiled, eager, rtol=1e-5, atol=1e-7)


def test_an_unknown_compile_backend_falls_back_to_eager_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    eager = _loss_and_adapter_grads(_cfg())
    with caplog.at_level(logging.WARNING, logger="trainwright_trainer.model"):
        fallback = _loss_and_adapter_grads(
            _cfg(compile_layers=True, compile_backend="no-such-backend")
        )
    warnings = [r.getMessage() for r in caplog.records if "compile" in r.getMessage()]

    _assert_same(fallback, eager, rtol=0, atol=0)
    assert len(warnings) == 1
    assert "no-such-backend" in warnings[0] and "eagerly" in warnings[0]


@pytest.fixture
def failing_backend() -> str:
    """A registered backend that fails when the first layer is compiled, as a broken one would."""
    from torch._dynamo import reset
    from torch._dynamo.backends.registry import _COMPILER_FNS, register_backend

    name = "trainwright_test_failing_backend"

    def fail(graph: Any, example_inputs: Any) -> Any:
        raise RuntimeError("this backend cannot compile anything")

    register_backend(fail, name=name)
    yield name
    _COMPILER_FNS.pop(name, None)
    reset()


def test_a_backend_failing_at_the_first_call_falls_back_and_training_continues(
    tmp_path: Path, failing_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny_train_config(tmp_path, method="lora", max_steps=3, interval_steps=10)
    config["training"].update(compile_layers=True, compile_backend=failing_backend)
    with caplog.at_level(logging.WARNING, logger="trainwright_trainer.model"):
        code = run_training(parse_config(config))
    log_lines = (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in log_lines if '"step"' in line]
    warnings = [r.getMessage() for r in caplog.records if "compile" in r.getMessage()]

    assert code == 0
    assert len(losses) == 3 and all(isinstance(x, float) and x > 0 for x in losses)
    assert len(warnings) == 1
    assert "cannot compile anything" in warnings[0]


def test_compiling_keeps_the_layers_and_their_state_dict_names() -> None:
    plain = build_model(_cfg(), CPU).model
    compiled = build_model(_cfg(compile_layers=True, compile_backend="aot_eager"), CPU).model

    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert len(decoder_layers(compiled)) == 2
