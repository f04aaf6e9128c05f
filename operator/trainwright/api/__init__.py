"""The custom resources' pydantic models: the one source of truth for the CRDs.

``trainwright.api.v1alpha1`` holds one module per kind; ``python -m
trainwright.api.crdgen crds`` writes ``crds/*.yaml`` from them.
"""
