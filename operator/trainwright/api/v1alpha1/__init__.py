"""trainwright.io/v1alpha1: TrainingJob, CapacityPlan, ModelExport."""

from trainwright.api.v1alpha1.capacityplan import (
    CapacityPlan,
    CapacityPlanSpec,
    CapacityPlanStatus,
    ForecastStatus,
    InferenceWorkload,
    InventoryEntry,
    InventoryStatus,
    Recommendation,
)
from trainwright.api.v1alpha1.common import (
    API_VERSION,
    GROUP,
    VERSION,
    Condition,
    InvalidResourceError,
    find_condition,
    set_condition,
)
from trainwright.api.v1alpha1.modelexport import (
    Artifact,
    ModelExport,
    ModelExportSpec,
    ModelExportStatus,
)
from trainwright.api.v1alpha1.trainingjob import (
    ChildrenStatus,
    PlanAlternative,
    PlanStatus,
    ProgressStatus,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
    TrainingWorkload,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Artifact",
    "CapacityPlan",
    "CapacityPlanSpec",
    "CapacityPlanStatus",
    "ChildrenStatus",
    "Condition",
    "ForecastStatus",
    "InferenceWorkload",
    "InvalidResourceError",
    "InventoryEntry",
    "InventoryStatus",
    "ModelExport",
    "ModelExportSpec",
    "ModelExportStatus",
    "PlanAlternative",
    "PlanStatus",
    "ProgressStatus",
    "Recommendation",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
    "TrainingWorkload",
    "find_condition",
    "set_condition",
]
