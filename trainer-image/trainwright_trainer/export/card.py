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
    """The last train loss and the last evaluation in the trainer's ``train_log.jsonl``.

    A step's record has ``step`` and ``loss`` (None for a skipped step); an evaluation's has
    ``event: eval``, ``at_step``, ``eval_loss``, ``eval_perplexity`` and ``best_step`` (the
    best evaluation so far, whose checkpoint an early-stopped run exports).
    """
    result: dict[str, Any] = dict.fromkeys(
        ("train_loss", "train_step", "eval_loss", "eval_perplexity", "eval_step"), None
    )
    result |= {"best_eval_step": None, "best_eval_loss": None}
    if train_log is None or not train_log.is_file():
        return result
    evals: dict[int, float] = {}
    for line in train_log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("loss") is not None and "step" in record:
            result["train_loss"], result["train_step"] = float(record["loss"]), int(record["step"])
        if record.get("eval_loss") is not None:
            step = int(record.get("at_step") or 0)
            evals[step] = float(record["eval_loss"])
            perplexity = record.get("eval_perplexity")
            result |= {
                "eval_loss": evals[step],
                "eval_step": step,
                "eval_perplexity": float(perplexity) if perplexity is not None else None,
                "best_eval_step": record.get("best_step"),
            }
    best = result["best_eval_step"]
    result["best_eval_loss"] = evals.get(best) if isinstance(best, int) else None
    return result


def _value(value: Any, missing: str = "not recorded") -> str:
    if value is None or value == "":
        return missing
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def _best_row(facts: dict[str, Any]) -> list[tuple[str, Any]]:
    """The best evaluation, when it is not the last one (an early-stopped run exports it)."""
    best, loss = facts.get("best_eval_step"), facts.get("best_eval_loss")
    if best is None or loss is None or best == facts.get("eval_step"):
        return []
    return [("Best eval loss", f"{loss:.5g} (step {best})")]


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
        ("Eval perplexity", _value(facts.get("eval_perplexity"), "not measured")),
        ("Step of that evaluation", _value(facts.get("eval_step"), "not measured")),
        *_best_row(facts),
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
