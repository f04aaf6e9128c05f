"""The cluster's calibration store: what a run observed, written idempotently and bounded,
read back by the planner for the next TrainingJob of that shape."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from trainwright.api.v1alpha1 import TrainingJob
from trainwright.cli import main
from trainwright.operator.calibration_defaults import STORE_KEY, STORE_NAME
from trainwright.operator.calibration_store import (
    CalibrationStore,
    calibration_for,
    merged,
    record_from_status,
)
from trainwright.operator.inventory import build_inventory
from trainwright.operator.planning import plan_trainingjob

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)


class FakeConfigMaps:
    """The two ConfigMap calls the store makes, with resourceVersion conflicts like the API's."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes = 0

    def request(
        self, method: str, path: str, *, body: Any = None, content_type: str = ""
    ) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if method == "GET":
            if name not in self.objects:
                raise ApiException(status=404)
            return json.loads(json.dumps(self.objects[name]))
        self.writes += 1
        if method == "POST":
            name = body["metadata"]["name"]
            if name in self.objects:
                raise ApiException(status=409)
            self.objects[name] = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
            return self.objects[name]
        current = self.objects[name]
        if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        version = str(int(current["metadata"]["resourceVersion"]) + 1)
        current["data"] = body["data"]
        current["metadata"]["resourceVersion"] = version
        return current


def _body(
    name: str, *, uid: str, tokens: list[float], planned: dict[str, Any], peak: int | None = None
) -> dict[str, Any]:
    samples = [
        {"time": (NOW + datetime.timedelta(seconds=30 * i)).isoformat(), "tokensPerSecond": t}
        for i, t in enumerate(tokens)
    ]
    return {
        "metadata": {"name": name, "namespace": "team", "uid": uid},
        "spec": _spec(),
        "status": {
            "phase": "Running",
            "plan": planned,
            "throughput": samples,
            "progress": {"step": 10, "tokensPerSecond": tokens[-1], "peakMemoryBytes": peak},
        },
    }


def _spec() -> dict[str, Any]:
    return {
        "model": {"name": "llama-3.1-8b"},
        "method": "lora",
        "dataset": {"uri": "pvc://d/a.jsonl", "tokens": 20_000_000},
        "resources": {"gpuType": "H100-SXM", "gpus": 1},
    }


def _inventory() -> Any:
    nodes = [
        {
            "metadata": {"name": "h100", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}},
        }
    ]
    return build_inventory(nodes, [], product_to_gpu={"NVIDIA-H100": "H100-SXM"}.get)


def _job(annotations: dict[str, str] | None = None) -> TrainingJob:
    metadata = {"name": "next", "namespace": "team", "annotations": annotations or {}}
    return TrainingJob.from_body({"metadata": metadata, "spec": _spec()})


@pytest.fixture
def store() -> CalibrationStore:
    return CalibrationStore(FakeConfigMaps(), "trainwright", steady_seconds=300)  # type: ignore[arg-type]


def test_a_run_at_60_percent_is_recorded_once_and_the_next_plan_of_its_shape_is_calibrated(
    store: CalibrationStore,
) -> None:
    first = plan_trainingjob(_job(), _inventory(), calibration=calibration_for(store, _job()))
    assert first.plan is not None and first.plan.calibration is not None
    assert first.plan.calibration.observations == 0 and not first.plan.calibration.applied
    assert "no observed run of this shape among 0" in first.message
    planned = first.plan.tokens_per_second
    slow = 0.6 * planned
    # Peak memory as planned: only the throughput moves.
    peak = first.plan.memory_per_gpu_bytes
    body = _body("slow", uid="u1", tokens=[slow] * 11, planned=first.plan.to_manifest(), peak=peak)

    assert record_from_status(store, body, now=NOW)
    assert not record_from_status(store, body, now=NOW)  # the same figure: no write
    fake: FakeConfigMaps = store.kube  # type: ignore[assignment]
    assert fake.writes == 1
    document = json.loads(fake.objects[STORE_NAME]["data"][STORE_KEY])
    (observation,) = document["observations"]
    assert observation["tokens_per_second"] == pytest.approx(slow, rel=1e-6)
    assert observation["planned_tokens_per_second"] == pytest.approx(planned, rel=1e-6)
    assert observation["peak_memory_bytes"] == peak
    assert (observation["gpu"], observation["method"], observation["job"]) == (
        "H100-SXM",
        "lora",
        "team/slow/u1",
    )

    store._cache = None
    second = plan_trainingjob(_job(), _inventory(), calibration=calibration_for(store, _job()))
    assert second.plan is not None and second.plan.calibration is not None
    assert second.plan.calibration.applied and second.plan.calibration.observations == 1
    # One observation moves the plan half of the way in log space: sqrt(0.6).
    factor = math.sqrt(0.6)
    assert second.plan.calibration.throughput_factor == pytest.approx(factor, rel=1e-3)
    assert second.plan.tokens_per_second == pytest.approx(planned * factor, rel=1e-3)
    assert first.plan.estimated_duration_seconds is not None
    assert second.plan.estimated_duration_seconds == pytest.approx(
        first.plan.estimated_duration_seconds / factor, rel=1e-2
    )
    assert first.plan.estimated_cost_usd and second.plan.estimated_cost_usd
    assert second.plan.estimated_cost_usd == pytest.approx(
        first.plan.estimated_cost_usd / factor, rel=1e-2
    )
    assert "Calibrated from 1 observed run(s) of this shape in configmap trainwright/" in (
        second.message
    )
    assert f"throughput x{factor:.2f}" in second.message

    opted_out = _job({"trainwright.io/calibration": "off"})
    assert calibration_for(store, opted_out) is None
    assert calibration_for(None, _job()) is None


