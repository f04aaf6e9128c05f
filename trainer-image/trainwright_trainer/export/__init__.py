"""The exporter: ``python -m trainwright_trainer export`` (what a ModelExport's Job runs).

Modules: :mod:`.config` (the export's fields; pydantic only, imported by the
operator), :mod:`.sources` (what ``--source`` is), :mod:`.merge` (adapters into the
16-bit base, shard by shard, with peft), :mod:`.gguf_export` (GGUF writing and
checking), :mod:`.ollama` (the Modelfile), :mod:`.card` (README.md) and
:mod:`.run` (the whole export, verification and ``manifest.json``). Only
:mod:`.config` is imported here, so importing the package pulls in no torch.
"""

from trainwright_trainer.export.config import ExportConfig, load_export_config

__all__ = ["ExportConfig", "load_export_config"]
