"""The training loop: learning, distribution, resume after a kill, SIGTERM, accumulation."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from lra_keras.training import LRASchedule, Trainer
from tests.training.synthetic import make_dataset, make_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)


def run_synthetic(*args, timeout=300):
    done = subprocess.run(
        [sys.executable, "-m", "tests.training.synthetic", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def test_trainer_learns_a_trivial_task(tmp_path):
    trainer = Trainer(
        lambda: make_model(),
        make_dataset(512, 32, seed=1, shuffle=True),
        eval_data={"validation": make_dataset(128, 32, seed=2), "test": make_dataset(128, 32, 3)},
        model_dir=str(tmp_path),
        batch_size=32,
        num_train_steps=300,
        learning_rate=0.02,
        schedule="constant",
        eval_every=100,
        verbose=0,
        export_fn=None,
    )
    results = trainer.train()
    assert results["best"]["test"]["accuracy"] > 0.9
    assert os.path.exists(os.path.join(tmp_path, "results.json"))
    # The peak memory figure says where it came from (allocator statistics or process RSS).
    assert results["train"]["peak_memory_source"] in ("allocator", "rss")
    assert os.listdir(os.path.join(tmp_path, "logs", "train"))


def test_mirrored_two_cpus_matches_one_device(tmp_path):
    one = run_synthetic("--model_dir", tmp_path / "one", "--steps", 5, "--trajectory")
    two = run_synthetic(
        "--model_dir",
        tmp_path / "two",
        "--steps",
        5,
        "--trajectory",
        "--cpus",
        2,
        "--strategy",
        "mirrored",
    )
    np.testing.assert_allclose(two["losses"], one["losses"], atol=1e-5)
    np.testing.assert_allclose(two["weights"], one["weights"], atol=1e-4)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    whole = run_synthetic("--model_dir", tmp_path / "a", "--steps", 4, "--trajectory")
    accumulated = run_synthetic(
        "--model_dir", tmp_path / "b", "--steps", 4, "--trajectory", "--grad_accum_steps", 2
    )
    np.testing.assert_allclose(accumulated["losses"], whole["losses"], atol=1e-5)
    np.testing.assert_allclose(accumulated["weights"], whole["weights"], atol=1e-5)


def _wait_for_checkpoint(directory, process):
    # No time limit: a loaded machine is slow, not wrong; a run that ends first fails.
    while True:
        if os.path.isdir(directory) and any(f.endswith(".index") for f in os.listdir(directory)):
            return
        if process.poll() is not None:
            raise AssertionError("the run ended before writing a checkpoint")
        time.sleep(0.2)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    args = ["--steps", 40, "--checkpoint_every", 10, "--eval_every", 20, "--deterministic"]
    reference = run_synthetic("--model_dir", tmp_path / "straight", *args)
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.training.synthetic", "--model_dir", str(killed_dir)]
        + [str(a) for a in args]
        + ["--sleep", "0.1"],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_checkpoint(killed_dir / "checkpoints", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not os.path.exists(killed_dir / "results.json")
    resumed = run_synthetic("--model_dir", killed_dir, *args)
    np.testing.assert_allclose(resumed["weights"], reference["weights"], atol=1e-6)
    for split in ("validation", "test"):
        assert resumed["results"]["last"][split]["accuracy"] == pytest.approx(
            reference["results"]["last"][split]["accuracy"]
        )


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
    model_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.training.synthetic", "--model_dir", str(model_dir)]
        + ["--steps", "100000", "--checkpoint_every", "100000", "--eval_every", "100000"]
        + ["--sleep", "0.05"],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    while not os.path.exists(model_dir / "config.json"):
        assert process.poll() is None, "the run ended before it started training"
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    results = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert results["results"]["preempted"] is True
    assert any(f.endswith(".index") for f in os.listdir(model_dir / "checkpoints"))


# Slow (two TensorFlow worker processes); `make test` keeps the mirrored two-CPU check.
@pytest.mark.slow
def test_multi_worker_mirrored_on_two_local_workers(tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = dict(
            ENV,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.training.synthetic",
                    "--model_dir",
                    str(tmp_path / "run"),
                    "--steps",
                    "4",
                    "--strategy",
                    "multi_worker",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    assert json.loads(outputs[0][0].splitlines()[-1])["results"]["step"] == 4


def test_lra_schedules_match_the_reference_formulas():
    rsqrt = LRASchedule(0.05, warmup_steps=1000, schedule="rsqrt")
    for step in (0, 1, 500, 1000, 4000):
        expected = 0.05 * min(1.0, step / 1000) / np.sqrt(max(step, 1000))
        assert float(rsqrt(step)) == pytest.approx(expected, rel=1e-6)
    cosine = LRASchedule(1e-3, warmup_steps=10, schedule="cosine", steps_per_cycle=100)
    for step in (5, 10, 60, 110):
        progress = max(0.0, (step - 10) / 100) % 1.0
        expected = 1e-3 * min(1.0, step / 10) * 0.5 * (1 + np.cos(np.pi * progress))
        assert float(cosine(step)) == pytest.approx(expected, rel=1e-5, abs=1e-12)


def test_trainer_refuses_bad_arguments(tmp_path):
    ds = make_dataset(32, 8)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(make_model, ds, model_dir=str(tmp_path), batch_size=0, num_train_steps=1)
    with pytest.raises(ValueError, match="mixed_precision"):
        Trainer(
            make_model,
            ds,
            model_dir=str(tmp_path),
            batch_size=8,
            num_train_steps=1,
            mixed_precision="fp8",
        )


def assert_one_line_error(done, message, prog="lra-train"):
    """A user error: exit status 2 and one line `prog: error: ...`, no traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-3000:]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--task", "imdb"], "Unknown task 'imdb'"),
        (["--task", "listops", "--set", "num_layer=3"], "Unknown config key"),
        # Each case is a TensorFlow process (10-20 s on a loaded core): `make test` runs the
        # two above, one flag check and one config check; `make test-all` all of them.
        *(
            pytest.param(*case, marks=pytest.mark.slow)
            for case in [
                (["--task", "listops", "--bogus_flag", "1"], "bogus_flag"),
                (["--task", "listops", "--attention", "fulll"], "Unknown attention 'fulll'"),
                (["--task", "listops", "--set", "oops"], "--set takes key=value"),
                (["--task", "listops", "--strategy", "gpu"], "strategy"),
                (["--task", "listops", "--data_option", "oops"], "--data_option must be key=value"),
                (["--task", "listops", "--data_option", "difficulty=easy"], "Unknown options"),
            ]
        ),
    ],
)
def test_cli_bad_flags_give_clear_errors(tmp_path, flags, message):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lra_keras.training.cli",
            "--data_dir",
            str(tmp_path),
            "--model_dir",
            str(tmp_path / "run"),
            "--preset",
            "tiny",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        cwd=ROOT,
    )
    assert_one_line_error(done, message)


def test_cli_reports_a_missing_data_set(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lra_keras.training.cli",
            "--task",
            "listops",
            "--preset",
            "tiny",
            "--data_dir",
            str(tmp_path),
            "--model_dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        cwd=ROOT,
    )
    assert_one_line_error(done, "lra-data listops")
