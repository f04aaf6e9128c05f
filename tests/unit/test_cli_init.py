"""``trainwright init``: without a terminal (flags + --yes) and answered in a pseudo-terminal."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import kmock
import pexpect
import pytest
import yaml
from kubernetes.config import kube_config

from trainwright.api.v1alpha1 import TrainingJob
from trainwright.cli import main
from trainwright_trainer.data.inspect import inspect_dataset

DATA = Path(__file__).resolve().parents[1] / "data" / "trainer"
GOOD = DATA / "alpaca.jsonl"
BROKEN = DATA / "bad_alpaca.jsonl"
TRAININGJOBS = "trainwright.io/v1alpha1/trainingjobs"


def _kubeconfig_at(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Point the kubernetes client at ``path`` (it reads $KUBECONFIG once, at import)."""
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def _flags(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "init", "--yes", "--use-case", "chatbot", "--dataset", str(GOOD),
        "--model", "llama-3.1-8b", "--gpus", "H100-SXM:1", "-n", "ml",
        "--manifest", str(tmp_path / "job.yaml"), *extra,
    ]  # fmt: skip


def test_flags_and_yes_write_a_valid_manifest_and_print_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_flags(tmp_path), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    body = yaml.safe_load((tmp_path / "job.yaml").read_text())
    job = TrainingJob.from_body(body)
    tokens = inspect_dataset(GOOD, seq_len=2048)["tokens"]["total"]

    assert body == document["manifest"] and job.namespace == "ml"
    assert job.name == "llama-3-1-8b-chatbot"
    assert (job.spec.profile, job.spec.method, job.spec.cloud) == ("chatbot", "auto", "aws")
    assert job.spec.dataset.uri == "pvc://datasets/alpaca.jsonl"
    assert (job.spec.dataset.format, job.spec.dataset.tokens) == ("alpaca", tokens)
    assert (job.spec.resources.gpu_type, job.spec.resources.gpus) == ("H100-SXM", 1)
    plan = document["plan"]
    assert (plan["gpu"], plan["num_gpus"], plan["method"], plan["fits"]) == (
        "H100-SXM", 1, "lora", True,
    )  # fmt: skip
    assert document["carbon"]["kg_co2e"] > 0 and document["carbon"]["zone"]
    alternatives = {(a["gpu"], a["num_gpus"]) for a in document["alternatives"]}
    assert 2 <= len(alternatives) <= 3 and ("H100-SXM", 1) not in alternatives
    assert document["dataset"]["rows"] == 20 and document["written"] == str(tmp_path / "job.yaml")


def test_a_region_goes_to_spec_carbon_and_prices_the_carbon_on_its_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_flags(tmp_path, "--region", "FR"), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert main([*_flags(tmp_path, "--force"), "-o", "json"]) == 0
    default = json.loads(capsys.readouterr().out)
    carbon = document["carbon"]

    assert document["manifest"]["spec"]["carbon"] == {"region": "FR"}
    assert "carbon" not in default["manifest"]["spec"]
    assert carbon["zone"] == "FR" and carbon["energy_kwh"] == default["carbon"]["energy_kwh"]
    assert carbon["kg_co2e"] == pytest.approx(
        carbon["energy_kwh"] * carbon["g_co2e_per_kwh"] / 1000
    )
    assert {a["carbon"]["zone"] for a in document["alternatives"]} == {"FR"}


