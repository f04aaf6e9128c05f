"""The trainer container's launcher: the trainer's exit code survives torchrun, SIGTERM reaches it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trainwright.api.v1alpha1 import PlanStatus, TrainingJob
from trainwright.resources.launcher import TRAINER_EXIT_CODES, launch_script
from trainwright.resources.trainer import container_command

VENV_BIN = Path(sys.executable).parent


def launcher(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    script = tmp_path / "launch.sh"
    script.write_text(launch_script(str(tmp_path / "state")), encoding="utf-8")
    env = {
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "TRAINWRIGHT_EXIT_CODE_FILE": str(tmp_path / "state" / "exit-code"),
    }
    return ["/bin/sh", str(script)], env


# What torchrun prints when a worker fails (torch.distributed.elastic ChildFailedError).
ROOT_CAUSE = """Root Cause (first observed failure):
[0]:
  time      : 2026-11-23_04:13:48
  host      : trainer-0
  rank      : 0 (local_rank: 0)
  exitcode  : {code} (pid: 25873)
  error_file: <N/A>
"""


@pytest.mark.parametrize(
    ("report_code", "file_code", "command_status", "expected"),
    [
        ("76", "", 1, 76),  # torchrun hides the worker's 76 behind 1
        ("64", "", 1, 64),
        ("-9", "", 1, 1),  # killed by a signal: not a trainer code, torchrun's status stands
        ("139", "", 1, 1),
        ("", "65", 1, 65),  # a code written to the exit-code file wins
        ("76", "75", 1, 75),
        ("", "", 0, 0),
    ],
)
def test_the_launcher_exits_with_the_trainers_own_code(
    tmp_path: Path, report_code: str, file_code: str, command_status: int, expected: int
) -> None:
    command, env = launcher(tmp_path)
    fake = tmp_path / "fake-torchrun.sh"
    lines = ["#!/bin/sh"]
    if report_code:
        report = ROOT_CAUSE.format(code=report_code).replace("\n", "\\n")
        lines.append(f"printf '{report}' >&2")
    if file_code:
        lines.append(f'echo {file_code} > "$TRAINWRIGHT_EXIT_CODE_FILE"')
    lines.append(f"exit {command_status}")
    fake.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [*command, "/bin/sh", str(fake)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == expected
    if report_code:
        assert (
            f"exitcode  : {report_code}" in result.stdout
        )  # the log still reaches the pod's output


def test_sigterm_reaches_the_trainer_which_checkpoints_and_exits_retryable(tmp_path: Path) -> None:
    command, env = launcher(tmp_path)
    trainer = tmp_path / "trainer.sh"
    trainer.write_text(
        "trap 'echo checkpoint saved; exit 75' TERM\necho started\nwhile :; do sleep 0.1; done\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [*command, "/bin/sh", str(trainer)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 75
    assert "checkpoint saved" in process.stdout.read()


def test_every_trainer_exit_code_but_success_is_recognised() -> None:
    assert TRAINER_EXIT_CODES == (64, 65, 75, 76, 79)
    assert "64|65|75|76|79) status=$root" in launch_script()
    assert "$(" not in launch_script()  # Kubernetes would try to expand it


@pytest.mark.distributed
def test_a_worker_exit_76_under_real_torchrun_reaches_the_pod_as_76(tmp_path: Path) -> None:
    command, env = launcher(tmp_path)
    worker = tmp_path / "worker.py"
    worker.write_text("import sys\nsys.exit(76)\n", encoding="utf-8")
    result = subprocess.run(
        [
            *command,
            "torchrun",
            "--nnodes=1",
            "--nproc-per-node=1",
            "--rdzv-backend=static",
            "--master-addr=127.0.0.1",
            "--master-port=29519",
            "--node-rank=0",
            "--max-restarts=0",
            str(worker),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 76


def test_the_jobs_container_command_runs_torchrun_through_the_launcher(tmp_path: Path) -> None:
    command, env = launcher(tmp_path)
    body = yaml.safe_load(
        (Path(__file__).parents[2] / "examples" / "training-lora.yaml").read_text()
    )
    plan = PlanStatus(
        gpu_type="H100-SXM",
        num_gpus=16,
        nodes=2,
        gpus_per_node=8,
        strategy="fsdp",
        micro_batch_size=4,
        gradient_accumulation_steps=2,
        memory_per_gpu_bytes=61_000_000_000,
        tokens_per_second=180_000.0,
    )
    shell, flag, line = container_command(
        TrainingJob.from_body(body), plan, job_name="llama8b-lora-a0"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torchrun = bin_dir / "torchrun"
    report = ROOT_CAUSE.format(code="65").replace("\n", "\\n")
    torchrun.write_text(f"#!/bin/sh\necho \"$@\"\nprintf '{report}' >&2\nexit 1\n")
    torchrun.chmod(0o755)
    env = env | {"PATH": f"{bin_dir}:{env['PATH']}", "NODE_RANK": "1"}
    result = subprocess.run(
        [shell, flag, line.replace("/etc/trainwright/launch.sh", command[1])],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 65
    assert "--nnodes=2 --nproc-per-node=8 --node-rank=1 " in result.stdout