def test_a_running_job_is_recorded_only_once_its_readings_span_the_steady_time(
    store: CalibrationStore,
) -> None:
    plan = plan_trainingjob(_job(), _inventory()).plan
    assert plan is not None
    short = _body("young", uid="u2", tokens=[1000.0] * 5, planned=plan.to_manifest())  # 2 min
    assert not record_from_status(store, short, now=NOW)
    assert record_from_status(store, short, now=NOW, finished=True)  # Succeeded: what it read


def test_the_store_keeps_the_newest_n_per_shape_and_replaces_a_jobs_own_entry() -> None:
    def obs(job: str, gpu: str = "H100-SXM", tokens: float = 1.0) -> dict[str, Any]:
        return {"kind": "training", "gpu": gpu, "method": "lora", "strategy": "ddp",
                "model": "llama-3.1-8b", "job": job, "tokens_per_second": tokens}  # fmt: skip

    document: dict[str, Any] = {"observations": [obs("other", gpu="L4")]}
    for i in range(15):
        document = merged(document, obs(f"j{i}"), keep_per_shape=10)
    jobs = [o["job"] for o in document["observations"]]
    assert jobs == ["other", *[f"j{i}" for i in range(5, 15)]]
    document = merged(document, obs("j7", tokens=2.0), keep_per_shape=10)
    assert [o["job"] for o in document["observations"]].count("j7") == 1
    assert document["observations"][-1] == obs("j7", tokens=2.0)
    assert len(merged(document, obs("x"), keep_total=3)["observations"]) == 3


