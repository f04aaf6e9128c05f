"""Fixtures of the control-plane tests: `kube` (one cluster per session) and `namespace`.

Every test in tests/e2e is marked `e2e`. `kube` starts a private local control plane
(hack/k8s/cluster.sh in a temporary state dir) unless TRAINWRIGHT_E2E_KUBECONFIG names a
cluster; when the binaries are not built it fails with the command to run, it never skips.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from e2e.cluster import ClusterStartError, Kube, cluster_for_tests, wait_until

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The cluster the e2e tests use; a private one is stopped at the end of the session."""
    session = cluster_for_tests(tmp_path_factory.mktemp("cluster"))
    try:
        cluster = session.__enter__()
    except ClusterStartError as error:
        problem = str(error)
    else:
        problem = ""
    if problem:  # failed outside the except block, so the report is the one sentence
        pytest.fail(problem, pytrace=False)
    try:
        yield cluster
    finally:
        session.__exit__(None, None, None)


def _namespace_name(test_name: str) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in test_name.lower()).strip("-")
    return f"e2e-{stem[:40].rstrip('-')}-{secrets.token_hex(3)}"


@pytest.fixture(autouse=True)
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, ready for pods (its default ServiceAccount exists)."""
    name = _namespace_name(request.node.name)
    core = kube.core_v1
    core.create_namespace({"metadata": {"name": name, "labels": {"trainwright.io/e2e": "true"}}})

    def default_service_account() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    wait_until(default_service_account, timeout_s=30, what=f"ServiceAccount {name}/default")
    yield name
    core.delete_namespace(name, propagation_policy="Background")
