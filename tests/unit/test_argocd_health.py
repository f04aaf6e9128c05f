"""Argo CD health checks (helm/argocd/trainwright.io/<Kind>/health.lua) run as Argo CD runs them.

Argo CD evaluates health scripts in gopher-lua (a Lua 5.1 in Go) with only the
base, table, package and a "safe" os library open: no ``string``, no ``math``
(``util/lua``: ``SkipOpenLibs`` unless ``resource.customizations.useOpenLibs``).
Here every ``health_test.yaml`` case runs in a real Lua 5.1 (lupa) with those
libraries removed and the string metatable dropped, so ``("x"):sub(1)`` fails
as it does there. The same cases also run in gopher-lua itself, the Lua VM Argo CD
embeds, through hack/argocd/luacheck (a small Go program built from the Go module proxy,
cached in $TRAINWRIGHT_CACHE/tools/bin) that opens the libraries Argo CD opens.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

lupa51 = pytest.importorskip("lupa.lua51")

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "helm" / "argocd"
LUACHECK_SOURCE = ROOT / "hack" / "argocd" / "luacheck"
CACHE = Path(os.environ.get("TRAINWRIGHT_CACHE") or Path.home() / ".cache" / "trainwright")
KINDS = ("TrainingJob", "CapacityPlan", "ModelExport")
SANDBOX = """
debug.setmetatable("", nil)
string, math, io, debug, coroutine = nil, nil, nil, nil, nil
local time, date, clock = os.time, os.date, os.clock
os = {time = time, date = date, clock = clock}
"""


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def run_health(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Run ``kind``'s health.lua on ``obj`` in the sandbox; the table it returns as a dict."""
    runtime = lupa51.LuaRuntime(unpack_returned_tuples=True)
    runtime.execute(SANDBOX)
    runtime.globals().obj = _to_lua(runtime, obj)
    script = (ARGOCD / "trainwright.io" / kind / "health.lua").read_text(encoding="utf-8")
    result = runtime.execute(script)
    return {str(k): v for k, v in result.items()}


def _cases() -> list[Any]:
    cases = []
    for kind in KINDS:
        document = yaml.safe_load(
            (ARGOCD / "trainwright.io" / kind / "health_test.yaml").read_text()
        )
        for case in document["tests"]:
            cases.append(pytest.param(kind, case, id=f"{kind}-{Path(case['inputPath']).stem}"))
    return cases


@pytest.mark.parametrize(("kind", "case"), _cases())
def test_health_test_yaml_case(kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD / "trainwright.io" / kind / case["inputPath"]).read_text())
    assert obj["kind"] == kind
    assert run_health(kind, obj) == case["healthStatus"]


@pytest.fixture(scope="module")
def gopher_lua() -> Path:
    """hack/argocd/luacheck built (once; rebuilt when its source is newer)."""
    binary = CACHE / "tools" / "bin" / "argocd-luacheck"
    sources = [LUACHECK_SOURCE / name for name in ("main.go", "go.mod", "go.sum")]
    if binary.exists() and all(s.stat().st_mtime <= binary.stat().st_mtime for s in sources):
        return binary
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go toolchain is not on PATH (make k8s-bin needs it too)", pytrace=False)
    binary.parent.mkdir(parents=True, exist_ok=True)
    built = subprocess.run(
        [go, "build", "-trimpath", "-o", str(binary), "."],
        cwd=LUACHECK_SOURCE,
        env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return binary


@pytest.mark.parametrize(("kind", "case"), _cases())
def test_health_test_yaml_case_in_gopher_lua(
    gopher_lua: Path, kind: str, case: dict[str, Any]
) -> None:
    folder = ARGOCD / "trainwright.io" / kind
    obj = yaml.safe_load((folder / case["inputPath"]).read_text())
    result = subprocess.run(
        [str(gopher_lua), str(folder / "health.lua")],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == case["healthStatus"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_testdata_object_has_a_case_and_every_health_status_is_covered(kind: str) -> None:
    folder = ARGOCD / "trainwright.io" / kind
    cases = yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]
    used = {case["inputPath"] for case in cases}
    assert used == {f"testdata/{p.name}" for p in (folder / "testdata").glob("*.yaml")}
    statuses = {case["healthStatus"]["status"] for case in cases}
    expected = {"Healthy", "Progressing", "Degraded"} | (
        {"Suspended"} if kind == "TrainingJob" else set()
    )
    assert statuses == expected


def test_the_sandbox_has_no_string_or_math_library_as_in_argo_cd() -> None:
    runtime = lupa51.LuaRuntime()
    runtime.execute(SANDBOX)
    for snippet in (
        "return string.format('%d', 1)",
        "return math.floor(1.5)",
        "return ('ab'):sub(1, 1)",
    ):
        with pytest.raises(lupa51.LuaError):
            runtime.execute(snippet)
    assert (
        runtime.execute("return 'generation ' .. 2 .. ' ' .. tostring(nil)") == "generation 2 nil"
    )


def test_an_observed_generation_behind_the_spec_is_progressing_whatever_the_phase() -> None:
    obj = yaml.safe_load(
        (
            ARGOCD / "trainwright.io/TrainingJob/testdata/degraded_backoffLimitExceeded.yaml"
        ).read_text()
    )
    obj["metadata"]["generation"] = 3
    health = run_health("TrainingJob", obj)
    assert health == {
        "status": "Progressing",
        "message": "Waiting for the operator to act on generation 3 (status describes generation 1)",
    }


def test_the_argocd_cm_snippet_carries_each_script_unchanged() -> None:
    spec = importlib.util.spec_from_file_location("argocd_cm", ROOT / "hack" / "argocd_cm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (ARGOCD / "argocd-cm.yaml").read_text(encoding="utf-8")
    assert committed == module.render(), "helm/argocd/argocd-cm.yaml drifted: run `make argocd-cm`"
    data = yaml.safe_load(committed)["data"]
    for kind in KINDS:
        script = (ARGOCD / "trainwright.io" / kind / "health.lua").read_text(encoding="utf-8")
        assert data[f"resource.customizations.health.trainwright.io_{kind}"] == script


def test_gopher_lua_opens_no_string_or_math_library_either(
    gopher_lua: Path, tmp_path: Path
) -> None:
    for body in ("string.format('%d', 1)", "math.floor(1.5)"):
        script = tmp_path / "health.lua"
        script.write_text(f"return {{status = 'Healthy', message = {body}}}\n")
        result = subprocess.run(
            [str(gopher_lua), str(script)], input="{}", capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode != 0 and "nil" in result.stderr, result.stderr
