"""`trainwright validate`: the API models as an offline check for manifests in a repository."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from trainwright.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BAD_JOB = """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: skipped}
---
apiVersion: trainwright.io/v1alpha1
kind: TrainingJob
metadata: {name: bad}
spec:
  model: {name: llama-3.1-8b}
  method: lora
  dataset: {uri: pvc://d/a.jsonl}
  resources: {gpuType: L4, gpus: 0}
"""


def test_every_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES), "-o", "json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in results} == {
        "llama8b-lora",
        "qwen7b-qlora",
        "chat-serving",
        "chat-serving-forecast",
        "llama8b-lora-export",
        "tiny-cpu",
        "tiny-cpu-export",
    }
    assert all(r["valid"] and r["error"] is None for r in results)


def test_an_invalid_manifest_is_reported_by_field_and_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(BAD_JOB))
    assert main(["validate", "-", "-o", "table"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["SOURCE", "KIND", "NAME", "RESULT"]
    assert lines[1].split(maxsplit=3) == [
        "<stdin>#1",
        "TrainingJob",
        "bad",
        "TrainingJob spec.resources.gpus: input should be greater than 0.",
    ]
    assert captured.err == "trainwright: error: 1 of 1 manifests are invalid\n"


def test_a_missing_path_or_broken_yaml_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert (
        capsys.readouterr().err
        == f"trainwright: error: {tmp_path / 'nope.yaml'} is not a file or directory\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [\n", encoding="utf-8")
    assert main(["validate", str(broken)]) == 2
    assert capsys.readouterr().err.startswith(f"trainwright: error: {broken} is not valid YAML:")


def test_input_without_trainwright_manifests_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "pvc.yaml"
    other.write_text("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: d}\n")
    assert main(["validate", str(other)]) == 2
    assert "no TrainingJob, CapacityPlan or ModelExport manifests" in capsys.readouterr().err


def test_an_unknown_kind_in_the_group_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "x.yaml"
    manifest.write_text(
        "apiVersion: trainwright.io/v1alpha1\nkind: TrainingRun\nmetadata: {name: r}\n"
    )
    assert main(["validate", str(manifest), "-o", "json"]) == 1
    [result] = json.loads(capsys.readouterr().out)
    assert (
        result["error"]
        == "kind 'TrainingRun' is not one of TrainingJob, CapacityPlan, ModelExport."
    )
