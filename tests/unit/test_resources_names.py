"""Child names are valid Kubernetes names for any TrainingJob name, stable, and distinct."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from trainwright.resources.names import (
    config_map_name,
    dns_label,
    label_value,
    service_name,
    trainer_job_name,
)

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# What a TrainingJob may be called: a DNS-1123 subdomain (lower-case, digits, '-', '.').
SUBDOMAIN = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z", fullmatch=True)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(name=SUBDOMAIN, attempt=st.integers(0, 1000), nodes=st.integers(1, 512))
def test_every_child_name_is_a_dns_label_and_leaves_room_for_pod_indexes(
    name: str, attempt: int, nodes: int
) -> None:
    job = trainer_job_name(name, attempt, nodes=nodes)
    # The indexed Job's pods are named <job>-<index> and that must be a DNS label too.
    assert DNS_1035_LABEL.match(f"{job}-{nodes - 1}") and len(f"{job}-{nodes - 1}") <= 63
    for child in (service_name(name), config_map_name(name), label_value(name)):
        assert DNS_1035_LABEL.match(child), child
        assert len(child) <= 63
    assert trainer_job_name(name, attempt, nodes=nodes) == job  # same input, same name


@settings(derandomize=True, max_examples=300, deadline=None)
@given(first=SUBDOMAIN, second=SUBDOMAIN)
def test_different_job_names_get_different_services(first: str, second: str) -> None:
    if first != second:
        assert service_name(first) != service_name(second)


def test_a_short_valid_name_is_kept_as_it_is() -> None:
    assert dns_label("llama8b-lora") == "llama8b-lora"
    assert service_name("llama8b-lora") == "llama8b-lora-workers"
    assert trainer_job_name("llama8b-lora", 2, nodes=4) == "llama8b-lora-a2"
