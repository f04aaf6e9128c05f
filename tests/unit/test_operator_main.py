"""kopf settings the operator applies at start-up."""

from __future__ import annotations

import logging

import kopf

from trainwright.operator.main import Tuning, configure


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


def test_the_job_watch_is_filtered_to_the_jobs_the_operator_manages() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, Tuning())
    selectors = {
        str(selector): value for selector, value in settings.watching.label_selectors.items()
    }
    # Trainer and export Jobs both carry it (common_labels, resources.export.labels).
    assert list(selectors.values()) == ["app.kubernetes.io/managed-by=trainwright"]
    assert "jobs" in next(iter(selectors))
