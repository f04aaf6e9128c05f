"""The Helm chart: lints strictly, renders every toggle into objects Kubernetes accepts,
grants exactly the operator's API calls, runs it restricted, and rejects a typo by name.

Needs the tools `make tools` builds (helm v4, helm-unittest, kubeconform and the
Kubernetes JSON schemas): without them these fail saying so. The server-side checks
(install, upgrade, RBAC authorizer, a Pod Security restricted namespace) are e2e tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_resources_trainer_security import restricted_violations

import trainwright
from chart_tools import CHART, ROOT, SCHEMAS, TOGGLES, render, render_text, run, tool
from trainwright.api.crdgen import KINDS, crd_for, render_chart_template
from trainwright.api.v1alpha1.trainingjob import DEFAULT_TRAINER_IMAGE
from trainwright.operator.plan_first import DEFAULT_WORKERS

# Kinds whose schema comes from a CRD that is not Kubernetes' own: the Prometheus
# Operator's, and kopf's peering (whose CRD the chart renders; checked below).
_CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "KopfPeering", "ClusterKopfPeering"}

# The operator's API calls (operator/trainwright/operator/kube.py, kopf's watches, posts
# and patches), the one table docs/install.md prints. (group, resource) -> verbs.
NAMESPACED_RULES = {
    ("trainwright.io", "trainingjobs"): {"get", "list", "watch", "patch"},
    ("trainwright.io", "capacityplans"): {"get", "list", "watch", "patch"},
    ("trainwright.io", "modelexports"): {"get", "list", "watch", "patch", "create"},
    ("trainwright.io", "trainingjobs/status"): {"patch"},
    ("trainwright.io", "capacityplans/status"): {"patch"},
    ("trainwright.io", "modelexports/status"): {"patch"},
    ("", "configmaps"): {"get", "create", "delete", "patch"},
    ("", "services"): {"get", "create"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete", "patch"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"create", "list"},
    ("", "persistentvolumeclaims"): {"get"},
    ("kueue.x-k8s.io", "localqueues"): {"get"},
    ("kueue.x-k8s.io", "workloads"): {"list", "patch"},
    ("visibility.kueue.x-k8s.io", "localqueues/pendingworkloads"): {"get"},
}
# With operator.watchNamespaces, the release's own namespace holds the calibration store.
CALIBRATION_RULES = {("", "configmaps"): {"get", "create", "patch"}}
CLUSTER_RULES = {
    ("", "nodes"): {"list", "watch"},
    ("", "pods"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """A Role's or ClusterRole's rules as (group, resource) -> verbs."""
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules") or []:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return {name: render(values, tmp_path_factory.mktemp(name)) for name, values in TOGGLES.items()}


def test_helm_lint_strict_passes_for_the_defaults_and_every_toggle(tmp_path: Path) -> None:
    for name, values in TOGGLES.items():
        values_file = tmp_path / f"{name}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        result = run(tool("helm"), "lint", "--strict", CHART, "--values", values_file, check=False)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
def test_every_rendered_object_matches_its_kubernetes_schema(toggle: str, tmp_path: Path) -> None:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(render_text(TOGGLES[toggle], tmp_path))
    objects = [doc for doc in yaml.safe_load_all(manifest.read_text()) if doc]
    checked = [o for o in objects if o["kind"] not in _CRD_KINDS]
    result = run(
        tool("kubeconform"),
        "-strict",
        "-summary",
        "-output",
        "json",
        "-kubernetes-version",
        SCHEMAS.name.removeprefix("v"),
        "-schema-location",
        f"{SCHEMAS}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        "-skip",
        ",".join(sorted(_CRD_KINDS)),
        manifest,
        check=False,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["resources"] == [], result.stdout + result.stderr
    assert report["summary"]["valid"] == len(checked) >= 3
    assert report["summary"]["skipped"] == len(objects) - len(checked)
    assert report["summary"]["errors"] == report["summary"]["invalid"] == 0


def test_kubeconform_rejects_what_the_api_server_would(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    text = render_text({}, tmp_path).replace("revisionHistoryLimit: 3", "revisionHistoryLimt: 3")
    manifest.write_text(text)
    result = run(
        tool("kubeconform"),
        "-strict",
        "-schema-location",
        f"{SCHEMAS}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        manifest,
        check=False,
    )
    assert result.returncode == 1
    assert "additional properties 'revisionHistoryLimt' not allowed" in result.stdout


def test_defaults_install_crds_operator_account_rbac_and_metrics_service(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    kinds = sorted(o["kind"] for o in renders["defaults"])
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    monitoring = sorted(o["kind"] for o in renders["monitoring"])
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert kind in monitoring
    dashboards = [o for o in of_kind(renders["monitoring"], "ConfigMap")]
    assert len(dashboards) == len(list((CHART / "dashboards").glob("*.json")))
    assert all(d["metadata"]["labels"]["grafana_dashboard"] == "1" for d in dashboards)


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
def test_rbac_has_no_wildcard_no_secrets_no_exec_and_reads_nodes_only(
    toggle: str, renders: dict[str, list[dict[str, Any]]]
) -> None:
    roles = of_kind(renders[toggle], "Role") + of_kind(renders[toggle], "ClusterRole")
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{role['metadata']['name']}: wildcard in {key}"
            assert "nonResourceURLs" not in rule
            assert "resourceNames" not in rule
        table = grants(role)
        assert not [r for (_, r) in table if r == "secrets"], "secrets are never read"
        assert not [r for (_, r) in table if r.startswith("pods/")], "no exec/attach/portforward"
        assert table.get(("", "nodes"), set()) <= {"get", "list", "watch"}


def test_cluster_wide_rbac_is_exactly_the_operators_calls(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    [cluster_role] = of_kind(renders["defaults"], "ClusterRole")
    expected = dict(CLUSTER_RULES)
    for key, verbs in NAMESPACED_RULES.items():
        expected[key] = expected.get(key, set()) | verbs
    assert grants(cluster_role) == expected
    [binding] = of_kind(renders["defaults"], "ClusterRoleBinding")
    [account] = of_kind(renders["defaults"], "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "trainwright"}
    ]


def test_watched_namespaces_get_roles_and_no_cluster_rule_on_their_objects(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    objects = renders["namespaced"]
    [cluster_role] = of_kind(objects, "ClusterRole")
    # Cluster-wide stays only what is cluster-wide by nature: the GPU inventory (nodes, and
    # pods of every namespace, read), kopf's view of CRDs and namespaces (read).
    assert grants(cluster_role) == CLUSTER_RULES | {("", "namespaces"): {"list", "watch"}}
    roles = of_kind(objects, "Role")
    namespaces = ["team-a", "team-b", "trainwright"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == namespaces
    assert all(
        grants(r) == NAMESPACED_RULES for r in roles if r["metadata"]["namespace"] != "trainwright"
    )
    [store_role] = [r for r in roles if r["metadata"]["namespace"] == "trainwright"]
    assert grants(store_role) == CALIBRATION_RULES
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == namespaces
    [deployment] = of_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args


def test_a_standby_adds_peering_and_only_its_rbac(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    [deployment] = of_kind(renders["standby"], "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    [cluster_role] = of_kind(renders["standby"], "ClusterRole")
    assert grants(cluster_role)[("kopf.dev", "clusterkopfpeerings")] == {
        "get",
        "list",
        "watch",
        "patch",
    }
    [peering] = of_kind(renders["standby"], "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "trainwright"
    assert of_kind(renders["standby"], "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1
    [role] = [
        r
        for r in of_kind(renders["standby-namespaced"], "Role")
        if r["metadata"]["namespace"] == "team-a"
    ]
    assert grants(role)[("kopf.dev", "kopfpeerings")] == {"get", "list", "watch", "patch"}
    [peering] = of_kind(renders["standby-namespaced"], "KopfPeering")
    assert peering["metadata"]["namespace"] == "team-a"


def test_one_replica_replaced_not_surged_and_no_disruption_budget_by_default(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    [deployment] = of_kind(renders["defaults"], "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not of_kind(renders["defaults"], "PodDisruptionBudget")


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
def test_the_operator_pod_is_restricted_read_only_and_bounded(
    toggle: str, renders: dict[str, list[dict[str, Any]]]
) -> None:
    [deployment] = of_kind(renders[toggle], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_default_images_are_the_app_version_and_the_operator_passes_the_trainers(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == chart["version"] == trainwright.__version__
    [deployment] = of_kind(renders["defaults"], "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"trainwright/operator:{chart['appVersion']}"
    assert f"--trainer-image={DEFAULT_TRAINER_IMAGE}" in container["args"]
    # The chart's default thread count is the operator's own (plan_first.DEFAULT_WORKERS).
    assert f"--workers={DEFAULT_WORKERS}" in container["args"]
    [deployment] = of_kind(renders["images"], "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/operator:1.2"
    assert f"--trainer-image=trainwright/trainer@sha256:{'0' * 64}" in container["args"]


def test_the_config_checksum_moves_with_the_operators_flags_and_rbac(tmp_path: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        [deployment] = of_kind(render(values, tmp_path), "Deployment")
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({"operator": {"workers": 4}}) != base
    assert checksum({"operator": {"watchNamespaces": ["team-a"]}}) != base
    assert checksum({"metricsService": {"annotations": {"a": "b"}}}) == base


def test_a_typo_in_a_value_fails_naming_the_key(tmp_path: Path) -> None:
    values_file = tmp_path / "typo.yaml"
    values_file.write_text("operator:\n  wokers: 4\n")
    result = run(tool("helm"), "template", "tw", CHART, "--values", values_file, check=False)
    assert result.returncode != 0
    assert "at '/operator': additional properties 'wokers' not allowed" in result.stderr
    result = run(
        tool("helm"), "template", "tw", CHART, "--set", "monitoring.grafana=true", check=False
    )
    assert "additional properties 'grafana' not allowed" in result.stderr


def test_an_unknown_alert_override_fails_naming_it(tmp_path: Path) -> None:
    values_file = tmp_path / "alerts.yaml"
    values_file.write_text(
        yaml.safe_dump(
            {"monitoring": {"prometheusRule": {"enabled": True, "alerts": {"NoSuchAlert": {}}}}}
        )
    )
    result = run(tool("helm"), "template", "tw", CHART, "--values", values_file, check=False)
    assert result.returncode != 0
    assert "monitoring.prometheusRule.alerts.NoSuchAlert: no such alert" in result.stderr


def test_the_schema_is_strict_everywhere_and_self_contained() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node or str(node["$ref"]).startswith("#"), f"{path}: remote $ref"
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    walk(schema, "")
    assert open_objects == []
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_the_chart_crds_are_the_generated_ones() -> None:
    directory = CHART / "templates" / "crds"
    assert sorted(p.name for p in directory.glob("*.yaml")) == sorted(
        f"{kind.plural}.yaml" for kind in KINDS
    ), "run make crds"
    for kind in KINDS:
        actual = (directory / f"{kind.plural}.yaml").read_text(encoding="utf-8")
        assert actual == render_chart_template(crd_for(kind)), (
            f"helm/trainwright/templates/crds/{kind.plural}.yaml drifted: run make crds"
        )


def test_rendered_crds_equal_crds_dir_apart_from_chart_metadata(
    renders: dict[str, list[dict[str, Any]]],
) -> None:
    rendered = {
        o["metadata"]["name"]: o for o in of_kind(renders["defaults"], "CustomResourceDefinition")
    }
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        plain = yaml.safe_load(path.read_text())
        chart = rendered[plain["metadata"]["name"]]
        assert chart["spec"] == plain["spec"]
        assert chart["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert not of_kind(renders["no-crds-no-rbac"], "CustomResourceDefinition")
    for crd in of_kind(renders["crds-deleted-on-uninstall"], "CustomResourceDefinition"):
        assert "annotations" not in crd["metadata"]


def test_helm_unittest_suites_pass_one_per_knob() -> None:
    suites = sorted((CHART / "tests").glob("*_test.yaml"))
    assert len(suites) >= 7
    result = run(tool("untt"), "--color=false", CHART, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Test Suites: {len(suites)} passed, {len(suites)} total" in result.stdout
    match = re.search(r"Tests:\s+(\d+) passed, (\d+) total", result.stdout)
    assert match and match[1] == match[2] and int(match[1]) >= 30, result.stdout


def test_the_prometheus_rule_carries_the_rules_file_unchanged_by_default(tmp_path: Path) -> None:
    # So promtool's checks and unit tests of files/trainwright-rules.yaml hold for the chart.
    objects = render({"monitoring": {"prometheusRule": {"enabled": True}}}, tmp_path)
    [rule] = of_kind(objects, "PrometheusRule")
    source = yaml.safe_load((CHART / "files" / "trainwright-rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
