"""Per-TrainingJob overrides of the trainer pods' security settings.

By default the pods the operator creates pass Pod Security Admission's
``restricted`` profile (``trainwright.resources.security`` holds those
defaults). An image that needs more (another UID, an added capability) loosens
them here: each field set replaces the default's field of the same name, the
rest stay. The fields are a subset of Kubernetes' ``PodSecurityContext`` and
``SecurityContext`` with the same names and meanings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from trainwright.api.v1alpha1.common import LIST_MAX_ITEMS, NAME_MAX_LENGTH, ApiModel, k8s, rule

SeccompProfileType = Literal["RuntimeDefault", "Localhost", "Unconfined"]


class SeccompProfile(ApiModel):
    """Which seccomp filter the container runtime applies."""

    type: SeccompProfileType = Field(description="RuntimeDefault, Localhost or Unconfined.")
    localhost_profile: str | None = Field(
        default=None,
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        description="Profile file under the kubelet's seccomp directory (type Localhost only).",
    )


class Capabilities(ApiModel):
    """Linux capabilities added to and dropped from the container runtime's default set."""

    add: list[str] = Field(
        default_factory=list,
        max_length=LIST_MAX_ITEMS,
        description="Capabilities to add, e.g. IPC_LOCK for RDMA memory registration.",
    )
    drop: list[str] = Field(
        default_factory=list,
        max_length=LIST_MAX_ITEMS,
        description="Capabilities to drop (the operator's default drops ALL).",
    )


# Kubernetes' UIDs and GIDs are int64 in the API; Linux takes 0 to 2^31 - 1.
MAX_ID = 2**31 - 1


class PodSecurityOverrides(ApiModel):
    """Pod-level settings that replace the operator's restricted defaults, field by field."""

    run_as_user: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="UID of every container."
    )
    run_as_group: int | None = Field(default=None, ge=0, le=MAX_ID, description="Primary GID.")
    run_as_non_root: bool | None = Field(
        default=None, description="Refuse to start a container whose user is root."
    )
    fs_group: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="GID owning writable volumes."
    )
    supplemental_groups: list[int] | None = Field(
        default=None, max_length=LIST_MAX_ITEMS, description="Extra GIDs of every container."
    )
    seccomp_profile: SeccompProfile | None = Field(
        default=None, description="Seccomp profile of every container."
    )


class ContainerSecurityOverrides(ApiModel):
    """Trainer-container settings that replace the operator's restricted defaults."""

    model_config = ConfigDict(
        json_schema_extra=k8s(
            **{
                "x-kubernetes-validations": [
                    rule(
                        "!has(self.privileged) || !self.privileged || "
                        "!has(self.allowPrivilegeEscalation) || self.allowPrivilegeEscalation",
                        "securityContext: privileged needs allowPrivilegeEscalation true",
                    )
                ]
            }
        )
    )

    allow_privilege_escalation: bool | None = Field(
        default=None, description="Let a process gain more privileges than its parent (setuid)."
    )
    privileged: bool | None = Field(default=None, description="Run as a privileged container.")
    read_only_root_filesystem: bool | None = Field(
        default=None, description="Mount the image's root filesystem read-only."
    )
    run_as_user: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="UID of the trainer."
    )
    run_as_group: int | None = Field(default=None, ge=0, le=MAX_ID, description="Primary GID.")
    run_as_non_root: bool | None = Field(
        default=None, description="Refuse to start the container if its user is root."
    )
    capabilities: Capabilities | None = Field(
        default=None, description="Replaces the default (drop ALL) as a whole."
    )
    seccomp_profile: SeccompProfile | None = Field(
        default=None, description="Seccomp profile of the trainer container."
    )
