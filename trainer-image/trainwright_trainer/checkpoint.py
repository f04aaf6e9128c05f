"""Sharded checkpoints that are either complete or invisible.

A checkpoint is written with ``torch.distributed.checkpoint`` (every rank writes
its own shards, optionally in the background) into a staging directory, then
published by a protocol that a crash at any point cannot turn into a checkpoint
that resume would load half of::

    <root>/step-000120.tmp-<nonce>/    1. every rank writes DCP shards (or the DeepSpeed
        dcp/ | deepspeed/                 engine's files) and its own extra state
        extra/rank-00000.pt            2. barrier: all ranks are done
        manifest.json                  3. rank 0 hashes every file (sha256 + size) into
                                          manifest.json, fsyncs files and directory
    <root>/step-000120/                4. rename staging -> final (atomic on POSIX)
    <root>/latest                      5. pointer replaced atomically (tmp + os.replace
                                          + fsync of the directory)

Resume (:func:`find_resume_checkpoint`) reads the pointer, verifies the manifest
(every file present with its size and hash) and falls back to the newest older
complete checkpoint when verification fails; a directory without a valid
manifest is never loaded. Retention keeps the newest ``keep_last`` complete
checkpoints, and the best one by eval loss when evaluation runs. Staging
directories left by a crash are deleted at start-up.

``<root>/best.json`` marks the checkpoint with the lowest eval loss, for the
exporter and for people: ``{"checkpoint": "step-000120", "step": 120,
"eval_loss": float, "eval_perplexity": float|null}``, replaced atomically and
written only once that checkpoint is published.

The layout and the atomic-publish idea follow torchtitan's checkpointer
(``torchtitan/components/checkpoint.py``) and nanochat's checkpoint manager.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "BEST_MARKER_NAME",
    "MANIFEST_NAME",
    "POINTER_NAME",
    "CheckpointError",
    "CheckpointManager",
    "find_resume_checkpoint",
    "list_complete_checkpoints",
    "step_dir_name",
    "verify_checkpoint",
    "write_manifest",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
POINTER_NAME = "latest"
BEST_MARKER_NAME = "best.json"
MANIFEST_VERSION = 1
_STEP_RE = re.compile(r"^step-(\d{6,})$")
_STAGING_RE = re.compile(r"^step-(\d{6,})\.tmp-[0-9a-f]+$")
_HASH_CHUNK_BYTES = 8 * 1024 * 1024


class CheckpointError(Exception):
    """A checkpoint failed verification (missing file, wrong size or hash, no manifest)."""


def step_dir_name(step: int) -> str:
    """``step-000123``: zero-padded so names sort like steps."""
    return f"step-{step:06d}"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    # Directories must be fsynced too, or a rename can be lost on power failure.
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)


def _payload_files(ckpt_dir: Path) -> list[Path]:
    return sorted(p for p in ckpt_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def _hash_all(paths: list[Path]) -> list[str]:
    # hashlib releases the GIL on large buffers: threads hash shards in parallel
    # (a 1B-parameter full fine-tune checkpoint is ~15 GB of shards).
    workers = max(1, min(8, len(paths), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_sha256_file, paths))


def write_manifest(ckpt_dir: Path, *, step: int, meta: dict[str, Any] | None = None) -> Path:
    """Hash every file under ``ckpt_dir`` into ``manifest.json`` (fsynced) and return its path."""
    paths = _payload_files(ckpt_dir)
    for path in paths:
        _fsync_path(path)
    files = {
        path.relative_to(ckpt_dir).as_posix(): {"bytes": path.stat().st_size, "sha256": digest}
        for path, digest in zip(paths, _hash_all(paths), strict=True)
    }
    manifest = {
        "version": MANIFEST_VERSION,
        "step": step,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        "meta": meta or {},
    }
    target = ckpt_dir / MANIFEST_NAME
    _atomic_write_text(target, json.dumps(manifest, indent=1, sort_keys=True))
    for sub in {p.parent for p in _payload_files(ckpt_dir)}:
        _fsync_path(sub)
    return target


def verify_checkpoint(ckpt_dir: Path) -> dict[str, Any]:
    """Return the manifest of a complete checkpoint, or raise :class:`CheckpointError`.

    Complete means: a parseable manifest, every listed file present with the
    listed size and sha256, and no payload file the manifest does not list.
    """
    manifest_path = ckpt_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CheckpointError(f"{ckpt_dir} has no {MANIFEST_NAME}; it is not a complete checkpoint")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files: dict[str, dict[str, Any]] = manifest["files"]
        int(manifest["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest_path} is unreadable: {exc}") from None
    if not files:
        raise CheckpointError(f"{manifest_path} lists no files")
    for rel, entry in files.items():
        path = ckpt_dir / rel
        if not path.is_file():
            raise CheckpointError(f"{ckpt_dir}: file {rel} listed in the manifest is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(
                f"{ckpt_dir}: file {rel} has {size} bytes, the manifest says {entry['bytes']}"
            )
    names = sorted(files)
    for rel, digest in zip(names, _hash_all([ckpt_dir / n for n in names]), strict=True):
        if digest != files[rel]["sha256"]:
            raise CheckpointError(f"{ckpt_dir}: file {rel} does not match its sha256")
    extra = {p.relative_to(ckpt_dir).as_posix() for p in _payload_files(ckpt_dir)} - set(files)
    if extra:
        raise CheckpointError(f"{ckpt_dir}: files not in the manifest: {sorted(extra)[:3]}")
    return dict(manifest)


def list_complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Final-named checkpoint directories (``step-NNNNNN``), oldest first; not verified."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def find_resume_checkpoint(root: Path) -> tuple[int, Path] | None:
    """The checkpoint to resume from: the pointer's target if it verifies, else the newest that does.

    Returns ``(step, directory)`` or None when there is no complete checkpoint.
    Broken candidates are logged and skipped, never loaded.
    """
    candidates = list(reversed(list_complete_checkpoints(root)))
    pointer = root / POINTER_NAME
    if pointer.is_file():
        target = root / pointer.read_text(encoding="utf-8").strip()
        match = _STEP_RE.match(target.name)
        if match and target.is_dir():
            candidates.insert(0, (int(match.group(1)), target))
    seen: set[Path] = set()
    for step, path in candidates:
        if path in seen:
            continue
        seen.add(path)
        try:
            manifest = verify_checkpoint(path)
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s", exc)
            continue
        if int(manifest["step"]) != step:
            log.warning("skipping checkpoint %s: manifest step %s", path, manifest["step"])
            continue
        return step, path
    return None


def _default_barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _broadcast_from_rank0(value: Any) -> Any:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclass
class _PendingSave:
    step: int
    staging: Path
    future: Future[Any] | None
    started_at: float
    meta: dict[str, Any] = field(default_factory=dict)


class CheckpointManager:
    """Saves and finds checkpoints under one root with the staging/manifest/pointer protocol.

    ``write_state`` (called on every rank with the staging directory) writes the
    shards; it may return a future (``dcp.async_save``), in which case the
    checkpoint is published by :meth:`wait` — at the next save, before a load,
    and at the end — so training overlaps the write. Every rank must call
    :meth:`save`, :meth:`wait` and :meth:`resume_point` in the same order: they
    contain barriers.
    """

    def __init__(
        self,
        root: Path,
        *,
        rank: int,
        keep_last: int,
        barrier: Callable[[], None] = _default_barrier,
        broadcast: Callable[[Any], Any] = _broadcast_from_rank0,
        on_published: Callable[[int, float], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.rank = rank
        self.keep_last = keep_last
        self._barrier = barrier
        self._broadcast = broadcast
        self._on_published = on_published
        self._pending: _PendingSave | None = None
        self.last_published_step: int | None = None
        # The best checkpoint by eval loss: never removed by retention.
        self.keep_step: int | None = None

    def clean_staging(self) -> list[Path]:
        """Delete staging directories a crashed run left behind (rank 0), then barrier."""
        removed: list[Path] = []
        if self.rank == 0 and self.root.is_dir():
            for child in self.root.iterdir():
                if _STAGING_RE.match(child.name):
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child)
        self._barrier()
        return removed

    def resume_point(self) -> tuple[int, Path] | None:
        """The verified checkpoint every rank resumes from (rank 0 decides, all agree)."""
        self.wait()
        choice = find_resume_checkpoint(self.root) if self.rank == 0 else None
        agreed = self._broadcast(None if choice is None else (choice[0], str(choice[1])))
        return None if agreed is None else (int(agreed[0]), Path(agreed[1]))

    def save(
        self,
        step: int,
        write_state: Callable[[Path], Future[Any] | None],
        *,
        extra_state: dict[str, Any],
        meta: dict[str, Any] | None = None,
        before_publish: Callable[[Path], None] | None = None,
    ) -> None:
        """Write checkpoint ``step`` (all ranks). Synchronous unless ``write_state`` returns a future.

        ``extra_state`` is this rank's own state (RNG, data-loader position,
        guards); ``before_publish`` is a test hook run after the shards are
        written and before the manifest (the kill-during-save fault).
        """
        self.wait()
        nonce = self._broadcast(secrets.token_hex(6) if self.rank == 0 else None)
        staging = self.root / f"{step_dir_name(step)}.tmp-{nonce}"
        if self.rank == 0:
            staging.mkdir(parents=True, exist_ok=False)
        self._barrier()
        started = time.monotonic()
        extra_dir = staging / "extra"
        extra_dir.mkdir(exist_ok=True)
        torch.save(extra_state, extra_dir / f"rank-{self.rank:05d}.pt")
        future = write_state(staging)
        self._pending = _PendingSave(step, staging, future, started, dict(meta or {}))
        if before_publish is not None:
            if future is not None:
                future.result()
            before_publish(staging)
        if future is None:
            self.wait()

    def wait(self) -> float | None:
        """Finish and publish a pending save (all ranks); returns its seconds, or None."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        if pending.future is not None:
            pending.future.result()
        self._barrier()
        if self.rank == 0:
            self._publish(pending)
        self._barrier()
        seconds = time.monotonic() - pending.started_at
        self.last_published_step = pending.step
        if self._on_published is not None:
            self._on_published(pending.step, seconds)
        return seconds

    def _publish(self, pending: _PendingSave) -> None:
        write_manifest(pending.staging, step=pending.step, meta=pending.meta)
        final = self.root / step_dir_name(pending.step)
        if final.exists():
            # A rollback re-trains steps it already saved: the new save replaces the old.
            shutil.rmtree(final)
        os.replace(pending.staging, final)
        _fsync_path(self.root)
        _atomic_write_text(self.root / POINTER_NAME, final.name + "\n")
        log.info("published checkpoint %s", final)
        self._retain()

    def _retain(self) -> None:
        complete = [c for c in list_complete_checkpoints(self.root) if c[0] != self.keep_step]
        for _, path in complete[: max(0, len(complete) - self.keep_last)]:
            shutil.rmtree(path, ignore_errors=True)

    def mark_best(self, step: int, record: dict[str, Any]) -> None:
        """Point ``best.json`` at published checkpoint ``step`` (rank 0 writes it)."""
        self.keep_step = step
        if self.rank != 0:
            return
        marker = {"checkpoint": step_dir_name(step), "step": step, **record}
        _atomic_write_text(self.root / BEST_MARKER_NAME, json.dumps(marker) + "\n")

    @staticmethod
    def extra_state_path(ckpt_dir: Path, rank: int) -> Path:
        return ckpt_dir / "extra" / f"rank-{rank:05d}.pt"

    def load_extra_state(self, ckpt_dir: Path) -> dict[str, Any]:
        """This rank's extra state; a world-size change falls back to rank 0's."""
        path = self.extra_state_path(ckpt_dir, self.rank)
        if not path.is_file():
            path = self.extra_state_path(ckpt_dir, 0)
        state: dict[str, Any] = torch.load(path, weights_only=False)
        return state
