"""The operator image: pinned versions that meet pyproject's minimums, no torch, a fixed non-root user.

Docker is not available here, so these read the Dockerfile and its pin file as text;
hack/images/build.sh builds the same image from the same pins without Docker.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "operator" / "Dockerfile"
PINS_FILE = ROOT / "operator" / "requirements.txt"
VALUES = ROOT / "helm" / "trainwright" / "values.yaml"
OPERATOR_UID = 65532


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in PINS_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        [spec] = list(requirement.specifier)
        assert spec.operator == "==", f"{line} is not pinned with =="
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{name} is pinned twice"
        pins[name] = Version(spec.version)
    return pins


def test_every_operator_dependency_is_pinned_at_or_above_the_pyproject_minimum() -> None:
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is an operator dependency but the image does not pin it"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} does not satisfy pyproject's {requirement}"
        )


def test_the_operator_image_carries_no_trainer_stack() -> None:
    pins = _pins()
    for heavy in ("torch", "transformers", "deepspeed", "peft", "accelerate", "bitsandbytes"):
        assert heavy not in pins, f"{heavy} has no place in the operator image"


def test_the_dockerfile_installs_the_pins_on_a_slim_base_as_a_fixed_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert "COPY operator/requirements.txt" in text
    assert "--requirement /tmp/requirements.txt" in text
    assert "pip install --no-deps ." in text
    assert f"USER {OPERATOR_UID}:{OPERATOR_UID}" in text.splitlines()
    assert 'ENTRYPOINT ["/opt/venv/bin/trainwright", "operator"]' in text


def test_the_chart_runs_the_image_as_its_user() -> None:
    import yaml

    values = yaml.safe_load(VALUES.read_text())
    pod = values["operator"]["podSecurityContext"]
    assert pod["runAsUser"] == OPERATOR_UID
    assert pod["runAsGroup"] == OPERATOR_UID
    assert pod["runAsNonRoot"] is True


def test_the_operator_starts_without_the_trainer_stack() -> None:
    """What the image lacks is blocked: importing the operator must not need it."""
    import subprocess
    import sys

    blocked = ("torch", "transformers", "peft", "deepspeed", "accelerate", "gguf", "safetensors")
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}));"
        "import trainwright.operator.main, trainwright.cli;"
        "from trainwright.cli import main; sys.exit(main(['operator', '--help']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--trainer-image" in result.stdout
