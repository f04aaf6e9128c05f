"""GPU capacity planning for LLM fine-tuning and serving: pure functions, no I/O.

Everything a plan needs arrives as arguments (a parsed ``config.json`` or price
file is a mapping); nothing here opens files, reads the environment or imports
Kubernetes, kopf or torch (``.importlinter`` contract ``planner-is-pure``).

    from trainwright.planner import TrainingRequest, plan_training
    plan = plan_training(TrainingRequest(model="llama-3.1-8b", method="qlora", gpu="L4", num_gpus=1))
    plan.memory.per_gpu_bytes, plan.fits, plan.throughput.tokens_per_second
"""

from __future__ import annotations

from trainwright.planner.catalog import CLOUDS, Price
from trainwright.planner.errors import (
    InfeasibleError,
    PlannerError,
    UnknownGpuError,
    UnknownModelError,
)
from trainwright.planner.inference import (
    InferencePlan,
    InferenceRequest,
    kv_cache_bytes_per_token,
    plan_inference,
    recommend_inference,
)
from trainwright.planner.lookup import (
    get_gpu,
    get_model,
    gpu_key_for_product_label,
    list_gpus,
    list_models,
    model_from_hf_config,
    price_for,
    prices_from_mapping,
)
from trainwright.planner.specs import GpuSpec, ModelSpec
from trainwright.planner.training import (
    TrainingPlan,
    TrainingRequest,
    plan_training,
    recommend_training,
)

__all__ = [
    "CLOUDS",
    "GpuSpec",
    "InfeasibleError",
    "InferencePlan",
    "InferenceRequest",
    "ModelSpec",
    "PlannerError",
    "Price",
    "TrainingPlan",
    "TrainingRequest",
    "UnknownGpuError",
    "UnknownModelError",
    "get_gpu",
    "get_model",
    "gpu_key_for_product_label",
    "kv_cache_bytes_per_token",
    "list_gpus",
    "list_models",
    "model_from_hf_config",
    "plan_inference",
    "plan_training",
    "price_for",
    "prices_from_mapping",
    "recommend_inference",
    "recommend_training",
]
