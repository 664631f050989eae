"""`python -m benchmarks.gpu --smoke` runs every part on a CPU under JAX and writes its rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Slow: ten text models and four layers compiled (8 min on a shared, loaded 2-core machine).
@pytest.mark.slow
def test_smoke_run_writes_every_part(tmp_path):
    output = tmp_path / "gpu.json"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    command = [sys.executable, "-m", "benchmarks.gpu", "--smoke", "--output", str(output)]
    done = subprocess.run(
        command + ["--variants", "chunked,full,linformer"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(output.read_text())
    rows = doc["rows"]
    errors = [r for r in rows if "error" in r or "skipped" in r]
    assert not errors, errors
    matmul = [r for r in rows if r["part"] == "matmul"]
    assert matmul and matmul[0]["float32_tflops"] > 0 and matmul[0]["bfloat16_tflops"] > 0
    table2 = {r["attention"] for r in rows if r["part"] == "table2" and r["steps_per_s"] > 0}
    assert table2 == {
        "full", "local", "linformer", "reformer", "sinkhorn", "synthesizer", "bigbird",
        "linear", "performer", "chunked",
    }  # fmt: skip
    layers = {(r["attention"], r["dtype"]) for r in rows if r["part"] == "layer"}
    for name in ("chunked", "full", "linformer", "keras_mha_flash"):
        assert {(name, "float32"), (name, "mixed_bfloat16")} <= layers
    assert all(r["temp_mib"] >= 0 and r["ms"] > 0 for r in rows if r["part"] == "layer")
    assert len(doc["table2_markdown"]) == 2 + 10
