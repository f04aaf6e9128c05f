"""Deterministic OCI image layers and layouts, without a Docker engine.

Usage (hack/images/build.sh drives it):

    python3 oci.py layer ROOT OUT.tar [--prefix P ...] [--exclude P ...]
    python3 oci.py image LAYOUT_DIR --ref NAME:TAG --layer L.tar ... --config CONFIG.json

``layer`` writes an uncompressed tar of ROOT (only the subtrees under the given
``--prefix`` paths, when any), sorted by path, with every mtime clamped to
SOURCE_DATE_EPOCH, numeric owners and no user or group names, so the same tree gives
the same bytes, hence the same digest, on every run and machine. ``image`` writes an
OCI image layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
that ``ctr images import`` (or ``crane push``) takes, and prints the manifest digest.

Layers stay uncompressed (``application/vnd.oci.image.layer.v1.tar``): they only travel
over loopback into containerd, and gzip would cost minutes of the two cores for the
trainer's 5 GB of PyTorch, twice (once here, once when containerd unpacks).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z, overridden by SOURCE_DATE_EPOCH
CHUNK = 1 << 20


def _epoch() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))


def _walk(root: Path, prefixes: list[str], excludes: set[str]) -> list[str]:
    """Relative paths under ``root`` (directories before their contents), sorted."""
    starts = [p.strip("/") for p in prefixes] or [""]
    paths: list[str] = []
    for start in starts:
        parts = Path(start).parts
        for i in range(1, len(parts)):  # the prefix's parents, so the tar is self-contained
            paths.append(str(Path(*parts[:i])))
        top = root / start
        if not top.exists() and not top.is_symlink():
            raise SystemExit(f"oci.py: {top} does not exist")
        if start:
            paths.append(start)
        for dirpath, dirnames, filenames in os.walk(top):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir
            dirnames[:] = sorted(
                d for d in dirnames if os.path.join(rel_dir, d) not in excludes
            )
            for name in dirnames + sorted(filenames):
                rel = os.path.join(rel_dir, name)
                if rel not in excludes:
                    paths.append(rel)
    return sorted(set(paths))


def write_layer(root: Path, out: Path, prefixes: list[str], excludes: set[str]) -> str:
    """Write the layer tar and return its sha256 (which is also its diff id)."""
    epoch = _epoch()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.inodes = {}  # hard links are tracked per layer
        for rel in _walk(root, prefixes, excludes):
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            info.mtime = min(int(info.mtime), epoch)
            info.uname = info.gname = ""
            info.pax_headers = {}
            if info.isreg():
                with open(root / rel, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return _sha256(out)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return digest, len(data)


def write_image(layout: Path, ref: str, layers: list[Path], config: dict[str, object]) -> str:
    """An OCI layout holding one image made of ``layers``; returns ``sha256:<manifest>``."""
    if layout.exists():
        shutil.rmtree(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descriptors, diff_ids = [], []
    for layer in layers:
        digest = _sha256(layer)
        target = layout / "blobs" / "sha256" / digest
        try:
            os.link(layer, target)  # same file system: no copy of gigabytes
        except OSError:
            shutil.copyfile(layer, target)
        descriptors.append(
            {"mediaType": LAYER_MEDIA_TYPE, "digest": f"sha256:{digest}", "size": layer.stat().st_size}
        )
        diff_ids.append(f"sha256:{digest}")
    created = "1970-01-01T00:00:00Z"
    image_config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": "hack/images/build.sh"} for _ in layers],
    }
    config_digest, config_size = _blob(layout, _canonical(image_config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": f"sha256:{config_digest}", "size": config_size},
        "layers": descriptors,
    }
    manifest_digest, manifest_size = _blob(layout, _canonical(manifest))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": f"sha256:{manifest_digest}",
                "size": manifest_size,
                "annotations": {
                    "org.opencontainers.image.ref.name": ref,
                    # The name containerd's importer gives the image, as CRI looks it up.
                    "io.containerd.image.name": normalized_name(ref),
                },
            }
        ],
    }
    (layout / "index.json").write_bytes(_canonical(index))
    return f"sha256:{manifest_digest}"


def normalized_name(ref: str) -> str:
    """``trainwright/trainer:1`` -> ``docker.io/trainwright/trainer:1``, as Docker and CRI
    read a reference without a registry host; a reference with one is kept."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="oci.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    layer = commands.add_parser("layer", help="a deterministic tar of a directory tree")
    layer.add_argument("root", type=Path)
    layer.add_argument("out", type=Path)
    layer.add_argument("--prefix", action="append", default=[])
    layer.add_argument("--exclude", action="append", default=[])
    image = commands.add_parser("image", help="an OCI image layout from layer tars")
    image.add_argument("layout", type=Path)
    image.add_argument("--ref", required=True)
    image.add_argument("--layer", action="append", type=Path, required=True)
    image.add_argument("--config", type=Path, required=True, help="the image's runtime config (JSON)")
    args = parser.parse_args(argv)
    if args.command == "layer":
        excludes = {p.strip("/") for p in args.exclude}
        print(write_layer(args.root, args.out, args.prefix, excludes))
    else:
        config = json.loads(args.config.read_text())
        print(write_image(args.layout, args.ref, args.layer, config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
