"""hack/images/oci.py: the same tree gives the same layer and image digest, whatever the clock."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

OCI_PY = Path(__file__).resolve().parents[2] / "hack" / "images" / "oci.py"


@pytest.fixture(scope="module")
def oci() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oci", OCI_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path, *, mtime: int) -> Path:
    (root / "opt" / "venv" / "bin").mkdir(parents=True)
    (root / "opt" / "venv" / "lib").mkdir()
    (root / "opt" / "venv" / "bin" / "trainwright").write_text("#!/opt/venv/bin/python\n")
    (root / "opt" / "venv" / "bin" / "trainwright").chmod(0o755)
    (root / "opt" / "venv" / "lib" / "a.py").write_text("A = 1\n")
    os.link(root / "opt" / "venv" / "lib" / "a.py", root / "opt" / "venv" / "lib" / "b.py")
    (root / "opt" / "venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / "etc").mkdir()
    (root / "etc" / "left-out").write_text("not in the layer\n")
    for path in [root, *root.rglob("*")]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root


def test_the_same_tree_built_at_different_times_gives_the_same_layer(
    oci: ModuleType, tmp_path: Path
) -> None:
    first = _tree(tmp_path / "one", mtime=1_800_000_000)
    second = _tree(tmp_path / "two", mtime=1_900_000_000)
    digest_one = oci.write_layer(first, tmp_path / "one.tar", ["opt/venv"], set())
    digest_two = oci.write_layer(second, tmp_path / "two.tar", ["opt/venv"], set())
    assert digest_one == digest_two
    assert digest_one == hashlib.sha256((tmp_path / "one.tar").read_bytes()).hexdigest()


def test_a_layer_holds_the_prefix_with_its_parents_sorted_and_clamped(
    oci: ModuleType, tmp_path: Path
) -> None:
    root = _tree(tmp_path / "root", mtime=1_900_000_000)
    oci.write_layer(root, tmp_path / "layer.tar", ["opt/venv"], {"opt/venv/lib/b.py"})
    with tarfile.open(tmp_path / "layer.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:2] == ["opt", "opt/venv"]
    assert "etc/left-out" not in names and "opt/venv/lib/b.py" not in names
    assert {m.mtime for m in members} == {oci.DEFAULT_EPOCH}
    assert {(m.uname, m.gname) for m in members} == {("", "")}
    link = next(m for m in members if m.name == "opt/venv/bin/python")
    assert link.issym() and link.linkname == "/usr/bin/python3"
    script = next(m for m in members if m.name == "opt/venv/bin/trainwright")
    assert script.mode & 0o111


def test_an_image_layout_names_its_layers_and_its_digest_is_stable(
    oci: ModuleType, tmp_path: Path
) -> None:
    root = _tree(tmp_path / "root", mtime=1_800_000_000)
    layer = tmp_path / "layer.tar"
    layer_digest = oci.write_layer(root, layer, ["opt/venv"], set())
    config = {"Entrypoint": ["/opt/venv/bin/trainwright"], "User": "65532:65532"}
    first = oci.write_image(tmp_path / "img1", "trainwright/operator:0.1.0", [layer], config)
    second = oci.write_image(tmp_path / "img2", "trainwright/operator:0.1.0", [layer], config)
    assert first == second
    index = json.loads((tmp_path / "img1" / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["digest"] == first
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "trainwright/operator:0.1.0"
    manifest = json.loads(
        (tmp_path / "img1" / "blobs" / "sha256" / first.removeprefix("sha256:")).read_text()
    )
    assert [layer["digest"] for layer in manifest["layers"]] == [f"sha256:{layer_digest}"]
    image_config = json.loads(
        (
            tmp_path / "img1" / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]
        ).read_text()
    )
    assert image_config["config"] == config
    assert image_config["rootfs"]["diff_ids"] == [f"sha256:{layer_digest}"]
