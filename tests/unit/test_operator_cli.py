"""`trainwright operator` rejects bad flags with one line naming the flag."""

from __future__ import annotations

import pytest

from trainwright.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics-port", "70000"], "--metrics-port must be 0 to 65535, got 70000"),
        (["--workers", "0"], "--workers must be a positive integer, got 0"),
        (["--liveness", "localhost:8081"], "--liveness must be an http(s) URL"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["operator", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_namespace_and_all_namespaces_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["operator", "-n", "a", "--all-namespaces"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_without_cluster_credentials_it_says_so_in_one_line(
    tmp_path: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["operator", "--metrics-port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainwright: error: no cluster credentials: set KUBECONFIG")
