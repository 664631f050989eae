"""`python -m benchmarks.lra_protocol`: LRA's protocol as one command, checked at toy scale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from benchmarks import lra_protocol

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_smoke(out_dir, backend: str, extra_env=None):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    env.update(extra_env or {})
    env["PYTHONPATH"] = os.pathsep.join(
        [p for p in [extra_env and extra_env.get("PYTHONPATH"), ROOT] if p]
    )
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.lra_protocol", "--smoke", f"--out_dir={out_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _rows(out_dir) -> list[dict]:
    with open(os.path.join(out_dir, "lra_protocol.json")) as f:
        return json.load(f)["rows"]


def test_smoke_trains_both_tasks_and_skips_done_rows(tmp_path):
    done = _run_smoke(tmp_path, "tensorflow")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(tmp_path)
    assert [(r["task"], r["attention"], r["status"]) for r in rows] == [
        ("listops", "full", "ok"),
        ("pathfinder", "full", "ok"),
    ], rows
    for row in rows:
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["steps"] == 2 and row["steps_per_sec"] > 0
        assert row["backend"] == "tensorflow" and row["device"]
    assert rows[0]["paper_test_accuracy"] == 36.37  # LRA Table 1, Transformer, ListOps
    assert rows[1]["paper_test_accuracy"] == 71.40
    table = (tmp_path / "lra_protocol.md").read_text()
    assert "| listops | full |" in table and "LRA Table 1" in table
    # A second call finds every row done and trains nothing.
    again = _run_smoke(tmp_path, "tensorflow")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before, skipped") == 2
    assert _rows(tmp_path) == rows


def test_budget_stops_a_row_with_sigterm_and_it_is_resumable(tmp_path):
    # A child that, like lra-train, checkpoints on SIGTERM and exits 0.
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal, sys, time
            def stop(*_):
                print("checkpointed", file=sys.stderr)
                sys.exit(0)
            signal.signal(signal.SIGTERM, stop)
            print("started", file=sys.stderr, flush=True)
            time.sleep(60)
            """
        )
    )
    import time

    status, stderr, stopped = lra_protocol._run_until(
        [sys.executable, str(script)], time.time() + 2
    )
    assert stopped and status == 0 and "checkpointed" in stderr


def test_paper_numbers_cover_the_defaults():
    for attention in ("full", "local", "linformer", "performer"):
        for task in lra_protocol.TASKS:
            value, source = lra_protocol.paper_accuracy(attention, task)
            assert value is not None and source == "LRA Table 1"
    assert lra_protocol.paper_accuracy("chunked", "listops") == (None, "")


def test_bad_arguments_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="--tasks has unknown"):
        lra_protocol.main(["--tasks=text", f"--out_dir={tmp_path}"])
    with pytest.raises(SystemExit, match="--budget_s must be > 0"):
        lra_protocol.main(["--budget_s=0", f"--out_dir={tmp_path}"])


# Slow (30 s of subprocesses): `make test` trains on JAX with TensorFlow blocked through the
# CLI in test_jax_trainer, and runs this command's smoke on TensorFlow above.
@pytest.mark.slow
def test_smoke_on_jax_where_tensorflow_is_not_installed(tmp_path):
    from tests.backends import no_tensorflow

    blocker = no_tensorflow.blocker_dir(tmp_path / "blocker")
    out_dir = tmp_path / "out"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = no_tensorflow.run_python(
        ["-m", "benchmarks.lra_protocol", "--smoke", f"--out_dir={out_dir}"],
        blocker,
        cwd=ROOT,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(out_dir)
    assert [(r["task"], r["status"], r["backend"]) for r in rows] == [
        ("listops", "ok", "jax"),
        ("pathfinder", "ok", "jax"),
    ], rows
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["steps"] == 2 for r in rows)
