"""The exporter (``python -m trainwright_trainer export``) on the tiny Llama of trainer_fixtures.

Each export is checked on what a user relies on: the merged model's logits equal
the adapter-applied model's, the files in manifest.json have the sizes and hashes
on disk, the GGUF holds the merged weights, the Modelfile's template renders
what the tokenizer's chat template renders, and bad input exits 64 with one line
naming the flag while leaving what existed untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from trainer_fixtures import CHAT_TEMPLATE, tiny_model_dir, tiny_tokenizer, tiny_train_config
from trainwright_trainer.__main__ import main
from trainwright_trainer.exitcodes import ExitCode
from trainwright_trainer.export.llama_cpp import LLAMA_CPP_BIN_ENV, tool
from trainwright_trainer.export.ollama import chat_pieces, go_template, render_turns, stop_tokens
from trainwright_trainer.export.run import VERIFY_PROMPT

LOGITS_TOLERANCE_FP32 = 1e-4  # absolute, fp32 weights on CPU


def _adapter(
    out: Path, *, seed: int = 0, dora: bool = False, rslora: bool = False, init: Any = True
) -> torch.nn.Module:
    """A trained-looking adapter on the tiny model (lora_B non-zero), saved to ``out``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir()))
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules="all-linear",
        use_dora=dora,
        use_rslora=rslora,
        init_lora_weights=init,
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(str(out))
    return model.eval()


def _logits(model: Any) -> torch.Tensor:
    ids = tiny_tokenizer()(VERIFY_PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=ids).logits[0].float()
    return out


def _load(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def _export(*args: str) -> int:
    return main(["export", *args])


def _manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


@pytest.fixture(scope="module")
def dora_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    root = tmp_path_factory.mktemp("dora")
    model = _adapter(root / "adapter", dora=True)
    expected = _logits(model)
    config = root / "export.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": str(root / "adapter"),
                "base": str(tiny_model_dir()),
                "formats": ["safetensors", "adapter", "gguf", "ollama"],
                "quantization": "q8_0",
                "output": str(root / "out"),
                "maxShardBytes": 300_000,
                "ollama": {"systemPrompt": "You answer briefly."},
                "lineage": {"trainingJob": "ft", "attempt": 2, "modelName": "tiny-chat"},
            }
        )
    )
    assert _export("--config", str(config)) == ExitCode.SUCCESS
    return root / "out", expected


