"""The trainer container's launcher: torchrun under a small POSIX shell wrapper.

Why a wrapper at all:

- torchrun exits 1 whenever a worker fails, hiding the worker's own exit code,
  and the operator needs that code (``trainwright_trainer.exitcodes``) to tell
  a config error (64, fail now) from a preemption (75, restart) or an OOM that
  needs a re-plan (76). The wrapper exits with the trainer's code: the one a
  worker wrote to ``$TRAINWRIGHT_EXIT_CODE_FILE`` if any, else the root-cause
  ``exitcode :`` line of torchrun's failure report, if it is one of the
  trainer's codes; otherwise torchrun's own status stands.
- A shell as PID 1 ignores SIGTERM, so a preempted pod's trainer would never get
  the chance to checkpoint before SIGKILL; the wrapper forwards SIGTERM/SIGINT.

The script is constant (it reads the command from its arguments) and lives in
the trainer ConfigMap as ``launch.sh``. It avoids ``$(...)``: Kubernetes expands
``$(NAME)`` in container commands itself.
"""

from __future__ import annotations

from trainwright_trainer.exitcodes import TRAINER_EXIT_CODES

STATE_DIR = "/tmp/trainwright"
EXIT_CODE_FILE = f"{STATE_DIR}/exit-code"


def launch_script(state_dir: str = STATE_DIR) -> str:
    """The wrapper's text; ``state_dir`` holds its pipe and log (a tmpfs path in the pod)."""
    codes = "|".join(str(int(code)) for code in TRAINER_EXIT_CODES)
    return f"""#!/bin/sh
# Trainwright trainer launcher: runs "$@" (torchrun ...), forwards SIGTERM/SIGINT,
# and exits with the trainer's own exit code (see trainwright.resources.launcher).
set -u
state={state_dir}
mkdir -p "$state"
rm -f "$TRAINWRIGHT_EXIT_CODE_FILE" "$state/launcher.log" "$state/launcher.pipe"
mkfifo "$state/launcher.pipe"
tee "$state/launcher.log" < "$state/launcher.pipe" &
tee_pid=$!
"$@" > "$state/launcher.pipe" 2>&1 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
wait "$pid"
status=$?
# A trapped signal interrupts wait; wait again until the command has really exited.
while kill -0 "$pid" 2>/dev/null; do
  wait "$pid"
  status=$?
done
wait "$tee_pid"
if [ "$status" -ne 0 ]; then
  if [ -s "$TRAINWRIGHT_EXIT_CODE_FILE" ]; then
    read -r status < "$TRAINWRIGHT_EXIT_CODE_FILE"
  else
    root=`sed -n 's/^ *exitcode *: *\\([0-9][0-9]*\\) .*/\\1/p' "$state/launcher.log" | head -n 1`
    case "$root" in
      {codes}) status=$root ;;
    esac
  fi
fi
exit "$status"
"""
