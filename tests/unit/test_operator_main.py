"""kopf settings the operator applies at start-up."""

from __future__ import annotations

import logging
import sys
from typing import Any

import kopf
import pytest

from trainwright.operator.main import Tuning, configure, lengthen_gil_switch_interval


def test_settings_keep_kopf_state_in_annotations_and_post_only_warnings() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, Tuning(workers=4))
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "trainwright.io"
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.finalizer == "trainwright.io/finalizer"
    assert settings.posting.level == logging.WARNING
    assert settings.execution.max_workers == 4
    assert settings.execution.default_backoff == 5


def test_the_job_and_pod_watches_are_filtered_to_what_the_operator_manages() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, Tuning())
    selected = {
        plural: value
        for plural in ("jobs", "pods", "nodes", "trainingjobs")
        for selector, value in settings.watching.label_selectors.items()
        if selector.check(_resource(plural))
    }
    # Trainer and export Jobs and their pods carry it (common_labels, resources.export.labels;
    # test_resources_trainer checks the trainer pods' labels);
    # nodes and the operator's own kinds are watched whole.
    assert selected == {
        "jobs": "app.kubernetes.io/managed-by=trainwright",
        "pods": "app.kubernetes.io/managed-by=trainwright",
    }


def _resource(plural: str) -> Any:
    group, version = {"jobs": ("batch", "v1"), "trainingjobs": ("trainwright.io", "v1alpha1")}.get(
        plural, ("", "v1")
    )
    return kopf.Resource(group, version, plural)


def test_kopf_builds_an_objects_essence_only_for_kinds_with_changing_handlers() -> None:
    """The essence is a deep copy of the body made for every event in kopf's event loop; only
    CapacityPlans and ModelExports have handlers that diff it."""
    settings = kopf.OperatorSettings()
    configure(settings, Tuning())
    storage = settings.persistence.diffbase_storage
    annotation = {"trainwright.io/last-handled-configuration": '{"spec":{"old":1}}\n'}
    for kind in ("TrainingJob", "Pod", "Job", "Node"):
        body = kopf.Body(
            {
                "kind": kind,
                "metadata": {"name": "x", "annotations": annotation},
                "spec": {"big": list(range(100))},
                "status": {"phase": "Running"},
            }
        )
        assert storage.build(body=body) == {}
        assert storage.fetch(body=body) is None  # an older operator's annotation is ignored
    export = kopf.Body(
        {
            "kind": "ModelExport",
            "metadata": {"name": "x", "annotations": annotation},
            "spec": {"formats": ["gguf"]},
            "status": {"phase": "Running"},
        }
    )
    assert storage.build(body=export) == {"spec": {"formats": ["gguf"]}}
    assert storage.fetch(body=export) == {"spec": {"old": 1}}


def test_the_operator_lets_a_thread_keep_the_gil_20_ms_not_pythons_5() -> None:
    before = sys.getswitchinterval()
    try:
        lengthen_gil_switch_interval()
        assert sys.getswitchinterval() == pytest.approx(0.02)
    finally:
        sys.setswitchinterval(before)
