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
        (["--trainer-image", "a b"], "--trainer-image must be an image reference"),
        (["--peering", "Not_A_Name"], "--peering must be a Kubernetes object name"),
        (["--priority", "5"], "--priority needs --peering NAME"),
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


def test_the_trainer_image_and_peering_reach_the_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trainwright.operator.main as operator_main

    seen: dict[str, object] = {}
    monkeypatch.setattr(operator_main, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setenv("TRAINWRIGHT_TRAINER_IMAGE", "registry.example/trainer:from-env")
    assert main(["operator", "--peering", "trainwright", "--priority", "7"]) == 0
    assert seen["trainer_image"] == "registry.example/trainer:from-env"
    assert seen["peering"] == operator_main.Peering(name="trainwright", priority=7)
    assert main(["operator", "--trainer-image", "mine/trainer:1"]) == 0
    assert seen["trainer_image"] == "mine/trainer:1"
    assert seen["peering"] is None


def test_replicas_without_a_priority_draw_different_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainwright.operator.main as operator_main

    priorities: list[int] = []
    monkeypatch.setattr(
        operator_main, "run", lambda **kwargs: priorities.append(kwargs["peering"].priority)
    )
    for _ in range(2):
        assert main(["operator", "--peering", "trainwright"]) == 0
    assert priorities[0] != priorities[1]
    assert all(p > 0 for p in priorities)
