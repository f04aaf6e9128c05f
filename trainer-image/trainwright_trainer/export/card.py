"""The model card (``README.md``) of an export: where the weights came from and how."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["base_license", "final_losses", "model_card"]

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---", re.DOTALL)


def base_license(base_dir: Path) -> tuple[str | None, str | None]:
    """(SPDX-ish id from the base's card front matter, the LICENSE file's text)."""
    license_id = None
    readme = base_dir / "README.md"
    if readme.is_file():
        match = _FRONT_MATTER.match(readme.read_text(encoding="utf-8", errors="replace"))
        if match:
            found = re.search(r"^license:\s*(\S+)", match.group(1), re.MULTILINE)
            license_id = found.group(1).strip("'\"") if found else None
    text = None
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
        if (base_dir / name).is_file():
            text = (base_dir / name).read_text(encoding="utf-8", errors="replace")
            break
    return license_id, text


def final_losses(train_log: Path | None) -> dict[str, Any]:
    """The last train (and eval, if logged) loss in the trainer's ``train_log.jsonl``."""
    result: dict[str, Any] = {"train_loss": None, "train_step": None, "eval_loss": None}
    if train_log is None or not train_log.is_file():
        return result
    for line in train_log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "loss" in record and "step" in record:
            result["train_loss"], result["train_step"] = float(record["loss"]), int(record["step"])
        if "eval_loss" in record:
            result["eval_loss"] = float(record["eval_loss"])
    return result


def _value(value: Any, missing: str = "not recorded") -> str:
    if value is None or value == "":
        return missing
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def model_card(facts: dict[str, Any]) -> str:
    """Markdown with Hugging Face front matter; ``facts`` is the manifest's lineage block."""
    license_id = facts.get("license") or "unknown"
    title = facts.get("model_name") or "Exported model"
    if facts.get("version"):
        title += f" {facts['version']}"
    hyper = facts.get("hyperparameters") or {}
    rows = [
        ("Base model", facts.get("base_model")),
        ("Method", facts.get("method")),
        *((f"  {k}", v) for k, v in hyper.items()),
        ("Dataset", facts.get("dataset_uri")),
        ("Final train loss", facts.get("train_loss")),
        ("Step of that loss", facts.get("train_step")),
        ("Final eval loss", _value(facts.get("eval_loss"), "not measured")),
        ("TrainingJob", facts.get("training_job")),
        ("Attempt", facts.get("attempt")),
        ("Checkpoint step", facts.get("checkpoint_step")),
        ("Base model license", license_id),
    ]
    table = "\n".join(f"| {name} | {_value(value)} |" for name, value in rows)
    return (
        "---\n"
        f"base_model: {facts.get('base_model') or 'unknown'}\n"
        f"license: {license_id}\n"
        "library_name: transformers\n"
        f"tags: [trainwright, {facts.get('method_tag') or 'fine-tune'}]\n"
        "---\n\n"
        f"# {title}\n\n"
        f"Fine-tuned from `{_value(facts.get('base_model'))}` with {_value(facts.get('method'))}, "
        "exported by Trainwright (merged weights, verified against the adapter-applied "
        "model; see `manifest.json`).\n\n"
        "| | |\n| --- | --- |\n"
        f"{table}\n\n"
        "The base model's license applies to these weights.\n"
    )
