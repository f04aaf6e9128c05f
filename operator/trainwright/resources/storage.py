"""Where a URI from a manifest is inside the trainer pod.

``pvc://CLAIM/PATH`` mounts the PersistentVolumeClaim CLAIM once per pod at
``/mnt/pvc/CLAIM`` and resolves to ``/mnt/pvc/CLAIM/PATH``; a claim used only
for inputs (model, dataset) is mounted read-only. Other URIs (absolute paths
baked into the image, ``s3://``, ``hf://``) pass through unchanged for the
trainer to resolve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainwright.resources.names import dns_label

PVC_SCHEME = "pvc://"
PVC_MOUNT_ROOT = "/mnt/pvc"


@dataclass
class Mounts:
    """The PVC volumes a pod needs, collected while resolving its URIs."""

    writable: dict[str, bool] = field(default_factory=dict)

    def resolve(self, uri: str, *, write: bool = False) -> str:
        """The in-pod path of ``uri``; records the claim to mount when it is ``pvc://``."""
        if not uri.startswith(PVC_SCHEME):
            return uri
        claim, _, path = uri[len(PVC_SCHEME) :].partition("/")
        if not claim:
            raise ValueError(f"{uri!r} names no claim; write pvc://CLAIM/PATH")
        self.writable[claim] = self.writable.get(claim, False) or write
        return f"{PVC_MOUNT_ROOT}/{claim}/{path}".rstrip("/")

    def claim_path(self, claim: str, *, write: bool) -> str:
        """The mount point of a claim given by name (``spec.checkpoint.pvc``)."""
        return self.resolve(f"{PVC_SCHEME}{claim}", write=write)

    def volumes(self) -> list[dict[str, Any]]:
        return [
            {
                "name": _volume_name(claim),
                "persistentVolumeClaim": {"claimName": claim, "readOnly": not writable},
            }
            for claim, writable in sorted(self.writable.items())
        ]

    def volume_mounts(self) -> list[dict[str, Any]]:
        return [
            {
                "name": _volume_name(claim),
                "mountPath": f"{PVC_MOUNT_ROOT}/{claim}",
                "readOnly": not writable,
            }
            for claim, writable in sorted(self.writable.items())
        ]


def _volume_name(claim: str) -> str:
    # Volume names are DNS labels; claim names are DNS subdomains (may contain dots).
    return dns_label(f"pvc-{claim}")
