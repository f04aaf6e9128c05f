"""TrainerConfig: the operator renders it, the trainer loads it; bad configs fail in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trainwright_trainer.config import TrainerConfig, load_config, parse_config
from trainwright_trainer.errors import ConfigError, DataError
from trainwright_trainer.exitcodes import ExitCode


def _minimal(data_path: str = "/data/train.jsonl") -> dict[str, object]:
    return {"model": {"path": "/models/tiny"}, "data": {"path": data_path}}


def _write(tmp_path: Path, data: object, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    text = json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data)
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_gets_lora_defaults_and_cache_under_checkpoint_dir() -> None:
    cfg = parse_config(_minimal())
    assert cfg.method == "lora"
    assert cfg.lora is not None
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules) == (16, 32.0, "all-linear")
    assert cfg.data.seq_len == 2048
    assert cfg.data.max_bad_row_fraction == 0.01
    assert cfg.data_cache_dir == Path("checkpoints/data-cache")
    assert cfg.progress_path == Path("checkpoints/progress.json")
    assert cfg.distributed.strategy == "ddp"


def test_full_fine_tune_has_no_lora_section() -> None:
    cfg = parse_config({**_minimal(), "method": "full"})
    assert cfg.lora is None


def test_lora_options_with_full_method_are_rejected_with_the_agreed_sentence() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**_minimal(), "method": "full", "lora": {"rank": 8}})
    assert str(err.value) == (
        "lora options are set but method is 'full'; remove `lora` or use method lora|qlora|dora"
    )
    assert err.value.exit_code == ExitCode.CONFIG_ERROR


def test_unknown_key_is_named_with_the_accepted_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'training\.lr'; accepted keys there: .*"):
        parse_config({**_minimal(), "training": {"lr": 0.1}})


def test_unknown_data_format_lists_the_accepted_formats() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**_minimal(), "data": {"path": "x.jsonl", "format": "tsv"}})
    assert str(err.value) == (
        "data.format: 'tsv' is not one of auto, text, alpaca, sharegpt, chat, prompt_completion"
    )


def test_non_positive_numbers_are_rejected_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^training\.learning_rate: must be greater than 0"):
        parse_config({**_minimal(), "training": {"learning_rate": -1e-4}})
    with pytest.raises(ConfigError, match=r"^data\.seq_len: must be greater than 0 \(got 0\)$"):
        parse_config({**_minimal(), "data": {"path": "x", "seq_len": 0}})


def test_missing_model_section_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^missing required field 'model'$"):
        parse_config({"data": {"path": "x"}})


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    bad = {**_minimal(), "training": {"epochs": 0, "micro_batch_size": 0, "seed": -1}}
    with pytest.raises(ConfigError) as err:
        parse_config(bad)
    assert str(err.value) == "training.epochs: must be greater than 0 (got 0) (and 2 more problems)"


def test_a_single_target_module_string_is_rejected_not_read_as_a_regex() -> None:
    with pytest.raises(ConfigError, match=r"lora\.target_modules: must be a list of module names"):
        parse_config({**_minimal(), "lora": {"target_modules": "q_proj"}})


def test_camel_case_keys_from_the_manifest_are_accepted() -> None:
    cfg = parse_config(
        {
            "model": {"path": "m", "attnImplementation": "sdpa"},
            "data": {"path": "x", "seqLen": 512, "trainOnPrompt": True},
            "training": {"learningRate": 2.0e-4, "microBatchSize": 4},
        }
    )
    assert (cfg.data.seq_len, cfg.data.train_on_prompt) == (512, True)
    assert (cfg.training.learning_rate, cfg.training.micro_batch_size) == (2.0e-4, 4)
    assert cfg.model.attn_implementation == "sdpa"


def test_yaml_rendering_round_trips_to_an_equal_config() -> None:
    cfg = parse_config(
        {
            **_minimal(),
            "method": "dora",
            "lora": {"rank": 8, "target_modules": ["q_proj", "v_proj"], "use_rslora": True},
            "distributed": {"strategy": "zero3"},
            "faults": {"nan_grad_at_steps": [3, 4]},
        }
    )
    again = parse_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert again.lora is not None and again.lora.target_modules == ("q_proj", "v_proj")
    assert again.faults is not None and again.faults.nan_grad_at_steps == (3, 4)


def test_config_is_frozen() -> None:
    cfg = parse_config(_minimal())
    with pytest.raises(ValueError, match="frozen"):
        cfg.training.epochs = 3  # type: ignore[misc]


def test_load_config_reads_yaml_and_json_files(tmp_path: Path) -> None:
    data_file = tmp_path / "train.jsonl"
    data_file.write_text('{"text": "hello"}\n', encoding="utf-8")
    for name in ("c.yaml", "c.json"):
        cfg = load_config(_write(tmp_path, _minimal(str(data_file)), name))
        assert isinstance(cfg, TrainerConfig)
        assert cfg.data.path == str(data_file)


def test_missing_dataset_file_is_a_data_error_with_exit_65(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as err:
        load_config(_write(tmp_path, _minimal(str(missing))))
    assert str(err.value) == f"dataset file {missing} does not exist"
    assert err.value.exit_code == ExitCode.DATA_ERROR == 65


def test_operator_side_load_can_skip_the_dataset_check(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _minimal("/not/here.jsonl")), check_paths=False)
    assert cfg.data.path == "/not/here.jsonl"


def test_unparsable_or_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"is not valid YAML/JSON"):
        load_config(broken)
    with pytest.raises(ConfigError, match=r"does not exist$"):
        load_config(tmp_path / "absent.yaml")
    listed = _write(tmp_path, ["not", "a", "mapping"])
    with pytest.raises(ConfigError, match=r"must be a mapping of sections, got list"):
        load_config(listed)
