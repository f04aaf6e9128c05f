"""hack/k8s/node.sh refuses to start with one sentence naming the missing piece and the step."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_SH = REPO / "hack" / "k8s" / "node.sh"
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns", "kubectl")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="node.sh checks for root first")


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(NODE_SH), "up"],
        env={**os.environ, "CLUSTER_DIR": str(tmp_path / "cluster"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _fake_bin(tmp_path: Path, missing: str = "") -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in NODE_BINARIES:
        if name != missing:
            (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
            (bin_dir / name).chmod(0o755)
    return bin_dir


def test_a_missing_kubelet_names_the_build_step(tmp_path: Path) -> None:
    done = _run(tmp_path, K8S_BIN=str(_fake_bin(tmp_path, missing="kubelet")))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"node: error: {tmp_path}/bin/kubelet is missing; run 'make k8s-bin' "
        "(hack/k8s/build.sh) first."
    ]


def test_unbuilt_images_name_the_image_step(tmp_path: Path) -> None:
    done = _run(
        tmp_path, K8S_BIN=str(_fake_bin(tmp_path)), TRAINWRIGHT_CACHE=str(tmp_path / "cache")
    )
    assert done.returncode == 1
    assert "the pause image is not built" in done.stderr
    assert "run 'make images'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_without_a_control_plane_it_says_to_start_one(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for image in ("pause", "operator", "trainer"):
        layout = cache / "images" / "oci" / image
        layout.mkdir(parents=True)
        (layout / "index.json").write_text("{}")
    done = _run(tmp_path, K8S_BIN=str(_fake_bin(tmp_path)), TRAINWRIGHT_CACHE=str(cache))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"node: error: no control plane in {tmp_path}/cluster; start it with 'make cluster-up'."
    )
    assert not (tmp_path / "cluster").exists(), "a refused start must leave nothing behind"
