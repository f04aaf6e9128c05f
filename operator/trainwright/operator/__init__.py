"""The kopf controllers: one module per kind, thin handlers over pure decisions.

- :mod:`trainwright.operator.status`     phases and conditions (pure)
- :mod:`trainwright.operator.lifecycle`  what a Job's state means for its TrainingJob (pure)
- :mod:`trainwright.operator.inventory`  the cluster's GPUs, read from nodes and pods (pure)
- :mod:`trainwright.operator.metrics`    Prometheus metrics and the ``/healthz`` endpoint
- :mod:`trainwright.operator.kube`       the few Kubernetes API calls the handlers make
- :mod:`trainwright.operator.trainingjob`   the TrainingJob controller
- :mod:`trainwright.operator.capacityplan`  the CapacityPlan controller
- :mod:`trainwright.operator.main`       kopf settings and the entry point

Importing :mod:`trainwright.operator.main` registers the handlers with kopf.
"""
