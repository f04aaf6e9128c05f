"""Trainwright: Kubernetes-native fine-tuning and capacity planning for LLMs.

Packages, in layers (each may import only those below it; `.importlinter`
enforces this):

- ``trainwright.cli``        the ``trainwright`` command
- ``trainwright.operator``   kopf controllers (effects: the Kubernetes API)
- ``trainwright.resources``  pure manifest builders (spec in, dict out)
- ``trainwright.api``        pydantic models of the custom resources; CRDs are generated from them
- ``trainwright.forecast``   demand forecasting (statsmodels)
- ``trainwright.planner``    GPU sizing: pure functions, no I/O, no Kubernetes/torch
"""

__version__ = "0.1.0"
