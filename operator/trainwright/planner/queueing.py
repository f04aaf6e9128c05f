"""Waiting for a batch slot: Poisson arrivals at a server with ``slots`` sequences.

A replica under continuous batching (vLLM, SGLang, TensorRT-LLM in-flight batching)
admits a request as soon as one of its ``slots`` running sequences finishes, so it
is an M/M/c queue with c = slots and the service time of one request, prefill plus
its output tokens (Kleinrock 1975, §3.5; Vidur, Agrawal et al. 2024, simulates the
same admission loop against profiled step times). The wait W of an arrival has
P(W > t) = C(c, a) · exp(-(c/S - λ)·t), with C the Erlang C probability of waiting
and a = λ·S the offered load, so its quantiles are closed-form.
"""

from __future__ import annotations

import math

# Far below saturation the wait probability is negligible; the O(c) recursion is skipped.
_NEGLIGIBLE_LOAD = 0.5


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability an arrival waits in M/M/c (Erlang C), via the stable Erlang B recursion."""
    if offered_load >= servers:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return servers * blocking / (servers - offered_load * (1 - blocking))


def wait_quantile_seconds(
    servers: int, arrival_rate: float, service_seconds: float, quantile: float
) -> float:
    """The ``quantile`` (0.5, 0.95) of the wait for a free slot; ``inf`` at saturation."""
    offered = arrival_rate * service_seconds
    if offered >= servers:
        return math.inf
    if servers > 64 and offered < _NEGLIGIBLE_LOAD * servers:
        return 0.0
    waiting = erlang_c(servers, offered)
    tail = 1 - quantile
    if waiting <= tail:
        return 0.0
    return math.log(waiting / tail) / (servers / service_seconds - arrival_rate)


def prefill_wait_seconds(utilization: float, prompt_seconds: float, quantile: float) -> float:
    """Wait behind other prompts' prefill, which the scheduler runs first come, first served.

    Prompts of one length make the prefill an M/D/1 queue: its mean wait is
    ρ·T / (2(1 - ρ)) (Pollaczek-Khinchine), used for the median; its tail decays like
    M/M/1's, P(W > t) ≈ ρ·exp(-(1 - ρ)·t / T), which gives the upper quantiles.
    """
    if utilization <= 0:
        return 0.0
    if utilization >= 1:
        return math.inf
    if quantile <= 0.5:
        return utilization * prompt_seconds / (2 * (1 - utilization))
    tail = 1 - quantile
    if utilization <= tail:
        return 0.0
    return prompt_seconds / (1 - utilization) * math.log(utilization / tail)
