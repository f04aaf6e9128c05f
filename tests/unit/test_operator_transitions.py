"""The TrainingJob state machine's table: exit-code decisions, reasons, and its drawing in the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainwright.operator.lifecycle import Action, decide_after_failure, failed_exit_code
from trainwright.operator.status import Phase
from trainwright.operator.transitions import (
    EXIT_RULES,
    NEW,
    TRANSITIONS,
    exit_rule,
    reasons,
    render_markdown,
)
from trainwright_trainer.exitcodes import PERMANENT_EXIT_CODES, ExitCode

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operator.md"
BLOCK = re.compile(r"<!-- transitions:begin -->\n(.*?)<!-- transitions:end -->", re.S)


def _failed_pod(code: int) -> dict[str, object]:
    terminated = {"terminated": {"exitCode": code}}
    return {"status": {"containerStatuses": [{"name": "trainer", "state": terminated}]}}


def test_a_loss_that_keeps_spiking_fails_with_its_own_reason_and_advice() -> None:
    decision = decide_after_failure(exit_code=79, restarts=0, max_restarts=3)

    assert (decision.action, decision.reason) == (Action.FAIL, "Diverged")
    assert "exit code 79" in decision.message
    assert "spec.training.learningRate" in decision.message
    assert "fix the spec" not in decision.message  # it is not a configuration error


def test_diverged_explains_a_failure_over_the_peers_it_took_down() -> None:
    assert failed_exit_code([_failed_pod(75), _failed_pod(137), _failed_pod(79)]) == 79


def test_every_trainer_exit_code_has_a_rule_and_permanent_codes_fail() -> None:
    assert set(EXIT_RULES) == {c for c in ExitCode if c is not ExitCode.SUCCESS}
    assert {c for c, r in EXIT_RULES.items() if r.action is Action.FAIL} == set(
        PERMANENT_EXIT_CODES
    )
    assert exit_rule(137).action is Action.RESTART
    assert exit_rule(None).action is Action.RESTART
    assert exit_rule(12345).action is Action.RESTART


@pytest.mark.parametrize("code", [None, 1, 64, 65, 75, 76, 79, 137])
@pytest.mark.parametrize("restarts", [0, 3])
def test_every_decision_after_a_failure_is_a_transition_of_the_table(
    code: int | None, restarts: int
) -> None:
    decision = decide_after_failure(exit_code=code, restarts=restarts, max_restarts=3)
    target = Phase.FAILED if decision.action is Action.FAIL else Phase.PLANNED
    moves = {(t.target, t.reason) for t in TRANSITIONS if t.source == Phase.RUNNING}
    assert (target, decision.reason) in moves


def test_every_phase_but_pending_is_reached_and_only_planned_or_failed_start() -> None:
    assert {t.target for t in TRANSITIONS} == set(Phase) - {Phase.PENDING}
    assert {t.target for t in TRANSITIONS if t.source == NEW} == {Phase.PLANNED, Phase.FAILED}
    assert not any(t.source == Phase.SUCCEEDED for t in TRANSITIONS)
    assert {"WaitingForPods", "PodsReady", "Completed", "Diverged", "MaxRestartsRaised"} <= (
        reasons()
    )


def test_docs_show_the_table_generated_from_the_module() -> None:
    found = BLOCK.search(DOCS.read_text(encoding="utf-8"))
    assert found is not None, "docs/operator.md lacks the transitions block"
    assert found.group(1) == render_markdown(), (
        "docs/operator.md is out of date: paste `python -m trainwright.operator.transitions`"
    )
    assert "stateDiagram-v2" in found.group(1)
    assert "| 79 | `DIVERGED` | `Failed`, `Diverged` |" in found.group(1)


def _written_reasons() -> set[str]:
    """Every reason the controller modules write as (ConditionType.X, status, "Reason", ...)."""
    import ast

    import trainwright.operator.trainingjob as controller

    root = Path(controller.__file__).parent
    found: set[str] = set()
    for module in ("trainingjob.py", "lifecycle.py", "waiting.py"):
        for node in ast.walk(ast.parse((root / module).read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Tuple) or len(node.elts) < 3:
                continue
            first, third = node.elts[0], node.elts[2]
            if (
                isinstance(first, ast.Attribute)
                and isinstance(first.value, ast.Name)
                and first.value.id == "ConditionType"
                and isinstance(third, ast.Constant)
                and isinstance(third.value, str)
            ):
                found.add(third.value)
    return found


def test_every_reason_the_controller_writes_is_in_the_table() -> None:
    written = _written_reasons()
    assert {"WaitingForPods", "PodsReady", "Completed", "Suspended", "Planned"} <= written
    assert written <= reasons(), f"not in transitions.TRANSITIONS: {written - reasons()}"