def test_a_dora_adapter_merges_into_shards_that_reproduce_the_adapter_applied_logits(
    dora_export: tuple[Path, torch.Tensor],
) -> None:
    out, expected = dora_export
    shards = sorted((out / "safetensors").glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3  # 814 kB of weights in shards of at most 300 kB
    assert (out / "safetensors" / "model.safetensors.index.json").is_file()
    merged = _logits(_load(out / "safetensors"))
    assert float((merged - expected).abs().max()) < LOGITS_TOLERANCE_FP32
    logits = _manifest(out)["verification"]["logits"]
    assert logits["ok"] and logits["same_greedy_tokens"]
    assert logits["relative_diff"] < 1e-5


def test_the_manifest_lists_every_file_with_its_size_and_sha256(
    dora_export: tuple[Path, torch.Tensor],
) -> None:
    out, _ = dora_export
    manifest = _manifest(out)
    assert [a["format"] for a in manifest["artifacts"]] == [
        "safetensors",
        "adapter",
        "gguf",
        "ollama",
    ]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    listed = {f["path"] for a in manifest["artifacts"] for f in a["files"]}
    assert listed == on_disk - {"manifest.json"}
    for artifact in manifest["artifacts"]:
        for entry in artifact["files"]:
            data = (out / entry["path"]).read_bytes()
            assert entry["size_bytes"] == len(data)
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert artifact["size_bytes"] == sum(f["size_bytes"] for f in artifact["files"])
    assert manifest["artifacts"][2]["path"] == "gguf/model-q8_0.gguf"


def test_the_exported_adapter_alone_reloads_with_peft_to_the_same_logits(
    dora_export: tuple[Path, torch.Tensor],
) -> None:
    from peft import PeftModel

    out, expected = dora_export
    model = PeftModel.from_pretrained(_load(tiny_model_dir()), str(out / "adapter")).eval()
    assert float((_logits(model) - expected).abs().max()) < LOGITS_TOLERANCE_FP32


def test_the_gguf_holds_the_merged_weights_tokenizer_and_chat_template(
    dora_export: tuple[Path, torch.Tensor],
) -> None:
    import gguf

    out, _ = dora_export
    check = _manifest(out)["verification"]["gguf"]
    assert check["ok"], check["problems"]
    assert check["tensors"] == 21  # embeddings, 2 x 9 per block, norm, head
    assert check["relative_rms_error_by_type"]["Q8_0"] < 0.01
    assert check["relative_rms_error_by_type"]["F32"] == 0.0
    reader = gguf.GGUFReader(str(out / "gguf" / "model-q8_0.gguf"))
    assert reader.get_field("general.architecture").contents() == "llama"
    assert reader.get_field("tokenizer.chat_template").contents() == CHAT_TEMPLATE
    tokens = reader.get_field("tokenizer.ggml.tokens").contents()
    assert tokens[:5] == ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    assert reader.get_field("tokenizer.ggml.eos_token_id").contents() == 2
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"


def test_the_modelfile_points_at_the_gguf_beside_it_and_carries_template_stops_and_system(
    dora_export: tuple[Path, torch.Tensor],
) -> None:
    out, _ = dora_export
    text = (out / "ollama" / "Modelfile").read_text()
    lines = text.splitlines()
    assert lines[0] == "FROM ./model-q8_0.gguf"
    assert (out / "ollama" / "model-q8_0.gguf").read_bytes() == (
        out / "gguf" / "model-q8_0.gguf"
    ).read_bytes()
    assert 'PARAMETER stop """<|im_end|>"""' in lines
    assert 'PARAMETER stop """</s>"""' in lines
    assert 'SYSTEM """You answer briefly."""' in lines
    assert '{{- if eq .Role "system" }}{{ "<|im_start|>system\\n" }}{{ .Content }}' in text


def test_the_model_card_names_base_method_hyperparameters_and_the_trainingjob(
    dora_export: tuple[Path, torch.Tensor],
) -> None:
    out, _ = dora_export
    card = (out / "safetensors" / "README.md").read_text()
    assert f"base_model: {tiny_model_dir()}" in card
    assert "| Method | dora |" in card
    assert "|   rank | 4 |" in card
    assert "|   alpha | 8 |" in card
    assert "| TrainingJob | ft |" in card
    assert "| Attempt | 2 |" in card
    assert "# tiny-chat" in card
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (out / "safetensors" / name).is_file(), name


def test_a_pissa_adapter_is_converted_to_lora_on_the_original_base(tmp_path: Path) -> None:
    model = _adapter(tmp_path / "adapter", init="pissa", rslora=True)
    expected = _logits(model)  # PiSSA's own model: residual base + adapter
    out = tmp_path / "out"
    rc = _export("--source", str(tmp_path / "adapter"), "--base", str(tiny_model_dir()),
                 "--formats", "safetensors,adapter", "--output", str(out))  # fmt: skip
    assert rc == ExitCode.SUCCESS
    assert float((_logits(_load(out / "safetensors")) - expected).abs().max()) < 1e-3
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8  # rank 2r after the conversion
    assert _manifest(out)["lineage"]["method"] == "lora (PiSSA init)"


def test_two_copies_of_one_adapter_combined_by_svd_at_half_weight_equal_the_adapter(
    tmp_path: Path,
) -> None:
    model = _adapter(tmp_path / "a")
    _adapter(tmp_path / "b")  # the same seed: the same adapter
    expected = _logits(model)
    out = tmp_path / "out"
    rc = _export("--source", str(tmp_path / "a"), "--source", str(tmp_path / "b"),
                 "--weights", "0.5,0.5", "--combination", "svd", "--base", str(tiny_model_dir()),
                 "--formats", "safetensors", "--output", str(out))  # fmt: skip
    assert rc == ExitCode.SUCCESS
    assert float((_logits(_load(out / "safetensors")) - expected).abs().max()) < 1e-3
    manifest = _manifest(out)
    assert manifest["lineage"]["method"] == "svd of 2 adapters"
    assert manifest["verification"]["ok"]


@pytest.fixture
def world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("world_of_one")
def test_the_newest_lora_checkpoint_of_a_real_run_exports_like_its_final_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import PeftModel

    from trainwright_trainer.config import parse_config
    from trainwright_trainer.train import run_training

    config = tiny_train_config(tmp_path, method="lora", max_steps=4, interval_steps=2)
    assert run_training(parse_config(config)) == ExitCode.SUCCESS
    trainer_config = tmp_path / "trainer.yaml"
    trainer_config.write_text(yaml.safe_dump(config))
    message = tmp_path / "termination-log"
    monkeypatch.setenv("TRAINWRIGHT_TERMINATION_LOG", str(message))
    out = tmp_path / "export"
    rc = _export("--source", str(tmp_path / "ckpt"), "--trainer-config", str(trainer_config),
                 "--formats", "safetensors,gguf", "--quantization", "f16", "--output", str(out))  # fmt: skip
    assert rc == ExitCode.SUCCESS
    final = PeftModel.from_pretrained(_load(tiny_model_dir()), str(tmp_path / "out")).eval()
    merged = _logits(_load(out / "safetensors"))
    assert float((merged - _logits(final)).abs().max()) < LOGITS_TOLERANCE_FP32
    manifest = _manifest(out)
    assert manifest["source"]["checkpoint_step"] == 4
    lineage = manifest["lineage"]
    assert lineage["dataset_uri"].endswith("text.txt")
    assert lineage["train_step"] == 4 and lineage["train_loss"] > 0
    assert manifest["verification"]["gguf"]["relative_rms_error_by_type"]["F16"] < 1e-3
    summary = json.loads(message.read_text())
    assert summary["checkpointStep"] == 4 and summary["verified"] is True
    assert [a["format"] for a in summary["artifacts"]] == ["safetensors", "gguf"]
    assert len(message.read_bytes()) <= 4096


# Bad input -------------------------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1, err
    return err[0]


def test_an_output_that_holds_an_export_is_refused_and_left_unchanged(
    dora_export: tuple[Path, torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = dora_export
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob("*")}
    rc = _export("--source", str(tiny_model_dir()), "--formats", "safetensors",
                 "--output", str(out))  # fmt: skip
    assert rc == ExitCode.CONFIG_ERROR
    assert "--output" in _one_line_error(capsys)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob("*")} == before


def test_a_source_that_is_not_a_model_is_refused_naming_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    rc = _export("--source", str(tmp_path / "notes"), "--output", str(tmp_path / "out"))
    assert rc == ExitCode.CONFIG_ERROR
    line = _one_line_error(capsys)
    assert "--source" in line and "is not a model" in line
    assert not (tmp_path / "out").exists()


def test_an_adapter_on_another_base_is_refused_naming_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    _adapter(tmp_path / "adapter")
    other = tmp_path / "other-base"
    config = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(str(other))
    rc = _export("--source", str(tmp_path / "adapter"), "--base", str(other),
                 "--output", str(tmp_path / "out"))  # fmt: skip
    assert rc == ExitCode.CONFIG_ERROR
    line = _one_line_error(capsys)
    assert "--base" in line and "does not fit" in line


def test_a_k_quant_without_llama_cpp_is_refused_naming_the_available_types(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LLAMA_CPP_BIN_ENV, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no llama-quantize there
    rc = _export("--source", str(tiny_model_dir()), "--formats", "gguf",
                 "--quantization", "q4_k_m", "--output", str(tmp_path / "out"))  # fmt: skip
    assert rc == ExitCode.CONFIG_ERROR
    line = _one_line_error(capsys)
    assert "--quantization: q4_k_m needs llama.cpp" in line
    assert "f32, f16, bf16, q8_0, q4_0" in line


def test_a_tokenizer_llama_cpp_cannot_read_is_refused_naming_tokenizer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), model)
    data = json.loads((model / "tokenizer.json").read_text())
    # A BPE with a SentencePiece-style decoder (and no tokenizer.model): transformers
    # loads it, llama.cpp's converter does not recognise it.
    data["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                       "split": True}  # fmt: skip
    (model / "tokenizer.json").write_text(json.dumps(data))
    rc = _export("--source", str(model), "--formats", "gguf", "--output", str(tmp_path / "out"))
    assert rc == ExitCode.CONFIG_ERROR
    line = _one_line_error(capsys)
    assert "tokenizer:" in line and "byte-level BPE" in line
    assert not (tmp_path / "out").exists()


# The Ollama template ---------------------------------------------------------------------

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content']"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Name a colour."},
]


