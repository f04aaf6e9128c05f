"""hack/lib/go.sh: the Go toolchain check and build environment every Go build script uses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

GO_LIB = Path(__file__).resolve().parents[2] / "hack" / "lib" / "go.sh"


def _bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . "{GO_LIB}"; {script}'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )


def _fake_go(tmp_path: Path, version: str) -> Path:
    go = tmp_path / "go"
    go.write_text(f'#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && echo go{version}\n')
    go.chmod(0o755)
    return go


def test_a_new_enough_go_passes_and_the_build_env_points_at_the_cache(tmp_path: Path) -> None:
    go = _fake_go(tmp_path, "1.26.8")
    done = _bash(
        'require_go "Kueue v0.17.0" 1.25; go_build_env "$CACHE" -mod=mod; '
        'echo "$GOMODCACHE $GOCACHE $GOTOOLCHAIN $CGO_ENABLED $GOSUMDB $GOFLAGS"',
        GO=str(go),
        CACHE=str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr
    cache = tmp_path / "cache" / "go"
    assert done.stdout.split() == [
        f"{cache}/mod",
        f"{cache}/build",
        "local",
        "0",
        "off",
        "-mod=mod",
    ]
    assert (cache / "mod").is_dir() and (cache / "build").is_dir()


def test_an_old_go_exits_1_naming_what_it_was_building_and_the_version_needed(
    tmp_path: Path,
) -> None:
    done = _bash('require_go "Kueue v0.17.0" 1.25', GO=str(_fake_go(tmp_path, "1.9.2")))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: Go 1.9.2 is too old; Kueue v0.17.0 needs Go >= 1.25 (https://go.dev/dl/)."
    )


def test_no_go_on_path_exits_1_with_one_sentence() -> None:
    done = _bash('require_go "helm" 1.26', GO="no-such-go")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: the Go toolchain ('no-such-go') is not on PATH; install Go >= 1.26 "
        "(https://go.dev/dl/) to build helm."
    )


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain on this machine")
def test_this_machine_s_go_passes_the_check_every_build_script_makes() -> None:
    assert _bash("require_go everything 1.24", GO=str(shutil.which("go"))).returncode == 0
