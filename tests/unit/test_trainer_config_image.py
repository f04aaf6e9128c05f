"""The trainer image: pinned versions that meet pyproject's minimums and cover every import.

Docker is not available here, so these check the Dockerfile and its pin file as text.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "trainer-image" / "Dockerfile"
PINS_FILE = ROOT / "trainer-image" / "requirements.txt"
PACKAGE = ROOT / "trainer-image" / "trainwright_trainer"
# Core dependencies the trainer imports; the rest of the core list is the operator's.
TRAINER_CORE = {"pydantic", "pyyaml", "numpy", "prometheus-client"}


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in PINS_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        [spec] = list(requirement.specifier)
        assert spec.operator == "==", f"{line} is not pinned with =="
        pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def _torch_version() -> Version:
    match = re.search(r"^ARG TORCH_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "the Dockerfile declares no default TORCH_VERSION"
    return Version(match.group(1))


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = [Requirement(r) for r in project["optional-dependencies"]["trainer"]]
    listed += [
        r
        for r in map(Requirement, project["dependencies"])
        if canonicalize_name(r.name) in TRAINER_CORE
    ]
    return {canonicalize_name(r.name): r for r in listed}


def test_every_trainer_dependency_is_pinned_at_or_above_the_pyproject_minimum() -> None:
    pins = _pins() | {"torch": _torch_version()}
    for name, requirement in _pyproject_requirements().items():
        assert name in pins, f"{name} is a trainer dependency but the image does not pin it"
        assert requirement.specifier.contains(pins[name]), (
            f"the image pins {name}=={pins[name]}, outside pyproject's {requirement.specifier}"
        )


def test_torch_is_not_reinstalled_over_the_base_images_cuda_build() -> None:
    assert "torch" not in _pins()
    text = DOCKERFILE.read_text()
    assert "FROM pytorch/pytorch:${TORCH_VERSION}-${CUDA_TAG}" in text
    assert 'echo "torch==${TORCH_VERSION}" > /tmp/torch-constraint.txt' in text
    assert "--constraint /tmp/torch-constraint.txt" in text


def _with_their_requirements(names: set[str]) -> set[str]:
    # pydantic brings pydantic-core: what a pinned package requires is in the image too.
    provided = set(names)
    for name in names:
        try:
            provided |= {canonicalize_name(Requirement(r).name) for r in requires(name) or []}
        except PackageNotFoundError:
            continue
    return provided


def test_every_third_party_module_the_trainer_imports_is_in_the_image() -> None:
    provided = _with_their_requirements(set(_pins()) | {"torch"})
    dists = packages_distributions()
    missing = []
    for module in sorted(_third_party_imports()):
        names = {canonicalize_name(d) for d in dists.get(module, [])} or {canonicalize_name(module)}
        if not names & provided:
            missing.append(module)
    assert missing == []


def _third_party_imports() -> set[str]:
    modules: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    # The image installs the project itself (`pip install --no-deps .`): both its packages.
    project = {"trainwright_trainer", "trainwright"}
    return {m for m in modules if m not in sys.stdlib_module_names and m not in project}


def test_image_runs_as_a_non_root_user_with_torchrun_as_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    [user] = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user.split(":")[0] not in ("0", "root")
    assert re.search(r'^ENTRYPOINT \["torchrun"\]$', text, re.MULTILINE)
    assert (
        '"-m", "trainwright_trainer", "train", "--config", "/etc/trainwright/config.yaml"' in text
    )
    assert "HF_HUB_OFFLINE=1" in text
    assert "--requirement trainer-image/requirements.txt" in text
    assert "pip install --no-deps ." in text
