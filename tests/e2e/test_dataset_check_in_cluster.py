"""The dataset check on the real node: a CPU pod reads the dataset before any GPU is asked.

A broken file ends its TrainingJob Failed/DataError naming the bad rows, and no trainer
Job ever exists; a good one's measured token count is what `trainwright dataset inspect`
says with the model's tokenizer, and the plan uses it. The harness operator runs with
``--no-dataset-check`` (kwok's pods never run); these jobs opt in with the annotation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from e2e.cluster import Kube, wait_until
from e2e.operator_harness import (
    GROUP,
    VERSION,
    OperatorProcess,
    condition,
    create,
    operator,  # noqa: F401  (the module's operator fixture)
    status_of,
    wait_for_phase,
)
from e2e.test_real_node import (  # the tiny model and corpus on a hostPath claim
    CLAIM,
    POD_TIMEOUT_S,
    RANK_RESOURCE,
    TRAINER_IMAGE,
    TRAINER_UID,
    work_claim,
    work_volume,
)
from trainer_fixtures import TRAINER_DATA_DIR

__all__ = ["work_claim", "work_volume"]  # the fixtures

# A cold image import on the real node is minutes; a warm check pod takes seconds.
CHECK_TIMEOUT_S = POD_TIMEOUT_S
SEQ_LEN = 256  # long enough that only the four malformed rows are bad


def _trainingjob(name: str, work_volume: Path, dataset: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name, "annotations": {"trainwright.io/dataset-check": "on"}},
        "spec": {
            "model": {
                "configPath": str(work_volume / "model" / "config.json"),
                "uri": f"pvc://{CLAIM}/model",
            },
            "method": "full",
            "dataset": dataset,
            "training": {"seqLen": SEQ_LEN, "precision": "fp32", "maxSteps": 5},
            "resources": {"gpuType": "CPU", "nodes": 1, "gpusPerNode": 1},
            "image": TRAINER_IMAGE,
            # Planned, never run: the check is what this test is about.
            "suspend": True,
            "tolerations": [{"key": RANK_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"trainwright.io/real-node": "true"},
        },
    }


def _trainer_jobs(kube: Kube, namespace: str, name: str) -> list[str]:
    jobs = kube.batch_v1.list_namespaced_job(namespace, label_selector=f"trainwright.io/job={name}")
    return [j.metadata.name for j in jobs.items]


def _inspect(path: Path, tokenizer: Path) -> dict[str, Any]:
    """`trainwright dataset inspect -o json`, as a user runs it on their machine."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "trainwright"),
            "dataset",
            "inspect",
            str(path),
            "--tokenizer",
            str(tokenizer),
            "--seq-len",
            str(SEQ_LEN),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_a_broken_dataset_fails_before_any_gpu_and_a_good_ones_tokens_size_the_plan(
    kube: Kube,
    namespace: str,
    work_volume: Path,
    work_claim: str,
    operator: OperatorProcess,  # noqa: F811
) -> None:
    broken = work_volume / "data" / "broken.jsonl"
    shutil.copy(TRAINER_DATA_DIR / "bad_alpaca.jsonl", broken)
    shutil.chown(broken, TRAINER_UID, 0)

    started = time.monotonic()
    create(
        kube,
        namespace,
        "trainingjobs",
        _trainingjob(
            "bad-data",
            work_volume,
            {"uri": f"pvc://{CLAIM}/data/broken.jsonl", "format": "alpaca", "tokens": 100000},
        ),
    )
    failed = wait_for_phase(kube, namespace, "bad-data", "Failed", timeout_s=CHECK_TIMEOUT_S)
    bad_seconds = time.monotonic() - started
    reason = condition(failed, "Failed")
    assert reason["reason"] == "DataError", reason
    for row in (21, 22, 23, 24):
        assert f"row {row}: " in reason["message"], reason["message"]
    assert failed["dataset"]["state"] == "Failed"
    assert [b["row"] for b in failed["dataset"]["firstBadRows"]] == [21, 22, 23, 24]
    assert "plan" not in failed
    assert _trainer_jobs(kube, namespace, "bad-data") == []

    started = time.monotonic()
    create(
        kube,
        namespace,
        "trainingjobs",
        _trainingjob(
            "good-data",
            work_volume,
            {"uri": f"pvc://{CLAIM}/data/text.txt", "format": "text", "tokens": 200000},
        ),
    )
    planned = wait_for_phase(kube, namespace, "good-data", "Suspended", timeout_s=CHECK_TIMEOUT_S)
    good_seconds = time.monotonic() - started
    expected = _inspect(work_volume / "data" / "text.txt", work_volume / "model")
    found = planned["dataset"]
    assert found["state"] == "Passed"
    assert found["tokensEstimated"] is False
    assert found["tokens"] == expected["tokens"]["total"]
    assert found["tokensP95"] == expected["tokens"]["p95"]
    assert (found["rows"], found["validRows"]) == (expected["rows"], expected["valid_rows"])
    message = condition(planned, "Planned")["message"]
    tokens = expected["tokens"]["total"]
    assert f"Planned with the {tokens:,} tokens the dataset check counted" in message
    assert "instead of spec.dataset.tokens (200,000)" in message
    # The bad job's check never reached the trainer: still no Job, and its check Job is gone.
    assert _trainer_jobs(kube, namespace, "bad-data") == []
    wait_until(
        lambda: (
            not kube.batch_v1.list_namespaced_job(
                namespace, label_selector="trainwright.io/dataset-check"
            ).items
        ),
        timeout_s=60,
        what="the check Jobs to be deleted",
    )
    print(
        f"\ndataset check on the real node: broken file Failed in {bad_seconds:.1f} s "
        f"(pod read {failed['dataset'].get('checkSeconds')} s), good file planned in "
        f"{good_seconds:.1f} s (pod read {found.get('checkSeconds')} s); tokens {tokens} "
        f"(p95 {found['tokensP95']}) vs the spec's 200000"
    )
    assert status_of(kube, namespace, "trainingjobs", "good-data")["plan"]["gpuType"] == "CPU"