@pytest.mark.parametrize("template", [CHAT_TEMPLATE, LLAMA3_TEMPLATE], ids=["chatml", "llama3"])
def test_the_translated_template_renders_a_conversation_as_the_chat_template_does(
    template: str,
) -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = template
    pieces = chat_pieces(tokenizer)
    for turns in (CONVERSATION, CONVERSATION[1:], CONVERSATION[1:2]):
        expected = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        assert render_turns(pieces, turns, generation=True) == expected


def test_the_chatml_go_template_and_its_stop_tokens() -> None:
    tokenizer = tiny_tokenizer()
    pieces = chat_pieces(tokenizer)
    assert go_template(pieces) == (
        "{{- range .Messages }}\n"
        '{{- if eq .Role "system" }}{{ "<|im_start|>system\\n" }}{{ .Content }}'
        '{{ "<|im_end|>\\n" }}\n'
        '{{- else if eq .Role "user" }}{{ "<|im_start|>user\\n" }}{{ .Content }}'
        '{{ "<|im_end|>\\n" }}\n'
        '{{- else if eq .Role "assistant" }}{{ "<|im_start|>assistant\\n" }}{{ .Content }}'
        '{{ "<|im_end|>\\n" }}\n'
        "{{- end }}\n"
        "{{- end }}\n"
        '{{- "<|im_start|>assistant\\n" }}'
    )
    assert stop_tokens(tokenizer, pieces) == ["<|im_end|>", "</s>"]


