"""Suite-wide settings.

Property tests run derandomized: the same examples on every run, so CI cannot
turn red by chance. ``HYPOTHESIS_PROFILE=explore`` searches fresh examples.

llama.cpp's tools, which `make images` builds into the cache for the trainer image,
are the exporter's too: the tests that need them find them there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import settings

_REPO = Path(__file__).resolve().parents[1]
_LLAMA_VERSION = re.search(
    r'^version="\$\{2:-(.+)\}"$',
    (_REPO / "trainer-image" / "build_llama_cpp.sh").read_text(),
    re.MULTILINE,
)
_CACHE = Path(os.environ.get("TRAINWRIGHT_CACHE", Path.home() / ".cache" / "trainwright"))
if _LLAMA_VERSION is not None:
    _llama_bin = _CACHE / "llama.cpp" / _LLAMA_VERSION.group(1) / "bin"
    if (_llama_bin / "llama-quantize").is_file():
        os.environ.setdefault("TRAINWRIGHT_LLAMA_CPP_BIN", str(_llama_bin))

settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
