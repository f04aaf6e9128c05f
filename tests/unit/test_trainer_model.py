"""Model loading: PEFT methods on the tiny Llama, precision choice, packed-sequence isolation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer_fixtures import TRAINER_DATA_DIR, tiny_model_dir
from trainwright_trainer.config import parse_config
from trainwright_trainer.errors import ConfigError
from trainwright_trainer.model import build_model, resolve_dtype

CPU = torch.device("cpu")


def _cfg(method: str, **lora: object) -> object:
    config: dict[str, object] = {
        "model": {"path": str(tiny_model_dir())},
        "method": method,
        "data": {"path": str(TRAINER_DATA_DIR / "text.txt")},
    }
    if method != "full":
        config["lora"] = {"rank": 4, "alpha": 8, **lora}
    return parse_config(config)


def test_full_fine_tune_trains_every_parameter_in_fp32_on_cpu() -> None:
    bundle = build_model(_cfg("full"), CPU)

    assert bundle.params == bundle.trainable_params == 196_928
    assert bundle.compute_dtype == torch.float32
    assert (bundle.num_layers, bundle.hidden_size) == (2, 64)


def test_lora_trains_only_the_adapters_on_every_linear_layer() -> None:
    bundle = build_model(_cfg("lora"), CPU)
    trainable = {n for n, p in bundle.model.named_parameters() if p.requires_grad}

    # 7 linear layers per block x 2 blocks, each with lora_A (64->4 or 256->4) and lora_B.
    assert len(trainable) == 28
    assert all("lora_" in name for name in trainable)
    assert bundle.trainable_params == 11_776
    assert bundle.params == 196_928 + 11_776


def test_dora_adds_a_magnitude_vector_per_adapted_layer() -> None:
    bundle = build_model(_cfg("dora"), CPU)
    names = [n for n, p in bundle.model.named_parameters() if p.requires_grad]

    assert sum("lora_magnitude_vector" in n for n in names) == 14


def test_rslora_scales_by_alpha_over_sqrt_rank() -> None:
    bundle = build_model(_cfg("lora", use_rslora=True, target_modules=["q_proj"]), CPU)
    layer = bundle.model.base_model.model.model.layers[0].self_attn.q_proj

    assert layer.scaling["default"] == pytest.approx(8 / 4**0.5)


def test_pissa_starts_from_the_same_function_as_the_base_model() -> None:
    ids = torch.tensor([[1, 10, 20, 30, 40]])
    base = build_model(_cfg("full"), CPU).model
    pissa = build_model(_cfg("lora", init="pissa", dropout=0.0), CPU).model
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        got = pissa(input_ids=ids).logits

    assert torch.allclose(got, expected, atol=1e-4)
    assert pissa.peft_config["default"].init_lora_weights == "pissa"


def test_qlora_on_a_cpu_fails_with_a_config_error_naming_the_method() -> None:
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU"):
        build_model(_cfg("qlora"), CPU)


def test_a_missing_model_directory_is_a_config_error(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "model": {"path": str(tmp_path / "nope")},
            "method": "full",
            "data": {"path": str(TRAINER_DATA_DIR / "text.txt")},
        }
    )
    with pytest.raises(ConfigError, match=r"model\.path"):
        build_model(cfg, CPU)


def test_auto_precision_is_fp32_on_cpu_and_explicit_bf16_is_honoured() -> None:
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("bf16", CPU) == torch.bfloat16


def test_packed_documents_do_not_attend_to_each_other() -> None:
    model = build_model(_cfg("full"), CPU).model.eval()
    first = [1, 11, 12, 13, 14, 15]
    second = [1, 21, 22, 23]
    packed = torch.tensor([first + second])
    positions = torch.tensor([list(range(6)) + list(range(4))])
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions).logits[0, 6:]
        alone = model(input_ids=torch.tensor([second])).logits[0]

    assert torch.allclose(together, alone, atol=1e-5)
