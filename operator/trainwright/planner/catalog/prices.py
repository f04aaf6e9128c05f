"""On-demand prices per GPU-hour, dated, from ``shared/reference/gpu_prices.csv``.

Prices move (AWS cut P4/P5 prices by up to 45% in June 2025), so each entry
keeps its ``as_of`` and source, and a user overrides any of them with a file
(``trainwright plan --prices FILE``) that the CLI reads and hands to
:func:`trainwright.planner.prices_from_mapping`.

All entries are on-demand (pay-as-you-go) list prices, so clouds compare like for
like. Reserved prices go in a price file: AWS Capacity Blocks were $4.916 per
H100-hour (p5, late 2024) and $5.408 per H200-hour (p5e/p5en), which is the only
way AWS sells H200s (gpu_prices.csv); so AWS has no H200 entry here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Price(BaseModel):
    """One GPU-hour price on one cloud."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    gpu: str
    cloud: str
    usd_per_gpu_hour: float = Field(gt=0)
    as_of: str
    source: str
    note: str = Field(default="", description="what a user should know before trusting it")


def _p(gpu: str, cloud: str, usd: float, as_of: str, source: str, note: str = "") -> Price:
    return Price(gpu=gpu, cloud=cloud, usd_per_gpu_hour=usd, as_of=as_of, source=source, note=note)


_AWS_CUT = (
    "AWS cut P4/P5 on-demand prices by up to 45% in June 2025 (H100 about $6.9/GPU-hour); "
    "this list price predates the cut, pass --prices to use today's"
)


_AWS = "AWS EC2 on-demand pricing page, us-east-1"
_GCP = "GCP GPU pricing (GPU+vCPU+RAM bundle), us-central1"
_AZURE = "Azure VM pay-as-you-go pricing, eastus"
_LAMBDA = "Lambda public pricing"
_RUNPOD = "deploybase.ai/articles/runpod-gpu-pricing (lowest listed on-demand)"

PRICES: tuple[Price, ...] = (
    _p("A10G", "aws", 1.006, "2024", f"{_AWS} (g5.xlarge)"),
    _p("L4", "aws", 0.8048, "2024", f"{_AWS} (g6.xlarge)"),
    _p("L40S", "aws", 1.861, "2024-2025", f"{_AWS} (g6e.xlarge)"),
    _p("A100-40GB-SXM", "aws", 4.097, "pre-2025-06", f"{_AWS} (p4d.24xlarge / 8)", _AWS_CUT),
    _p("A100-80GB-SXM", "aws", 5.12, "pre-2025-06", f"{_AWS} (p4de.24xlarge / 8)", _AWS_CUT),
    _p("H100-SXM", "aws", 12.29, "2023-07..2025-06", f"{_AWS} (p5.48xlarge / 8)", _AWS_CUT),
    _p("A100-40GB-SXM", "gcp", 3.67, "2024", f"{_GCP} (a2-highgpu-1g)"),
    _p("A100-80GB-SXM", "gcp", 5.07, "2024", f"{_GCP} (a2-ultragpu-1g)"),
    _p("H100-SXM", "gcp", 11.03, "2024", f"{_GCP} (a3-highgpu-8g / 8)"),
    _p("L4", "gcp", 0.71, "2024", f"{_GCP} (g2-standard-4)"),
    _p("A100-40GB-SXM", "azure", 3.40, "2024", f"{_AZURE} (ND96asr_v4 / 8)"),
    _p("A100-80GB-SXM", "azure", 4.10, "2024", f"{_AZURE} (ND96amsr_A100_v4 / 8)"),
    _p("H100-SXM", "azure", 12.29, "2024", f"{_AZURE} (ND96isr_H100_v5 / 8)"),
    _p("A100-80GB-PCIe", "azure", 3.67, "2024", f"{_AZURE} (NC24ads_A100_v4)"),
    _p("H100-SXM", "lambda", 2.99, "2024-2025", f"{_LAMBDA} (gpu_8x_h100_sxm5)"),
    _p("H100-PCIe", "lambda", 2.49, "2024-2025", f"{_LAMBDA} (gpu_1x_h100_pcie)"),
    _p("A100-80GB-SXM", "lambda", 1.79, "2024-2025", f"{_LAMBDA} (gpu_8x_a100_80gb_sxm4)"),
    _p("A100-40GB-SXM", "lambda", 1.29, "2024", f"{_LAMBDA} (gpu_1x_a100)"),
    _p("B200", "lambda", 4.99, "2025", f"{_LAMBDA} (gpu_8x_b200)"),
    _p("H100-SXM", "runpod", 2.69, "2026-03..05", _RUNPOD),
    _p("H100-PCIe", "runpod", 1.99, "2026-03", _RUNPOD),
    _p("A100-80GB-SXM", "runpod", 1.39, "2026-03", _RUNPOD),
    _p("A100-80GB-PCIe", "runpod", 1.19, "2026-03", _RUNPOD),
    _p("L40S", "runpod", 0.79, "2026-03", _RUNPOD),
    _p("L4", "runpod", 0.44, "2026-03", _RUNPOD),
    _p("H200", "runpod", 3.59, "2026-03", _RUNPOD),
    _p("B200", "runpod", 5.98, "2026-03", _RUNPOD),
)
