"""The dataset check before planning: the pod's report, its Job, status.dataset, DataError.

The trainer's side (``python -m trainwright_trainer dataset-check``) runs for real on the
shipped files; the operator's side reconciles against kmock's API server, with the check
pod's termination message written by that same code.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from test_operator_trainingjob import NOW, NS, TJ, World, _condition, _trainingjob, world

from trainer_fixtures import TRAINER_DATA_DIR, tiny_tokenizer_dir
from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.cli import main as cli_main
from trainwright.operator import dataset_check
from trainwright.operator.dataset_check import (
    ReportError,
    data_error_message,
    dataset_status,
    parse_report,
    planning_job,
)
from trainwright.resources import JOB_LABEL, trainer_job
from trainwright.resources.dataset_check import (
    CHECK_LABEL,
    dataset_check_job,
    dataset_check_job_name,
    inputs_digest,
)
from trainwright_trainer.__main__ import main as trainer_main
from trainwright_trainer.data.check import (
    TERMINATION_MESSAGE_BYTES,
    check_dataset,
    compact_report,
    write_report,
)
from trainwright_trainer.data.inspect import inspect_dataset

__all__ = ["world"]  # the fixture

BAD = TRAINER_DATA_DIR / "bad_alpaca.jsonl"
GOOD = TRAINER_DATA_DIR / "alpaca.jsonl"


def _job(**spec: Any) -> TrainingJob:
    return TrainingJob.model_validate(_trainingjob("ft", **spec))


def _report(path: Path, **options: Any) -> str:
    """The termination message the check pod writes for ``path``."""
    return write_report(check_dataset(path, **options), None)


# The trainer's side ------------------------------------------------------------------------


def test_the_check_names_the_same_bad_rows_as_dataset_inspect() -> None:
    report = check_dataset(BAD, seq_len=2048)
    cli = inspect_dataset(BAD, seq_len=2048)
    assert report["bad_rows"] == cli["bad_rows"]
    assert [b["row"] for b in report["bad_rows"]] == [21, 22, 23, 24]
    assert (report["rows"], report["valid_rows"], report["trainer_accepts"]) == (24, 20, False)
    assert report["tokens"] == cli["tokens"]
    assert report["tokenizer"] == "estimate"


def test_a_report_of_thousands_of_bad_rows_fits_a_termination_message(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    good = '{"instruction": "Say hi.", "output": "Hi there, friend."}\n'
    path.write_text(good * 10 + '{"instruction": "no answer"}\n' * 3000, encoding="utf-8")
    compact = json.loads(_report(path))
    assert len(_report(path).encode()) <= TERMINATION_MESSAGE_BYTES
    assert compact["bad_row_count"] == 3000
    assert compact["rows"] == 3010
    assert [b["row"] for b in compact["bad_rows"]] == list(range(11, 11 + len(compact["bad_rows"])))
    assert len(compact["bad_rows"]) >= 5


def test_compact_report_drops_suggestions_before_bad_rows() -> None:
    report = check_dataset(BAD)
    report["suggestions"] = ["x" * 300] * 8
    compact = compact_report(report, limit_bytes=1200)
    assert len(json.dumps(compact, separators=(",", ":")).encode()) <= 1200
    assert len(compact["suggestions"]) < 8
    assert compact["bad_row_count"] == 4
    assert [b["row"] for b in compact["bad_rows"]] == [21, 22, 23, 24]


def test_a_file_that_is_not_there_is_an_error_in_the_report(tmp_path: Path) -> None:
    report = check_dataset(tmp_path / "missing.jsonl")
    assert "missing.jsonl" in report["error"]
    assert "rows" not in report


def test_the_entry_point_writes_the_report_file_and_exits_0_even_for_a_refused_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "termination-log"
    code = trainer_main(["dataset-check", "--data", str(BAD), "--report", str(out)])
    assert code == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == json.loads(capsys.readouterr().out)
    assert written["trainer_accepts"] is False and written["bad_row_count"] == 4


def test_the_models_tokenizer_counts_tokens_exactly() -> None:
    report = check_dataset(GOOD, tokenizer_dir=str(tiny_tokenizer_dir()))
    assert report["tokens"]["estimated"] is False
    assert report["tokenizer"] == str(tiny_tokenizer_dir())
    fallback = check_dataset(GOOD, tokenizer_dir="/nowhere/llama")
    assert fallback["tokens"]["estimated"] is True and fallback["tokenizer"] == "estimate"


# The Job -----------------------------------------------------------------------------------

PLACEMENT = {
    "tolerations": [{"key": "pool", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}],
    "nodeSelector": {"pool": "cpu"},
}


def test_the_check_job_mounts_the_dataset_read_only_as_the_trainer_does_and_asks_no_gpu() -> None:
    job = _job(model={"name": "llama-3.1-8b", "uri": "pvc://models/llama"}, **PLACEMENT)
    manifest = dataset_check_job(job, digest=inputs_digest(job), default_image="img:1")
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    trainer_pod = trainer_job(job, _plan(), 0)["spec"]["template"]["spec"]
    for volume in pod["volumes"]:
        assert volume in trainer_pod["volumes"]
        assert volume["persistentVolumeClaim"]["readOnly"] is True
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]} == {
        "datasets",
        "models",
    }
    args = container["args"]
    assert args[args.index("--data") + 1] == "/mnt/pvc/datasets/alpaca.jsonl"
    assert args[args.index("--tokenizer") + 1] == "/mnt/pvc/models/llama"
    assert args[args.index("--report") + 1] == container["terminationMessagePath"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["image"] == "img:1"
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert pod["tolerations"] == PLACEMENT["tolerations"]  # no device toleration
    assert pod["nodeSelector"] == {"pool": "cpu"}
    labels = manifest["metadata"]["labels"]
    assert labels[CHECK_LABEL] == "ft" and JOB_LABEL not in labels
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["ttlSecondsAfterFinished"] > 0


def test_a_catalog_model_has_no_local_tokenizer_so_tokens_are_estimated() -> None:
    job = _job()
    args = dataset_check_job(job, digest="0" * 16)["spec"]["template"]["spec"]["containers"][0]
    assert "--tokenizer" not in args["args"]


def test_the_check_runs_again_only_when_what_it_reads_changes() -> None:
    base = _job()
    assert inputs_digest(_job(training={"learningRate": 1e-5})) == inputs_digest(base)
    assert inputs_digest(_job(maxRestarts=5)) == inputs_digest(base)
    other = _job(dataset={"uri": "pvc://datasets/other.jsonl"})
    longer = _job(training={"seqLen": 8192})
    assert len({inputs_digest(base), inputs_digest(other), inputs_digest(longer)}) == 3
    name = dataset_check_job_name("ft", inputs_digest(base))
    assert name.startswith("ft-dataset-") and len(name) <= 63


# Reading the report ------------------------------------------------------------------------


def test_a_log_line_is_not_a_report() -> None:
    with pytest.raises(ReportError, match="not JSON"):
        parse_report("Traceback (most recent call last):\nMemoryError")
    with pytest.raises(ReportError, match="no report"):
        parse_report("")


def test_a_passing_report_renders_status_dataset() -> None:
    found = dataset_status(parse_report(_report(GOOD, seq_len=2048)), now=NOW)
    full = check_dataset(GOOD, seq_len=2048)
    assert found["state"] == "Passed"
    assert (found["rows"], found["validRows"], found["badRows"]) == (full["rows"], 20, 0)
    assert found["tokens"] == full["tokens"]["total"] > 0
    assert found["tokensP95"] == full["tokens"]["p95"]
    assert found["tokensEstimated"] is True
    assert found["truncatedFraction"] == full["truncated_fraction"] == 0.0
    assert found["checkedAt"] == "2026-03-01T12:00:00Z"
    assert found["message"].startswith("20 of 20 rows usable (alpaca)")


def test_a_refused_report_fails_with_the_first_bad_rows_in_the_message() -> None:
    found = dataset_status(parse_report(_report(BAD)), now=NOW)
    assert found["state"] == "Failed"
    assert [b["row"] for b in found["firstBadRows"]] == [21, 22, 23, 24]
    message = data_error_message(_job(), found)
    assert "spec.dataset.uri pvc://datasets/alpaca.jsonl" in message
    assert "row 21: missing field 'output' of format alpaca" in message
    assert "row 23: invalid JSON" in message


def test_an_unreadable_file_fails_with_the_readers_sentence(tmp_path: Path) -> None:
    found = dataset_status(parse_report(_report(tmp_path / "gone.jsonl")), now=NOW)
    assert found["state"] == "Failed" and "gone.jsonl" in found["message"]


def _passed(job: TrainingJob, tokens: int, *, estimated: bool = False) -> dict[str, Any]:
    return {
        "dataset": {
            "state": "Passed",
            "tokens": tokens,
            "tokensEstimated": estimated,
            "inputsDigest": inputs_digest(job),
        }
    }


def test_measured_tokens_replace_the_spec_guess_for_planning() -> None:
    job = _job()  # spec.dataset.tokens: 2,000,000
    planned, note = planning_job(job, _passed(job, 1_234))
    assert planned.spec.dataset.tokens == 1_234
    assert job.spec.dataset.tokens == 2_000_000
    assert note == (
        "Planned with the 1,234 tokens the dataset check counted instead of "
        "spec.dataset.tokens (2,000,000)."
    )


def test_an_estimate_fills_a_missing_token_count_but_never_overrides_the_users() -> None:
    job = _job()
    kept, note = planning_job(job, _passed(job, 999, estimated=True))
    assert kept.spec.dataset.tokens == 2_000_000 and note is not None and "only" in note
    unknown = _job(dataset={"uri": "pvc://datasets/alpaca.jsonl"})
    filled, _ = planning_job(unknown, _passed(unknown, 999, estimated=True))
    assert filled.spec.dataset.tokens == 999


def test_findings_about_another_dataset_are_not_used() -> None:
    job = _job()
    stale = _passed(_job(dataset={"uri": "pvc://datasets/old.jsonl"}), 5)
    assert planning_job(job, stale) == (job, None)


# The controller ----------------------------------------------------------------------------


def _plan() -> PlanStatus:
    return PlanStatus(
        gpu_type="H100-SXM",
        num_gpus=8,
        nodes=1,
        gpus_per_node=8,
        strategy="fsdp",
        micro_batch_size=1,
        gradient_accumulation_steps=1,
        gradient_checkpointing=False,
        memory_per_gpu_bytes=1,
        tokens_per_second=1.0,
    )


def _check_name(world: World, name: str = "ft") -> str:
    body = world.server.objects[TJ, NS, name]
    return dataset_check_job_name(name, inputs_digest(TrainingJob.model_validate(body)))


async def _finish_check(world: World, report: str, *, exit_code: int = 0) -> None:
    """What the Job controller and kubelet do when the check pod ends."""
    name = _check_name(world)
    world.server.objects["v1/pods", NS, f"{name}-x"] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-x",
            "namespace": NS,
            "labels": {"batch.kubernetes.io/job-name": name, "job-name": name},
        },
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "dataset-check",
                    "state": {"terminated": {"exitCode": exit_code, "message": report}},
                }
            ],
        },
    }
    condition = "Complete" if exit_code == 0 else "Failed"
    await world.set_job_status(name, {"conditions": [{"type": condition, "status": "True"}]})


@pytest.mark.asyncio
async def test_a_broken_dataset_fails_the_job_with_data_error_before_any_trainer_job(
    world: World,
) -> None:
    world.context.dataset_check = True
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    status = await world.reconcile("ft")
    assert status["phase"] == "Pending"
    assert _condition(status, "DatasetChecked")["status"] == "Unknown"
    check = await world.need("Job", _check_name(world))
    assert check["metadata"]["ownerReferences"][0]["name"] == "ft"
    assert "plan" not in status and await world.child("Job", "ft-a0") is None

    await _finish_check(world, _report(BAD))
    status = await world.reconcile("ft")
    assert status["phase"] == "Failed"
    failed = _condition(status, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "DataError")
    assert "row 21: missing field 'output'" in failed["message"]
    assert "row 24: field 'instruction' is empty" in failed["message"]
    assert _condition(status, "Planned")["reason"] == "DataError"
    assert status["dataset"]["state"] == "Failed" and status["dataset"]["badRows"] == 4
    assert await world.child("Job", "ft-a0") is None
    assert await world.child("Job", _check_name(world)) is None  # cleaned up
    assert ("Warning", "DataError") in [(t, r) for t, r, _ in world.events]
    # Reconciling again neither re-checks nor plans.
    assert (await world.reconcile("ft"))["phase"] == "Failed"
    assert await world.child("Job", _check_name(world)) is None


@pytest.mark.asyncio
async def test_a_good_dataset_is_planned_with_the_tokens_the_check_counted(world: World) -> None:
    world.context.dataset_check = True
    many = {"training": {"epochs": 1000}}  # long enough that the duration is not rounded away
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft", **many)
    guess = _trainingjob("guess", **many)
    guess["metadata"]["annotations"] = {dataset_check.ANNOTATION: "off"}
    world.server.objects[TJ, NS, "guess"] = guess
    await world.reconcile("ft")
    await _finish_check(world, _report(GOOD, tokenizer_dir=str(tiny_tokenizer_dir())))
    status = await world.reconcile("ft")
    tokens = check_dataset(GOOD, tokenizer_dir=str(tiny_tokenizer_dir()))["tokens"]["total"]
    assert status["phase"] == "Planned"
    assert status["dataset"]["tokens"] == tokens and status["dataset"]["tokensEstimated"] is False
    assert _condition(status, "DatasetChecked")["reason"] == "Passed"
    planned = _condition(status, "Planned")["message"]
    assert f"Planned with the {tokens:,} tokens the dataset check counted" in planned
    # Only now the trainer Job exists, one pod per planned node.
    job = await world.need("Job", "ft-a0")
    assert job["spec"]["completions"] == status["plan"]["nodes"]
    # Duration and cost scale with the measured tokens, not with the 2M-token guess.
    guessed = (await world.reconcile("guess"))["plan"]
    share = tokens / 2_000_000
    duration = status["plan"]["estimatedDurationSeconds"]
    assert duration == pytest.approx(guessed["estimatedDurationSeconds"] * share, rel=0.02)
    cost = status["plan"]["estimatedCostUsd"]
    assert cost == pytest.approx(guessed["estimatedCostUsd"] * share, rel=0.05)


@pytest.mark.asyncio
async def test_an_s3_dataset_is_skipped_with_a_reason_and_planned_as_before(world: World) -> None:
    world.context.dataset_check = True
    world.server.objects[TJ, NS, "ft"] = _trainingjob(
        "ft", dataset={"uri": "s3://bucket/data.jsonl", "tokens": 2_000_000}
    )
    status = await world.reconcile("ft")
    assert status["phase"] == "Planned"
    assert status["dataset"]["state"] == "Skipped"
    assert "s3://" in status["dataset"]["message"]
    assert _condition(status, "DatasetChecked")["reason"] == "Skipped"
    assert "checkJob" not in status["dataset"]
    writes = world.kube.status_writes
    await world.reconcile("ft")
    assert world.kube.status_writes == writes


@pytest.mark.asyncio
async def test_a_check_pod_that_never_starts_is_skipped_after_the_start_limit(
    world: World,
) -> None:
    world.context.dataset_check = True
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    name = _check_name(world)
    check = await world.need("Job", name)
    created = NOW - datetime.timedelta(seconds=world.context.dataset_check_start + 1)
    check["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    world.server.objects["batch/v1/jobs", NS, name] = check
    world.server.objects["v1/pods", NS, f"{name}-x"] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-x", "namespace": NS, "labels": {"job-name": name}},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/4 nodes are available: 4 Insufficient cpu.",
                }
            ],
        },
    }
    status = await world.reconcile("ft")
    assert status["phase"] == "Planned"
    assert status["dataset"]["state"] == "Skipped"
    assert "4 Insufficient cpu" in status["dataset"]["message"]
    assert await world.child("Job", name) is None


@pytest.mark.asyncio
async def test_a_crashed_check_is_skipped_not_held_against_the_dataset(world: World) -> None:
    world.context.dataset_check = True
    world.server.objects[TJ, NS, "ft"] = _trainingjob("ft")
    await world.reconcile("ft")
    await _finish_check(world, "Killed", exit_code=137)
    status = await world.reconcile("ft")
    assert status["phase"] == "Planned"
    assert status["dataset"]["state"] == "Skipped"
    assert "exited with code 137" in status["dataset"]["message"]


@pytest.mark.asyncio
async def test_the_annotation_turns_the_check_off_for_one_job(world: World) -> None:
    world.context.dataset_check = True
    body = _trainingjob("ft")
    body["metadata"]["annotations"] = {dataset_check.ANNOTATION: "off"}
    world.server.objects[TJ, NS, "ft"] = body
    status = await world.reconcile("ft")
    assert status["phase"] == "Planned" and "dataset" not in status


# The operator's switches -------------------------------------------------------------------


def test_the_operator_checks_datasets_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainwright.operator.main as operator_main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(operator_main, "run", lambda **kwargs: seen.update(kwargs))
    assert cli_main(["operator"]) == 0
    assert (seen["dataset_check"], seen["dataset_check_start"]) == (True, 300.0)
    assert cli_main(["operator", "--no-dataset-check", "--dataset-check-start", "900"]) == 0
    assert (seen["dataset_check"], seen["dataset_check_start"]) == (False, 900.0)


def test_a_start_limit_out_of_range_exits_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_main(["operator", "--dataset-check-start", "5"]) == 2
    err = capsys.readouterr().err
    assert "--dataset-check-start must be 10 to 86400 seconds, got 5" in err
    assert err.count("\n") == 1