def test_a_concurrent_write_is_retried_against_the_new_version(store: CalibrationStore) -> None:
    fake: FakeConfigMaps = store.kube  # type: ignore[assignment]
    fake.objects[STORE_NAME] = {
        "metadata": {"name": STORE_NAME, "resourceVersion": "7"},
        "data": {STORE_KEY: json.dumps({"observations": []})},
    }
    original = fake.request
    raced = []

    def racing(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "PATCH" and not raced:
            raced.append(True)
            fake.objects[STORE_NAME]["metadata"]["resourceVersion"] = "8"
        return original(method, path, **kwargs)

    fake.request = racing  # type: ignore[method-assign]
    entry = {"kind": "training", "gpu": "L4", "method": "lora", "strategy": "ddp",
             "model": "m", "job": "a/b/c", "tokens_per_second": 5.0}  # fmt: skip
    assert store.record(entry)
    stored = json.loads(fake.objects[STORE_NAME]["data"][STORE_KEY])["observations"]
    assert stored == [entry] and raced


def test_calibration_cli_without_credentials_exits_2_with_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["calibration", "export", "-o", "json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trainwright: error: no cluster credentials") and "\n" not in err


def test_calibration_export_prints_the_store_as_a_file_plan_reads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    entry = {"kind": "training", "model": "llama-3.1-8b", "method": "lora", "gpu": "H100-SXM",
             "num_gpus": 1, "strategy": "ddp", "micro_batch": 4, "seq_len": 2048,
             "precision": "bf16", "tokens_per_second": 1500.0, "peak_memory_bytes": None,
             "planned_tokens_per_second": 2500.0, "job": "team/a/u"}  # fmt: skip
    config_map = {"data": {STORE_KEY: json.dumps({"observations": [entry]})}}

    class FakeKube:
        def __init__(self, *_: Any, **__: Any) -> None:
            pass

        def _get_or_none(self, path: str) -> dict[str, Any]:
            assert path == f"/api/v1/namespaces/ops/configmaps/{STORE_NAME}"
            return config_map

        def close(self) -> None:
            pass

    monkeypatch.setattr("trainwright.operator.kube.Kube", FakeKube)
    monkeypatch.setattr("trainwright.operator.kube.load_client_configuration", lambda: None)
    assert main(["calibration", "export", "-n", "ops", "-o", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported == {"observations": [entry]}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(exported))
    assert main(["plan", "training", "--model", "llama-3.1-8b", "--method", "lora", "--gpu",
                 "H100-SXM", "--gpus", "1", "--calibration", str(path), "-o", "json"]) == 0  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    assert plan["calibration"]["observations"] == 1 and plan["calibration"]["applied"]
    assert main(["calibration", "show", "-n", "ops", "-o", "table"]) == 0
    table = capsys.readouterr().out
    assert "team/a" in table and "1,500" in table and "60%" in table


def test_an_opted_out_job_is_not_recorded(store: CalibrationStore) -> None:
    plan = plan_trainingjob(_job(), _inventory()).plan
    assert plan is not None
    body = _body("private", uid="u3", tokens=[900.0] * 12, planned=plan.to_manifest())
    body["metadata"]["annotations"] = {"trainwright.io/calibration": "off"}
    assert not record_from_status(store, body, now=NOW, finished=True)
    assert STORE_NAME not in store.kube.objects  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("flags", "sentence"),
    [
        (["--throughput-window", "5"], "--throughput-window must be 10 to 1800 seconds"),
        (["--progress-endpoint", "localhost"], "--progress-endpoint must be HOST:PORT"),
        (["--calibration-namespace", "Bad_NS"], "--calibration-namespace must be a namespace"),
    ],
)
def test_bad_calibration_flags_exit_2_naming_the_flag(
    flags: list[str], sentence: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["operator", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert sentence in err and "\n" not in err


def test_a_store_the_operator_may_not_read_or_write_leaves_plans_to_the_physics() -> None:
    class Forbidden:
        def request(self, *_: Any, **__: Any) -> dict[str, Any]:
            raise ApiException(status=403, reason="Forbidden")

    store = CalibrationStore(Forbidden(), "trainwright")  # type: ignore[arg-type]
    calibration = calibration_for(store, _job())
    assert calibration is not None and calibration.observations == ()
    outcome = plan_trainingjob(_job(), _inventory(), calibration=calibration)
    assert outcome.reason == "Planned"
    entry = {"kind": "training", "gpu": "L4", "method": "lora", "strategy": "ddp",
             "model": "m", "job": "a/b/c", "tokens_per_second": 5.0}  # fmt: skip
    assert store.record(entry) is False


def test_a_succeeded_job_is_recorded_once_by_its_handler(store: CalibrationStore) -> None:
    import kopf

    from trainwright.operator.calibration_handlers import record_succeeded
    from trainwright.operator.context import OperatorContext
    from trainwright.operator.metrics import OperatorMetrics

    plan = plan_trainingjob(_job(), _inventory()).plan
    assert plan is not None
    body = _body("done", uid="u4", tokens=[2000.0, 2200.0], planned=plan.to_manifest())
    body["status"]["phase"] = "Succeeded"
    fake: FakeConfigMaps = store.kube  # type: ignore[assignment]
    context = OperatorContext(kube=fake, metrics=OperatorMetrics(), calibration_store=store)  # type: ignore[arg-type]
    memo = kopf.Memo(context=context)
    for _ in range(3):  # later events of the same object write nothing
        record_succeeded(body=kopf.Body(body), memo=memo)  # type: ignore[arg-type]
    assert fake.writes == 1
    (entry,) = json.loads(fake.objects[STORE_NAME]["data"][STORE_KEY])["observations"]
    assert entry["job"] == "team/done/u4" and entry["tokens_per_second"] == 2100.0
