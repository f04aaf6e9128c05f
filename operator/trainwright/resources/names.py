"""Deterministic names and labels for the objects the operator creates.

A reconcile that runs twice must compute the same names (kopf ``idempotence``);
Kubernetes limits them: Service names are DNS-1035 labels (63 characters,
starting with a letter), an indexed Job's pod hostname ``<job>-<index>`` is a
DNS-1123 label (63 characters), and label values are at most 63 characters.
Over-long names are cut and suffixed with a short hash of the full name, so two
long names that share a prefix still differ.
"""

from __future__ import annotations

import hashlib
import re

LABEL_MAX_LENGTH = 63
HASH_LENGTH = 6
MANAGED_BY = "trainwright"
# Every object the operator creates carries it: its watches select on it.
MANAGED_BY_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
JOB_LABEL = "trainwright.io/job"
ATTEMPT_LABEL = "trainwright.io/attempt"
KIND_LABEL = "trainwright.io/kind"

_INVALID = re.compile(r"[^a-z0-9-]+")


def dns_label(name: str, *, suffix: str = "", max_length: int = LABEL_MAX_LENGTH) -> str:
    """``name`` + ``suffix`` as a DNS-1035 label of at most ``max_length`` characters.

    Lower-cased, characters outside ``[a-z0-9-]`` become ``-``, a leading digit
    gets a ``tw-`` prefix; when too long the name is cut and a hash of the full
    name is appended before ``suffix``.
    """
    if len(suffix) + HASH_LENGTH + 2 > max_length:
        raise ValueError(f"suffix {suffix!r} leaves no room for a name in {max_length} characters")
    base = _INVALID.sub("-", name.lower()).strip("-") or "tw"
    if not base[0].isalpha():
        base = f"tw-{base}"
    if len(base) + len(suffix) <= max_length and base == name:
        return base + suffix
    if len(base) + len(suffix) <= max_length and base != name:
        # Sanitizing changed the name: keep it readable but unique among names that
        # sanitize alike (My.Job and my-job).
        if len(base) + len(suffix) + HASH_LENGTH + 1 > max_length:
            return _cut(base, name, suffix, max_length)
        return f"{base}-{_digest(name)}{suffix}"
    return _cut(base, name, suffix, max_length)


def _cut(base: str, name: str, suffix: str, max_length: int) -> str:
    room = max_length - len(suffix) - HASH_LENGTH - 1
    return f"{base[:room].rstrip('-')}-{_digest(name)}{suffix}"


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def label_value(name: str) -> str:
    """``name`` as a label value (63 characters, alphanumeric at both ends)."""
    return dns_label(name)


def config_map_name(job_name: str) -> str:
    """The trainer ConfigMap of a TrainingJob."""
    return dns_label(job_name, suffix="-trainer")


def service_name(job_name: str) -> str:
    """The headless Service giving the trainer pods stable DNS names."""
    return dns_label(job_name, suffix="-workers")


def trainer_job_name(job_name: str, attempt: int, *, nodes: int) -> str:
    """The batch Job of one attempt, short enough that ``<job>-<index>`` is a DNS label.

    The attempt is in the name so a restart creates a new Job rather than mutating
    the failed one (a Job's pod template is immutable).
    """
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, got {attempt}")
    index_digits = len(str(max(nodes - 1, 0)))
    return dns_label(
        job_name, suffix=f"-a{attempt}", max_length=LABEL_MAX_LENGTH - 1 - index_digits
    )


def common_labels(job_name: str, *, component: str) -> dict[str, str]:
    """Labels every child carries: the app.kubernetes.io set plus ``trainwright.io/job``."""
    value = label_value(job_name)
    return {
        "app.kubernetes.io/name": "trainwright-trainer",
        "app.kubernetes.io/instance": value,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "trainwright",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        JOB_LABEL: value,
    }
