"""What the three kinds share: the API group, the camelCase base model, conditions.

Every field carries a ``description``: the generated CRDs (``trainwright.api.crdgen``)
copy them into the OpenAPI schema, so ``kubectl explain tj.spec.resources`` reads
the same words as this module.

Kubernetes conventions followed here (``sig-architecture/api-conventions.md``):
conditions are a list keyed by ``type`` with ``status`` "True"/"False"/"Unknown",
a CamelCase ``reason``, a human ``message`` and ``lastTransitionTime`` that moves
only when ``status`` changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

GROUP = "trainwright.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Bounds that keep the API server's CEL cost estimate finite (an unbounded string
# or list makes every rule that touches it "too expensive" at CRD admission).
NAME_MAX_LENGTH = 253
URI_MAX_LENGTH = 2048
MESSAGE_MAX_LENGTH = 32768
LIST_MAX_ITEMS = 64

ConditionStatus = Literal["True", "False", "Unknown"]


class ApiModel(BaseModel):
    """A part of a manifest: camelCase in YAML, snake_case in Python, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )

    def to_manifest(self) -> dict[str, Any]:
        """The camelCase dict a manifest or a status patch carries (unset optionals left out)."""
        dumped: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped


def k8s(**extra: Any) -> dict[str, Any]:
    """``json_schema_extra`` for Kubernetes-only schema keys (``x-kubernetes-*``).

    ``crdgen`` copies these keys verbatim; pydantic ignores them when validating.
    """
    return dict(extra)


def rule(expression: str, message: str, *, field_path: str | None = None) -> dict[str, str]:
    """One CEL ``x-kubernetes-validations`` entry; ``message`` names the field, as users read it."""
    entry = {"rule": expression, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


class Condition(ApiModel):
    """One observation of the object's state, one entry per ``type``."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Kind of condition in CamelCase, e.g. Planned, Running, Succeeded, Failed.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Why the condition last changed, one CamelCase word (e.g. PlanFound).",
    )
    message: str = Field(
        default="",
        max_length=MESSAGE_MAX_LENGTH,
        description="What happened, in a sentence a person reads.",
    )
    last_transition_time: dt.datetime = Field(
        description="When status last changed (RFC 3339); not moved by reason/message updates.",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec this condition was computed from.",
    )


def conditions_field() -> Any:
    """The ``status.conditions`` field: a list map keyed by ``type``."""
    return Field(
        default_factory=list,
        max_length=LIST_MAX_ITEMS,
        description="Latest observations of the object's state, one entry per type.",
        json_schema_extra=k8s(
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
        ),
    )


def set_condition(
    conditions: Sequence[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
    now: dt.datetime | None = None,
) -> list[Condition]:
    """Return ``conditions`` with the entry for ``type`` set (other types kept, order kept).

    ``lastTransitionTime`` moves only when ``status`` changes, so re-running a
    reconcile with the same outcome leaves the timestamp where it was (idempotent).
    """
    when = now if now is not None else dt.datetime.now(dt.UTC)
    result: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != type:
            result.append(condition)
            continue
        found = True
        moved = condition.status != status
        result.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=when if moved else condition.last_transition_time,
                observed_generation=observed_generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=when,
                observed_generation=observed_generation,
            )
        )
    return result


def find_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    """The condition of ``type``, or None when it was never set."""
    return next((c for c in conditions if c.type == type), None)


class InvalidResourceError(ValueError):
    """A custom resource's body does not match its model; the message is one sentence."""


class CustomResource(ApiModel):
    """What the three kinds share: their name and namespace, and a typed view of a raw body.

    The fields (apiVersion, kind, metadata, spec, status) stay on each kind so the
    generated schemas keep their order and descriptions.
    """

    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "default"))

    @classmethod
    def from_body(cls, body: Any) -> Self:
        """Validate a raw kopf body (or any mapping) into the model.

        Raises :class:`InvalidResourceError` with one sentence naming the field and
        what it accepts (``TrainingJob spec.resources.gpus: input should be greater than 0.``).
        """
        try:
            return cls.model_validate(dict(body))
        except ValidationError as exc:
            raise InvalidResourceError(describe_validation_error(cls.__name__, exc)) from None


def describe_validation_error(kind: str, exc: ValidationError) -> str:
    """One sentence naming the first bad field (as ``spec.resources.gpus``) and what is accepted."""
    first = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in first["loc"]) or "the body"
    count = exc.error_count()
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    return f"{kind} {path}: {_accepted(first)}{more}."


def _accepted(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}, got {error.get('input')!r}"
    message: str = error["msg"]
    return message[0].lower() + message[1:] if message else kind
