"""Kube.concurrently: a reconcile's independent requests go out at once."""

from __future__ import annotations

import functools
import threading
import time

import pytest
from kubernetes import client

from trainwright.operator.kube import Kube


@pytest.fixture
def kube() -> Kube:
    return Kube(client.Configuration(), pool_size=4)


def test_three_creations_overlap_and_come_back_in_order(kube: Kube) -> None:
    # Run one after another, the first call would wait on the barrier until it broke.
    barrier = threading.Barrier(3, timeout=5)

    def create(name: str) -> str:
        barrier.wait()
        return name

    names = ["ft-trainer", "ft-workers", "ft-a0"]
    assert kube.concurrently([functools.partial(create, n) for n in names]) == names


def test_a_failed_request_is_raised_once_the_others_have_finished(kube: Kube) -> None:
    finished: list[str] = []

    def slow_create() -> str:
        time.sleep(0.05)
        finished.append("ft-a0")
        return "ft-a0"

    def refused() -> str:
        raise RuntimeError("ConfigMap default/ft-trainer still belongs to a deleted TrainingJob")

    with pytest.raises(RuntimeError, match="still belongs to a deleted TrainingJob"):
        kube.concurrently([refused, slow_create])
    assert finished == ["ft-a0"]