def test_a_local_config_json_model_is_planned_and_named_by_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = tmp_path / "tiny-llama"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32000,
                "max_position_embeddings": 2048, "tie_word_embeddings": True,
            }
        )
    )  # fmt: skip
    argv = _flags(tmp_path)
    argv[argv.index("llama-3.1-8b")] = str(model_dir)

    assert main([*argv, "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    job = TrainingJob.from_body(document["manifest"])

    assert job.spec.model.config_path == str(model_dir / "config.json")
    assert job.name == "tiny-llama-chatbot" and document["plan"]["model"] == "tiny-llama"
    assert document["plan"]["fits"] and document["plan"]["num_gpus"] == 1


def test_an_existing_manifest_is_kept_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "job.yaml"
    target.write_text("mine\n")

    assert main([*_flags(tmp_path), "-o", "json"]) == 2
    assert capsys.readouterr().err.endswith(
        f"trainwright: error: --manifest {target} exists; pass --force to overwrite it\n"
    )
    assert target.read_text() == "mine\n"
    assert main([*_flags(tmp_path), "--force", "-o", "json"]) == 0
    assert yaml.safe_load(target.read_text())["kind"] == "TrainingJob"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--dataset", None], "--dataset is required with --yes (or run init on a terminal)"),
        (["--dataset", str(BROKEN)], f"--dataset {BROKEN}: the trainer would refuse it (4 bad"),
        (["--model", "llama-9"], "--model: unknown model 'llama-9'"),
        (["--use-case", "poetry"], "--use-case 'poetry' is not one of chatbot, code,"),
        (["--gpus", "H100-SXM:0"], "--gpus 'H100-SXM:0': the count must be a positive integer"),
        (["-n", "ml", "--region", "Mars"], "--region: unknown carbon region 'Mars'"),
    ],
)
def test_a_bad_or_missing_flag_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: list[str | None], message: str
) -> None:
    argv = _flags(tmp_path)
    index = argv.index(str(change[0]))
    if change[1] is None:
        del argv[index : index + 2]
    else:
        argv[index + 1 : index + 2] = change[1:]

    assert main([*argv, "-o", "json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1].startswith(f"trainwright: error: {message}")
    assert not (tmp_path / "job.yaml").exists()


def test_apply_without_a_cluster_and_questions_without_a_terminal_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _kubeconfig_at(monkeypatch, tmp_path / "absent")

    assert main([*_flags(tmp_path), "--apply", "-o", "json"]) == 2
    assert "trainwright: error: --apply needs a cluster" in capsys.readouterr().err
    assert main(["init", "--use-case", "qa"]) == 2  # pytest's stdin is no terminal
    assert "init asks its questions on a terminal" in capsys.readouterr().err


def test_init_in_a_pseudo_terminal_asks_again_after_wrong_answers_and_an_unmet_budget(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "COLUMNS": "200", "KUBECONFIG": str(tmp_path / "absent")}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "trainwright.cli", "init", "--manifest", "run.yaml", "--name", "support-bot"],
        cwd=str(tmp_path),
        env=env,
        encoding="utf-8",
        timeout=60,
    )
    child.expect(r"1\. chatbot: .*Use case \(number or name\): ")
    child.sendline("poetry")
    child.expect(r"'poetry' is not one of .*Use case \(number or name\): ")
    child.sendline("4")  # qa
    child.expect(r"Dataset file .*: ")
    child.sendline(str(tmp_path / "missing.jsonl"))
    child.expect(r"missing\.jsonl does not exist.*Dataset file .*: ")
    child.sendline(str(BROKEN))
    child.expect(r"row 23: invalid JSON.*the trainer would refuse it.*Dataset file .*: ")
    child.sendline(str(GOOD))
    child.expect(r"alpaca rows: 20 valid of 20.*preview:.*row 1: .*capital of France")
    child.expect(r"Base model .*: ")
    child.sendline("llama-3.1-8bb")
    child.expect(r"unknown model 'llama-3.1-8bb'; did you mean llama-3.1-8b.*Base model .*: ")
    child.sendline("llama-3.1-8b")
    child.expect(r"GPUs .* \[auto\]: ")
    child.sendline("auto")
    child.expect(r"Budget in US dollars .*\[none\]: ")
    child.sendline("cheap")
    child.expect(r"'cheap' is not a number.*Budget in US dollars .*: ")
    child.sendline("0.000001")
    child.expect(r"Deadline in hours .*\[none\]: ")
    child.sendline("")
    child.expect(r"no plan costs at most .*; choose other GPUs or limits.*GPUs .* \[auto\]: ")
    child.sendline("A100-80GB-SXM:2")
    child.expect(r"Plan: llama-3.1-8b lora on 2x A100-80GB-SXM")
    child.expect(r"carbon .* kg CO2e")
    child.expect(r"Alternatives:")
    child.expect(r"Write run\.yaml\? \[Y/n\]: ")
    child.sendline("y")
    child.expect(r"wrote run\.yaml")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0
    job = TrainingJob.from_body(yaml.safe_load((tmp_path / "run.yaml").read_text()))
    assert (job.name, job.spec.profile, job.spec.model.name) == (
        "support-bot",
        "qa",
        "llama-3.1-8b",
    )
    assert (job.spec.resources.gpu_type, job.spec.resources.gpus) == ("A100-80GB-SXM", 2)
    assert job.spec.dataset.uri == "pvc://datasets/alpaca.jsonl"


@pytest.mark.asyncio
async def test_apply_creates_the_training_job_once(
    tmp_path: Path,
    kmock: kmock.KubernetesEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kmock.resources[TRAININGJOBS] = {"kind": "TrainingJob", "namespaced": True}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "k", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    _kubeconfig_at(monkeypatch, kubeconfig)
    argv = [*_flags(tmp_path, "--apply"), "-o", "json"]

    assert await asyncio.to_thread(main, argv) == 0
    document = json.loads(capsys.readouterr().out)
    stored = kmock.objects[TRAININGJOBS, "ml", "llama-3-1-8b-chatbot"]
    assert (document["applied"], document["written"]) == (True, None)
    assert stored["spec"] == document["manifest"]["spec"]
    assert not (tmp_path / "job.yaml").exists()
    assert await asyncio.to_thread(main, argv) == 2
    assert capsys.readouterr().err.endswith(
        "trainwright: error: trainingjob ml/llama-3-1-8b-chatbot already exists; pass --name\n"
    )