def test_the_export_command_imports_no_torch_before_it_validates() -> None:
    """A bad command line fails fast: the operator-side config module pulls in no torch."""
    import subprocess
    import sys

    code = "import sys, trainwright_trainer.export.config; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ})  # fmt: skip
    assert done.stdout.strip() == "False"


@pytest.mark.usefixtures("world_of_one")
def test_a_full_fine_tune_checkpoint_exports_the_trained_weights(tmp_path: Path) -> None:
    from trainwright_trainer.config import parse_config
    from trainwright_trainer.train import run_training

    config = tiny_train_config(tmp_path, method="full", max_steps=2, interval_steps=2)
    assert run_training(parse_config(config)) == ExitCode.SUCCESS
    out = tmp_path / "export"
    rc = _export("--source", str(tmp_path / "ckpt" / "step-000002"), "--base",
                 str(tiny_model_dir()), "--formats", "safetensors", "--output", str(out))  # fmt: skip
    assert rc == ExitCode.SUCCESS
    trained = _logits(_load(tmp_path / "out"))  # the trainer's own final model
    assert float((_logits(_load(out / "safetensors")) - trained).abs().max()) < 1e-4
    assert float((trained - _logits(_load(tiny_model_dir()))).abs().max()) > 1e-3  # it moved
    manifest = _manifest(out)
    assert (manifest["source"]["kind"], manifest["source"]["checkpoint_step"]) == ("checkpoint", 2)
    assert manifest["lineage"]["method"] == "full fine-tune"


def test_a_whole_model_without_a_tokenizer_takes_it_from_base_and_needs_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _load(tiny_model_dir())
    model.save_pretrained(str(tmp_path / "full"))  # as the trainer saves a full fine-tune
    rc = _export("--source", str(tmp_path / "full"), "--output", str(tmp_path / "a"))
    assert rc == ExitCode.CONFIG_ERROR
    assert "--base: no tokenizer in" in _one_line_error(capsys)
    assert not (tmp_path / "a").exists()
    rc = _export("--source", str(tmp_path / "full"), "--base", str(tiny_model_dir()),
                 "--formats", "safetensors,gguf", "--output", str(tmp_path / "b"))  # fmt: skip
    assert rc == ExitCode.SUCCESS
    assert (tmp_path / "b" / "safetensors" / "tokenizer.json").is_file()
    manifest = _manifest(tmp_path / "b")
    assert manifest["base"]["name"] == str(tiny_model_dir())
    assert manifest["verification"]["logits"]["max_abs_logit_diff"] == 0.0


# llama.cpp's own tools (trainer-image/build_llama_cpp.sh; $TRAINWRIGHT_LLAMA_CPP_BIN) -------

needs_llama_cpp = pytest.mark.skipif(
    tool("llama-simple") is None or tool("llama-quantize") is None,
    reason="llama.cpp's llama-simple and llama-quantize are not built here "
    "(trainer-image/build_llama_cpp.sh)",
)


@needs_llama_cpp
def test_llama_cpp_continues_the_f16_gguf_greedily_like_the_merged_model(tmp_path: Path) -> None:
    _adapter(tmp_path / "adapter")
    out = tmp_path / "out"
    rc = _export("--source", str(tmp_path / "adapter"), "--base", str(tiny_model_dir()),
                 "--formats", "gguf", "--quantization", "f16", "--output", str(out))  # fmt: skip
    assert rc == ExitCode.SUCCESS
    greedy = _manifest(out)["verification"]["llama_cpp_greedy"]
    assert greedy["ok"], greedy
    assert greedy["llama_cpp"] == greedy["hugging_face"] != ""


@needs_llama_cpp
def test_a_k_quant_is_made_by_llama_quantize_and_dequantizes_near_the_merged_weights(
    tmp_path: Path,
) -> None:
    _adapter(tmp_path / "adapter")
    out = tmp_path / "out"
    rc = _export("--source", str(tmp_path / "adapter"), "--base", str(tiny_model_dir()),
                 "--formats", "ollama", "--quantization", "q4_k_m", "--output", str(out))  # fmt: skip
    assert rc == ExitCode.SUCCESS
    check = _manifest(out)["verification"]["gguf"]
    assert check["ok"], check["problems"]
    errors = check["relative_rms_error_by_type"]
    assert "Q4_K" in errors and errors["Q4_K"] < 0.1
    assert sorted(p.name for p in (out / "ollama").iterdir()) == ["Modelfile", "model-q4_k_m.gguf"]
