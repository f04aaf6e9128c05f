"""Security settings of the pods the operator creates: Pod Security ``restricted`` by default.

The defaults satisfy every check of the ``restricted`` profile
(kubernetes.io/docs/concepts/security/pod-security-standards): a non-root user,
no privilege escalation, all capabilities dropped and the runtime's default
seccomp filter, so a TrainingJob runs in a namespace labelled
``pod-security.kubernetes.io/enforce=restricted``. The UID and GID are the
trainer image's user (``USER 1000:0`` in ``trainer-image/Dockerfile``); the
group 0 owns the image's writable directories, and ``fsGroup`` 0 makes
mounted claims writable for it.

A TrainingJob loosens them with ``spec.podSecurityContext`` and
``spec.securityContext``: each field set there replaces the default's.
"""

from __future__ import annotations

from typing import Any

from trainwright.api.v1alpha1.security import ContainerSecurityOverrides, PodSecurityOverrides

TRAINER_UID = 1000
TRAINER_GID = 0
RUNTIME_DEFAULT_SECCOMP = {"type": "RuntimeDefault"}


def pod_security_context(overrides: PodSecurityOverrides | None) -> dict[str, Any]:
    """The pod-level ``securityContext``: restricted defaults, then the TrainingJob's fields."""
    default: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_GID,
        "fsGroup": TRAINER_GID,
        # Re-own a claim's files only when its root is not ours yet: a recursive
        # chown of a large dataset at every pod start would take minutes.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": dict(RUNTIME_DEFAULT_SECCOMP),
    }
    return default | (overrides.to_manifest() if overrides is not None else {})


def container_security_context(overrides: ContainerSecurityOverrides | None) -> dict[str, Any]:
    """The trainer container's ``securityContext``: restricted defaults, then the overrides."""
    chosen = overrides.to_manifest() if overrides is not None else {}
    default: dict[str, Any] = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(RUNTIME_DEFAULT_SECCOMP),
    }
    if chosen.get("privileged"):
        # The API server rejects privileged with allowPrivilegeEscalation false.
        default["allowPrivilegeEscalation"] = True
    if chosen.get("runAsUser") == 0:
        # Asking for root is asking to drop the non-root guard too.
        default["runAsNonRoot"] = False
    return default | chosen
