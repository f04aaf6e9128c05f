"""crds/ is exactly what the API models generate: editing a model without `make crds` fails here."""

from __future__ import annotations

from pathlib import Path

from trainwright.api.crdgen import KINDS, write_crds

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_crds_match_the_models(tmp_path: Path) -> None:
    written = write_crds(tmp_path)
    committed = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert committed == sorted(p.name for p in written), "run make crds"
    for path in written:
        expected = path.read_text(encoding="utf-8")
        actual = (REPO / "crds" / path.name).read_text(encoding="utf-8")
        assert actual == expected, f"crds/{path.name} drifted from the API models: run make crds"


def test_generating_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in write_crds(tmp_path / "a")]
    second = [p.read_bytes() for p in write_crds(tmp_path / "b")]
    assert first == second
    assert len(first) == len(KINDS) == 3
