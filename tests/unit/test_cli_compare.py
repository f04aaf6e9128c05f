"""``trainwright compare`` on two finished TrainingJobs' saved bodies (-f)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import kmock
import pytest
import yaml
from kubernetes.config import kube_config

from trainwright.api.v1alpha1 import TrainingJob
from trainwright.cli import main

RUNS = Path(__file__).resolve().parents[1] / "data" / "compare" / "two-finished-runs.yaml"


def _compare(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["compare", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_saved_bodies_are_valid_training_jobs() -> None:
    items = yaml.safe_load(RUNS.read_text())["items"]

    for body in items:
        job = TrainingJob.from_body({k: v for k, v in body.items() if k != "status"})
        assert job.spec.method == "lora"


def test_the_json_names_each_runs_results_the_differences_and_the_best(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _compare(capsys, "-f", str(RUNS), "-o", "json")
    document = json.loads(out)
    r16, r64 = document["jobs"]

    assert code == 0
    assert [j["job"] for j in document["jobs"]] == ["ml/lora-r16", "ml/lora-r64"]
    assert (r16["train_loss"], r16["eval_loss"], r16["tokens_per_second"]) == (
        1.1874,
        1.2381,
        3890.2,
    )
    # status.usage where the operator accounted it ...
    assert (r16["gpu_hours"], r16["cost_usd"], r16["kg_co2e"]) == (12.19, 119.52, 3.95)
    assert r16["usage_source"] == "status.usage" and r16["duration_seconds"] == 5500.0
    # ... else the plan's 8 GPUs at $78.40/h for the 6,150 s it ran.
    assert r64["duration_seconds"] == 6150.0 and r64["usage_source"] == "plan x duration"
    assert r64["gpu_hours"] == pytest.approx(8 * 6150 / 3600, abs=1e-4)
    assert r64["cost_usd"] == pytest.approx(78.4 * 6150 / 3600, abs=1e-4)
    assert r64["energy_kwh"] is None and r64["kg_co2e"] is None
    assert document["differences"] == [
        {"field": "spec.lora.alpha", "values": [32.0, 128.0]},
        {"field": "spec.lora.rank", "values": [16, 64]},
        {"field": "spec.training.learningRate", "values": [0.0002, 0.0001]},
    ]
    assert document["best"] == {
        "train_loss": ["ml/lora-r16"],
        "eval_loss": ["ml/lora-r64"],
        "tokens_per_second": ["ml/lora-r16"],
        "duration_seconds": ["ml/lora-r16"],
        "gpu_hours": ["ml/lora-r16"],
        "cost_usd": ["ml/lora-r16"],
    }


def test_the_table_marks_the_best_in_each_column(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _compare(capsys, "lora-r64", "lora-r16", "-f", str(RUNS), "-o", "table")
    lines = out.splitlines()
    r64 = next(line for line in lines if line.startswith("ml/lora-r64"))
    r16 = next(line for line in lines if line.startswith("ml/lora-r16"))

    assert code == 0 and lines[0].split()[:4] == ["JOB", "PHASE", "TRAIN", "LOSS"]
    assert lines.index(r64) < lines.index(r16)  # in the order asked
    assert "1.2207*" in r64 and "1.2012 " in r64 and "$133.93 " in r64
    assert "1.1874*" in r16 and "3,890*" in r16 and "$119.52*" in r16 and "91.7m*" in r16
    assert "spec.lora.rank" in out and "spec.lora.dropout" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lora-r16"], "compare needs at least two TrainingJobs, got 1"),
        (["lora-r16", "nope"], "JOB nope is not in the -f files (they hold: lora-r16, lora-r64)"),
    ],
)
def test_bad_selections_exit_2_with_one_sentence(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _compare(capsys, *argv, "-f", str(RUNS))

    assert (code, out) == (2, "")
    assert err == f"trainwright: error: {message}\n"


def test_a_file_of_another_kind_or_no_cluster_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "cm.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    # The client reads $KUBECONFIG once, at import: point both at a file that is not there.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    assert _compare(capsys, "-f", str(other))[2] == (
        f"trainwright: error: -f {other}: expected kind TrainingJob, got 'ConfigMap'\n"
    )
    code, _, err = _compare(capsys, "run-a", "run-b")
    assert code == 2 and err.startswith("trainwright: error: no cluster credentials")
    assert err.count("\n") == 1


@pytest.mark.asyncio
async def test_jobs_are_read_from_the_cluster_by_name(
    tmp_path: Path,
    kmock: kmock.KubernetesEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    resource = "trainwright.io/v1alpha1/trainingjobs"
    kmock.resources[resource] = {"kind": "TrainingJob", "namespaced": True}
    for body in yaml.safe_load(RUNS.read_text())["items"]:
        kmock.objects[resource, "ml", body["metadata"]["name"]] = body
    kubeconfig = tmp_path / "kubeconfig"
    server = str(kmock.url).rstrip("/")
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1", "kind": "Config", "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    argv = ["compare", "lora-r64", "lora-r16", "-n", "ml", "-o", "json"]
    assert await asyncio.to_thread(main, argv) == 0
    from_cluster = json.loads(capsys.readouterr().out)
    assert main(["compare", "lora-r64", "lora-r16", "-f", str(RUNS), "-o", "json"]) == 0
    from_file = json.loads(capsys.readouterr().out)

    assert from_cluster == from_file
    assert await asyncio.to_thread(main, ["compare", "lora-r16", "gone", "-n", "ml"]) == 2
    assert capsys.readouterr().err == "trainwright: error: trainingjob ml/gone not found\n"
