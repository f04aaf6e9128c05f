"""llama.cpp's own tools, when the image has them: K-quants and the greedy-token check.

``llama-quantize`` writes the K-quants (q4_k_m, q5_k_m, q6_k) from an f16 GGUF;
``llama-simple`` runs a GGUF greedily, which checks that llama.cpp reads the file
and computes what Hugging Face computes. Both are built from the llama.cpp sources
that the llama-cpp-python source distribution on PyPI vendors
(``trainer-image/build_llama_cpp.sh``). They are found in
``$TRAINWRIGHT_LLAMA_CPP_BIN``, else on ``PATH``; without them the K-quants are
refused and the greedy check is reported as not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from trainwright_trainer.errors import ConfigError

__all__ = ["LLAMA_CPP_BIN_ENV", "greedy_continuation", "quantize", "tool"]

LLAMA_CPP_BIN_ENV = "TRAINWRIGHT_LLAMA_CPP_BIN"
# llama-quantize's names for the K-quant mixes.
_QUANTIZE_TYPES = {"q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}
_TIMEOUT_SECONDS = 3600


def tool(name: str) -> Path | None:
    """The llama.cpp program ``name``, or None when this image has none."""
    directory = os.environ.get(LLAMA_CPP_BIN_ENV)
    if directory and (Path(directory) / name).is_file():
        return Path(directory) / name
    found = shutil.which(name)
    return Path(found) if found else None


def quantize(f16_gguf: Path, out: Path, quantization: str) -> None:
    """``llama-quantize f16_gguf out TYPE``; a failure is one sentence naming --quantization."""
    program = tool("llama-quantize")
    if program is None:
        raise ConfigError(f"--quantization: {quantization} needs llama-quantize, which is missing")
    done = subprocess.run(
        [str(program), str(f16_gguf), str(out), _QUANTIZE_TYPES[quantization]],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0 or not out.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"--quantization: llama-quantize failed for {quantization}: {last}")


def greedy_continuation(gguf_path: Path, prompt: str, tokens: int) -> str | None:
    """What llama.cpp generates greedily after ``prompt`` (text), or None without llama-simple."""
    program = tool("llama-simple")
    if program is None:
        return None
    done = subprocess.run(
        [str(program), "-m", str(gguf_path), "-n", str(tokens), prompt],
        capture_output=True,
        # A model may stop mid-character; invalid UTF-8 reads as U+FFFD, as Hugging
        # Face's decode shows it.
        encoding="utf-8",
        errors="replace",
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"<llama-simple failed: {last}>"
    # llama-simple prints the prompt (after any BOS text) and then the continuation.
    _, found, after = done.stdout.partition(prompt)
    return after.rstrip("\n") if found else done.stdout
