"""Pure manifest builders: a validated custom resource and its stored plan in, dicts out.

They import no kopf and no Kubernetes client; the controllers create the
objects and add owner references (``kopf.adopt``).
"""

from trainwright.resources.names import (
    ATTEMPT_LABEL,
    JOB_LABEL,
    config_map_name,
    service_name,
    trainer_job_name,
)
from trainwright.resources.trainer import (
    FAIL_RULE_NEEDS_REPLAN,
    FAIL_RULE_PERMANENT,
    headless_service,
    needs_service,
    trainer_config,
    trainer_configmap,
    trainer_job,
)

__all__ = [
    "ATTEMPT_LABEL",
    "FAIL_RULE_NEEDS_REPLAN",
    "FAIL_RULE_PERMANENT",
    "JOB_LABEL",
    "config_map_name",
    "headless_service",
    "needs_service",
    "service_name",
    "trainer_config",
    "trainer_configmap",
    "trainer_job",
    "trainer_job_name",
]
