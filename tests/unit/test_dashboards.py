"""The Grafana dashboards (hack/dashboards/dashboards.py -> helm/trainwright/dashboards/*.json).

Committed JSON matches the generator, validates against Grafana's dashboard schema
(../shared/reference/grafana-dashboard.jsonschema.json), passes the rules of
grafana/dashboard-linter re-implemented here, and every query parses (promql-parser)
and returns at least one series from a real Prometheus serving what the operator and
a trainer export (hack/dashboards/sample_data.py backfills it from the real metric code).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import promql_parser
import pytest

from hack_dashboards import (
    NAMES,
    OUT,
    dashboard,
    load,
    panels,
    resolve,
    served_metric_names,
    targets,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "reference" / "grafana-dashboard.jsonschema.json"
# Grafana's unit ids the panels use (pkg/valueformats: the linter's panel-units-rule list).
VALID_UNITS = {
    "none",
    "short",
    "percentunit",
    "bytes",
    "s",
    "ops",
    "reqps",
    "currencyUSD",
    "joule",
    "masskg",
}
RATE_FUNCTIONS = {"rate", "irate", "increase"}


def _targets() -> list[Any]:
    return [
        pytest.param(name, title, expr, id=f"{name}-{title}-{ref}")
        for name, title, ref, expr in targets()
    ]


# Generated, committed, valid ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_json_is_what_the_generator_writes(name: str) -> None:
    generate = load("generate")
    assert (OUT / f"{name}.json").read_text() == generate.render(name), (
        f"helm/trainwright/dashboards/{name}.json drifted: run `make dashboards`"
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_dashboard_validates_against_grafana_s_schema(name: str) -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(dashboard(name))]
    assert errors == []


def test_the_grafana_foundation_sdk_is_the_grafana_11_6_flavour() -> None:
    from importlib.metadata import version

    assert version("grafana-foundation-sdk").endswith("!11.6.0")


# grafana/dashboard-linter's rules --------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_template_datasource_rule(name: str) -> None:
    """A ``datasource`` variable of type prometheus, and every panel and target uses it."""
    variables = {v["name"]: v for v in dashboard(name)["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(name):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("training", ["namespace", "trainingjob"]), ("capacity", ["namespace", "capacityplan"])],
)
def test_object_template_variables(name: str, expected: list[str]) -> None:
    variables = {v["name"]: v for v in dashboard(name)["templating"]["list"]}
    for variable in expected:
        assert variables[variable]["type"] == "query"
        assert variables[variable]["datasource"]["uid"] == "${datasource}"
        assert variables[variable]["query"].startswith("label_values(")
    for panel in panels(name):
        for target in panel["targets"]:
            if "gpu_type)" not in target["expr"] or "capacityplan" in target["expr"]:
                assert "$namespace" in target["expr"], (panel["title"], target["expr"])


@pytest.mark.parametrize("name", NAMES)
def test_panel_title_description_rule(name: str) -> None:
    titles = [panel["title"] for panel in panels(name)]
    assert len(set(titles)) == len(titles)
    for panel in panels(name):
        assert panel["title"].strip() and panel["title"][0].isupper()
        assert len(panel.get("description", "")) >= 20, panel["title"]


@pytest.mark.parametrize("name", NAMES)
def test_panel_units_rule(name: str) -> None:
    for panel in panels(name):
        assert panel["fieldConfig"]["defaults"].get("unit") in VALID_UNITS, panel["title"]


def _walk(node: Any, parents: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    yield node, parents
    children: list[Any] = []
    for attribute in ("expr", "lhs", "rhs", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            children.append(child)
    children += list(getattr(node, "args", None) or [])
    for child in children:
        yield from _walk(child, (*parents, node))


@pytest.mark.parametrize(("name", "title", "expr"), _targets())
def test_target_promql_rule_and_rate_interval_rule(name: str, title: str, expr: str) -> None:
    """Each query parses; every range is $__rate_interval; counters only inside rate()."""
    assert "[" not in expr or all(
        r == "[$__rate_interval]" for r in re.findall(r"\[[^\]]*\]", expr)
    )
    tree = promql_parser.parse(resolve(expr))
    for node, parents in _walk(tree):
        if type(node).__name__ != "VectorSelector":
            continue
        if node.name.endswith(("_total", "_bucket")):
            calls = [p.func.name for p in parents if type(p).__name__ == "Call"]
            assert calls and calls[-1] in RATE_FUNCTIONS, f"{node.name} outside rate(): {expr}"


def test_every_metric_a_panel_reads_is_served_by_the_operator_the_trainer_or_kueue() -> None:
    served = served_metric_names()
    for name in NAMES:
        for panel in panels(name):
            for target in panel["targets"]:
                for node, _ in _walk(promql_parser.parse(resolve(target["expr"]))):
                    if type(node).__name__ == "VectorSelector":
                        assert node.name in served, (panel["title"], node.name)


# Against a real Prometheus ----------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sample_data = load("sample_data")
    try:
        with sample_data.prometheus_with_sample_data(tmp_path_factory.mktemp("grafana")) as server:
            yield server
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.mark.prometheus
@pytest.mark.parametrize(("name", "title", "expr"), _targets())
def test_every_panel_query_returns_series(
    prometheus: Any, name: str, title: str, expr: str
) -> None:
    response = httpx.get(
        f"{prometheus.url}/api/v1/query",
        params={"query": resolve(expr), "time": prometheus.end},
        timeout=30,
    )
    body = response.json()
    assert response.status_code == 200, body
    assert len(body["data"]["result"]) >= 1, f"{name} / {title}: no series for {resolve(expr)}"


@pytest.mark.prometheus
@pytest.mark.parametrize("name", ["training", "capacity"])
def test_every_template_variable_lists_values(prometheus: Any, name: str) -> None:
    for variable in dashboard(name)["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert found is not None, variable["query"]
        selector, label = resolve(found.group(1)), found.group(2)
        response = httpx.get(
            f"{prometheus.url}/api/v1/label/{label}/values",
            params={"match[]": selector, "start": prometheus.end - 3600, "end": prometheus.end},
            timeout=30,
        )
        assert response.json()["data"], f"{variable['name']}: no values for {variable['query']}"
