"""`lra-train` as a user runs it: preemption by SIGTERM, resuming with other flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lra_keras.data.listops_generator import write_listops
from tests.training.test_trainer import ENV, ROOT, assert_one_line_error


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("listops")
    write_listops(str(folder), num_train=64, num_val=16, num_test=16, min_length=5, max_length=60)
    return folder


def lra_train(data_dir, model_dir, *flags):
    return [
        sys.executable,
        "-m",
        "lra_keras.training.cli",
        "--task",
        "listops",
        "--preset",
        "tiny",
        "--data_dir",
        str(data_dir),
        "--model_dir",
        str(model_dir),
        "--noexport",
        "--verbose",
        "0",
        *flags,
    ]


# Slow (a minute of subprocesses): `make test` covers SIGTERM in-process (test_trainer) and
# through the JAX CLI (test_jax_trainer), and a changed configuration in test_resume_faults.
@pytest.mark.slow
def test_sigterm_checkpoints_exits_143_and_another_config_is_refused(listops_dir, tmp_path):
    model_dir = tmp_path / "run"
    process = subprocess.Popen(
        lra_train(listops_dir, model_dir, "--num_train_steps", "100000", "--eval_every", "100000"),
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Until the run has started (no time limit: a loaded machine is slow, not wrong).
    while not (model_dir / "config.json").exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    assert "preempted at step" in err and "run the same command to resume" in err
    assert any(f.endswith(".index") for f in os.listdir(model_dir / "checkpoints"))

    config = (model_dir / "config.json").read_text()
    done = subprocess.run(
        lra_train(listops_dir, model_dir, "--num_train_steps", "100000", "--eval_every", "100000")
        + ["--attention", "local"],
        capture_output=True,
        text=True,
        timeout=240,
        env=ENV,
        cwd=ROOT,
    )
    assert_one_line_error(done, 'attention: "full" -> "local"')
    assert (model_dir / "config.json").read_text() == config
