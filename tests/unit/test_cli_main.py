"""The CLI frame: help lists every command, errors are one line, pipes close quietly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trainwright.cli import main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("plan", "models", "gpus", "forecast", "operator"):
        assert command in out


def test_unknown_command_is_one_line_on_stderr_with_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "invalid choice: 'bogus'" in err


def test_output_piped_into_a_reader_that_quits_early_prints_no_traceback() -> None:
    # `head -c 10` closes the pipe long before the JSON catalog is written.
    script = (
        f"{sys.executable} -m trainwright.cli models -o json | head -c 10 >/dev/null; "
        "echo status=${PIPESTATUS[0]}"
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Traceback" not in result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() in ("status=0", "status=141")
