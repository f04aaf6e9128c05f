"""Every expressible row of measured-public.csv, estimate vs measured (printed with -s).

The counts are floors: a test fails when a row that was within tolerance falls out
(a regression), never because more rows come within it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainwright.cli import main
from trainwright.cli.accuracy import (
    MEMORY_BAR,
    command_line,
    evaluate_rows,
    read_rows,
    render_markdown,
    render_text,
    row_specs,
    summary,
)
from trainwright.cli.serving_accuracy import evaluate_serving, read_serving_rows

DATA = Path(__file__).resolve().parents[1] / "data"
CSV = DATA / "measured-public.csv"
OWN_CSV = DATA / "measured-own-h100.csv"


@pytest.fixture(scope="module")
def results():  # type: ignore[no-untyped-def]
    results = evaluate_rows(read_rows(CSV) + read_rows(OWN_CSV))
    print("\n" + render_text(results))
    return results


# Rows outside tolerance when the floors were set (see docs/planner-accuracy.md):
# torchtune's early single-device LoRA/QLoRA rows 17 and 19, and the three PEFT rows
# under DeepSpeed ZeRO-3 CPU offload (23, 26, 29), all under-estimates.
KNOWN_MEMORY_MISSES = {17, 19, 23, 26, 29}


def test_memory_rows_within_15_percent_or_1_5_gib_do_not_regress(results) -> None:  # type: ignore[no-untyped-def]
    hits, total = summary(results)["memory"]
    assert total == 19 and hits >= 14
    missed = {r.row_id for r in results if r.tolerance == "memory" and not r.within}
    assert missed <= KNOWN_MEMORY_MISSES, f"newly outside tolerance: {missed - KNOWN_MEMORY_MISSES}"


def test_the_405b_qlora_row_is_read_in_gib_and_lands_within_tolerance(results) -> None:  # type: ignore[no-untyped-def]
    row = next(r for r in results if r.row_id == 15)
    assert row.measured == pytest.approx(44.8)
    assert row.within and row.error is not None and abs(row.error) <= 0.15
    assert "read as GiB" in row.note


def test_peft_readme_rows_without_offload_are_within_11_percent(results) -> None:  # type: ignore[no-untyped-def]
    errors = {r.row_id: r.error for r in results if r.row_id in (21, 22, 25, 28)}
    assert len(errors) == 4
    assert all(e is not None and abs(e) < 0.11 for e in errors.values())


def test_full_fine_tuning_of_mt0_xxl_and_bloomz_in_fp32_is_predicted_out_of_memory(results) -> None:  # type: ignore[no-untyped-def]
    oom = {r.row_id: r for r in results if r.row_id in (24, 27)}
    assert all(r.within for r in oom.values())
    # 16 bytes per parameter in fp32 with AdamW: 12.9e9 and 7.07e9 parameters.
    assert oom[24].estimate == pytest.approx(192.5, abs=0.5)
    assert oom[27].estimate == pytest.approx(105.3, abs=0.5)
    assert "judged on `fits: false`" in oom[24].note
    assert oom[24].out_of_memory and oom[27].out_of_memory


def test_the_accuracy_doc_states_whether_the_85_percent_memory_bar_is_met(results) -> None:  # type: ignore[no-untyped-def]
    doc = render_markdown(results, "measured-public.csv")
    hits, total = summary(results)["memory"]
    verdict = "met" if hits >= MEMORY_BAR * total else "**not met**"
    assert f"{hits} of {total} ({hits / total:.0%}), {verdict}" in doc
    assert "| OOM (>80) | 192.5 | fits: false |" in doc


def test_korthikanti_activations_and_model_states_are_within_3_percent(results) -> None:  # type: ignore[no-untyped-def]
    hits, total = summary(results)["korthikanti"]
    assert total == 12 and hits >= 12


def test_decode_tokens_per_second_is_within_25_percent_on_gpt_fast_rows(results) -> None:  # type: ignore[no-untyped-def]
    hits, total = summary(results)["decode"]
    assert total == 13 and hits >= 13


def test_ttft_is_within_35_percent_on_tensorrt_llm_rows(results) -> None:  # type: ignore[no-untyped-def]
    hits, total = summary(results)["ttft"]
    assert total == 10 and hits >= 10


def test_our_own_h100_memory_prefill_and_decode_measurements_are_within_tolerance(results) -> None:  # type: ignore[no-untyped-def]
    counts = summary(results)
    for kind, floor in (("memory-own", 13), ("ttft-own", 5), ("decode-own", 8)):
        hits, total = counts[kind]
        assert total == floor and hits >= floor, kind
    errors = [r.error for r in results if r.tolerance == "memory-own"]
    assert max(abs(e) for e in errors if e is not None) < 0.08


def test_skipped_rows_say_why(results) -> None:  # type: ignore[no-untyped-def]
    skipped = [r for r in results if r.estimate is None]
    # Rows the CLI cannot express yet; expressing more of them is not a regression.
    assert {r.row_id for r in skipped} <= {3, 4, 7, 8}
    assert all(r.note for r in skipped)


def _namespace(value):  # type: ignore[no-untyped-def]
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


@pytest.mark.parametrize("row_id", [1, 9, 13, 15, 17, 18, 22, 24, 29, 52, 56, 60, 79, 103, 113])
def test_each_rows_command_line_reproduces_its_estimate(
    results,
    row_id: int,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    spec = row_specs()[row_id]
    argv = shlex.split(command_line(spec.kind, spec.fields))[1:]
    code = main([*argv, "-o", "json"])
    plan = _namespace(json.loads(capsys.readouterr().out))
    # Korthikanti's TP-only configurations exceed 80 GB: the CLI prints them and exits 3.
    assert code == (0 if plan.fits else 3)
    expected = next(r.estimate for r in results if r.row_id == row_id)
    assert spec.extract(plan) == pytest.approx(expected, rel=1e-3)


def test_the_committed_accuracy_doc_matches_the_planner(results) -> None:  # type: ignore[no-untyped-def]
    doc = Path(__file__).resolve().parents[2] / "docs" / "planner-accuracy.md"
    serving = evaluate_serving(read_serving_rows())
    expected = render_markdown(results, "shared/reference/measured-public.csv", serving)
    assert doc.read_text(encoding="utf-8") == expected, "run `make accuracy-doc`"


def test_our_fp32_peft_runs_of_t0_mt0_and_bloomz_shapes_are_within_6_percent(results) -> None:  # type: ignore[no-untyped-def]
    own = {r.row_id: r for r in results if 1401 <= r.row_id <= 1404}
    assert len(own) == 4 and all(r.within for r in own.values())
    assert max(abs(r.error or 0.0) for r in own.values()) < 0.06
    # T0 3B full fine-tuning: 16 bytes per parameter plus foreach AdamW's sqrt(v).
    assert "--optimizer adamw_foreach" in own[1404].note
