"""The alerting rules: promtool checks and unit-tests them; every alert is documented.

The rules' one source is helm/trainwright/files/trainwright-rules.yaml (the chart's
PrometheusRule reads it; deploy/prometheus/trainwright-rules.yaml links to it).
deploy/prometheus/trainwright-rules.test.yaml holds a promtool test per alert: the
series that make it fire and the ones that must leave it quiet.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from chart_tools import render
from hack_dashboards import served_metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm/trainwright/files/trainwright-rules.yaml"
PLAIN = ROOT / "deploy/prometheus/trainwright-rules.yaml"
PROMTOOL_TESTS = ROOT / "deploy/prometheus/trainwright-rules.test.yaml"
RUNBOOKS = ROOT / "docs/runbooks.md"
ALERTS = {
    "TrainwrightTrainingJobWaitingToStart",
    "TrainwrightThroughputBelowPlan",
    "TrainwrightLossNotFinite",
    "TrainwrightLossSpikesRepeated",
    "TrainwrightCheckpointOverdue",
    "TrainwrightRestartsClimbing",
    "TrainwrightOperatorDown",
    "TrainwrightReconcileErrorsHigh",
    "TrainwrightCapacityForecastExceedsCluster",
}


# The object each group's alerts are about, by the label that names it.
OBJECT_LABEL = {
    "trainwright-trainingjobs": "trainingjob",
    "trainwright-capacity": "capacityplan",
    "trainwright-operator": None,
}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule | {"group": group["name"]} for group in groups for rule in group["rules"]]


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run `make system-deps`", pytrace=False)
    return path


def test_the_issue_s_alerts_are_all_there_and_nothing_else() -> None:
    assert {rule["alert"] for rule in _rules()} == ALERTS


def test_the_plain_rules_file_is_the_chart_s_file() -> None:
    assert PLAIN.resolve() == RULES.resolve()


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_each_alert_is_named_labelled_and_documented(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Trainwright(?:[A-Z][a-z0-9]*)+", rule["alert"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    if rule["alert"] != "TrainwrightOperatorDown":  # absent() has no object to name
        assert "{{ $labels.namespace }}" in annotations["description"]
    label = OBJECT_LABEL[rule["group"]]
    if label is not None:
        assert f"{{{{ $labels.{label} }}}}" in annotations["description"]
    anchor = annotations["runbook_url"].rsplit("#", 1)[1]
    assert anchor == rule["alert"].lower()
    assert f"\n## {rule['alert']}\n" in RUNBOOKS.read_text()
    promql_parser.parse(rule["expr"])


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    cases = [
        check
        for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
        for check in test.get("alert_rule_test", [])
    ]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert fires == ALERTS
    assert quiet == ALERTS


def _metric_names(expr: str) -> set[str]:
    names = set()
    pending = [promql_parser.parse(expr)]
    while pending:
        node = pending.pop()
        if type(node).__name__ == "VectorSelector":
            names.add(node.name)
        for attribute in ("expr", "lhs", "rhs", "vector_selector"):
            child = getattr(node, attribute, None)
            if child is not None and not isinstance(child, str | int | float):
                pending.append(child)
        pending += list(getattr(node, "args", None) or [])
    return names


def test_the_rules_and_their_tests_use_the_names_the_operator_and_trainer_serve() -> None:
    """Every metric an alert reads, and every series its promtool test feeds it, is exported
    by the real metric code (hack/dashboards/sample_data.py runs it)."""
    served = served_metric_names()
    for rule in _rules():
        assert _metric_names(rule["expr"]) <= served, rule["alert"]
    for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        for series in test["input_series"]:
            name = series["series"].split("{", 1)[0]
            assert name in served | {"up"}, name


@pytest.mark.prometheus
def test_promtool_check_rules_is_clean() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(PLAIN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@pytest.mark.prometheus
def test_promtool_test_rules_passes_for_every_alert() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", PROMTOOL_TESTS.name],
        cwd=PROMTOOL_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _chart_rules(values: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The PrometheusRule the chart renders with these values, as a rules file."""
    monitoring = {"monitoring": {"prometheusRule": {"enabled": True, **values}}}
    rules = [o for o in render(monitoring, tmp_path) if o["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    return {"groups": rules[0]["spec"]["groups"]}


@pytest.mark.prometheus
def test_the_chart_s_prometheus_rule_passes_promtool_check_and_every_unit_test(
    tmp_path: Path,
) -> None:
    """The rules as the chart renders them (helm template), not only the source file."""
    rendered = _chart_rules({}, tmp_path)
    assert rendered == yaml.safe_load(RULES.read_text())
    (tmp_path / "trainwright-rules.yaml").write_text(yaml.safe_dump(rendered))
    (tmp_path / "tests.yaml").write_text(PROMTOOL_TESTS.read_text())
    for argv in (["check", "rules", "trainwright-rules.yaml"], ["test", "rules", "tests.yaml"]):
        result = subprocess.run(
            [_promtool(), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_chart_disables_and_retunes_single_alerts(tmp_path: Path) -> None:
    values = {
        "alerts": {
            "TrainwrightOperatorDown": {"enabled": False},
            "TrainwrightCheckpointOverdue": {"for": "1h", "severity": "critical"},
        }
    }
    rules = {r["alert"]: r for g in _chart_rules(values, tmp_path)["groups"] for r in g["rules"]}
    assert set(rules) == ALERTS - {"TrainwrightOperatorDown"}
    assert rules["TrainwrightCheckpointOverdue"]["for"] == "1h"
    assert rules["TrainwrightCheckpointOverdue"]["labels"]["severity"] == "critical"
