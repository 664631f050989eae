"""Training misused: divergence, two runs on one folder, SIGTERM while exporting, out of
memory, an unwritable folder, a TPU that is not there, `--help`. Each ends in one clear line
(or a preempted run), never in a silent success or a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from lra_keras.errors import UserError
from lra_keras.training import Trainer
from tests.training.synthetic import make_arrays, make_dataset, make_model
from tests.training.test_trainer import ENV, ROOT


def strict_json(path):
    """Parses `path` as standard JSON: bare NaN / Infinity are refused."""

    def refuse(constant):
        raise ValueError(f"{path} holds a bare {constant}")

    with open(path) as f:
        return json.loads(f.read(), parse_constant=refuse)


def json_files(folder):
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".json")]


# ---------------------------------------------------------------------- divergence


def poisoned_dataset(poisoned_step: int, batch_size: int = 8, n: int = 64):
    """The synthetic task, but the examples of training step `poisoned_step` hold token 0,
    which `poisoned_model` turns into a NaN loss (as a learning rate of 3e38 would)."""
    tokens, labels = make_arrays(n, seed=1)
    start = (poisoned_step - 1) * batch_size
    tokens[start : start + batch_size, 0] = 0  # make_arrays draws tokens from 1..15
    return tf.data.Dataset.from_tensor_slices(({"tokens": tokens}, labels)).batch(batch_size)


def poisoned_model():
    base = make_model()
    tokens = keras.Input((base.inputs[0].shape[1],), dtype="int32", name="tokens")
    poison = keras.layers.Lambda(
        lambda t: keras.ops.where(keras.ops.equal(t[:, :1], 0), float("nan"), 0.0)
    )(tokens)
    return keras.Model({"tokens": tokens}, base({"tokens": tokens}) + poison)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path):
    exported = []
    trainer = Trainer(
        poisoned_model,
        poisoned_dataset(poisoned_step=6),
        eval_data={"validation": make_dataset(32, 8, seed=2)},
        model_dir=str(tmp_path),
        batch_size=8,
        num_train_steps=10,
        eval_every=2,
        learning_rate=0.01,
        schedule="constant",
        verbose=0,
        export_fn=lambda model, path: exported.append(path),
    )
    with pytest.raises(UserError, match=r"training loss is NaN at step 6") as caught:
        trainer.train()
    assert "step 4" in str(caught.value) and "\n" not in str(caught.value)
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith("ckpt-4")
    assert strict_json(tmp_path / "best" / "best.json")["step"] in (2, 4)
    assert strict_json(tmp_path / "progress.json")["step"] == 4
    assert set(strict_json(tmp_path / "validation.json")) == {"2", "4"}
    assert not exported and not os.path.exists(tmp_path / "results.json")
    for folder in ("checkpoints", "best"):
        reader = tf.train.load_checkpoint(str(tmp_path / folder))
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype.is_floating:
                assert np.isfinite(reader.get_tensor(name)).all(), (folder, name)
    for path in json_files(tmp_path):
        strict_json(path)


def test_the_loss_of_every_step_since_the_last_check_is_checked():
    from lra_keras.training.safeguards import LossWatch

    watch = LossWatch()
    watch.last_saved_step = 10
    for step, loss in [(11, 0.5), (12, np.float32("inf")), (13, 0.4), (14, np.nan)]:
        watch.add(step, tf.constant(loss))
    with pytest.raises(UserError, match=r"loss is infinite at step 12: .*\(step 10\)"):
        watch.check()
    watch.check()  # what was checked is not checked again


def test_non_finite_weights_are_never_checkpointed():
    from lra_keras.training.safeguards import LossWatch, check_finite_weights

    good, bad = keras.Variable(np.ones(3)), keras.Variable(np.array([1.0, np.inf, 0.0]))
    check_finite_weights([good], 7, LossWatch())
    with pytest.raises(UserError, match="weights after step 7 are not finite"):
        check_finite_weights([good, bad], 7, LossWatch())


def test_run_files_are_strict_json_with_null_for_non_finite_values(tmp_path):
    from lra_keras.training.run_state import write_json

    path = str(tmp_path / "results.json")
    write_json(path, {"loss": float("nan"), "x": [np.float32("inf"), 1.5], "n": 3})
    assert strict_json(path) == {"loss": None, "x": [None, 1.5], "n": 3}


# ---------------------------------------------------------------------- one run per folder


def synthetic_trainer(model_dir, steps=1000):
    """The run `python -m tests.training.synthetic --steps 1000` trains (the same config)."""
    return Trainer(
        make_model,
        make_dataset(256, 16, seed=1, shuffle=True),
        eval_data={"validation": make_dataset(64, 16, seed=2), "test": make_dataset(64, 16, 3)},
        model_dir=str(model_dir),
        batch_size=8,
        num_train_steps=steps,
        learning_rate=0.01,
        schedule="constant",
        eval_every=10,
        verbose=0,
        export_fn=None,
    )


def test_a_second_live_run_on_one_folder_is_refused_and_a_killed_one_blocks_nothing(tmp_path):
    model_dir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "tests.training.synthetic", "--model_dir", str(model_dir)]
        + ["--steps", "1000", "--sleep", "0.2"],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (model_dir / "config.json").exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.2)
        second = synthetic_trainer(model_dir)
        with pytest.raises(UserError, match=rf"another run \(PID {first.pid}\) .*{model_dir}"):
            second.train()
        assert first.poll() is None  # the first one trains on
    finally:
        first.kill()  # kill -9: the OS releases its lock
        first.wait()
    from lra_keras.training.safeguards import lock_model_dir

    with lock_model_dir(str(model_dir)):
        pass


def test_an_unwritable_model_dir_is_one_line_naming_it(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    model_dir = tmp_path / "a_file" / "run"
    trainer = synthetic_trainer(model_dir, steps=2)
    with pytest.raises(UserError, match=f"--model_dir {model_dir}"):
        trainer.train()


# ---------------------------------------------------------------------- SIGTERM while exporting


def test_sigterm_while_exporting_is_a_clean_preemption(tmp_path):
    model_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.training.synthetic", "--model_dir", str(model_dir)]
        + ["--steps", "4", "--eval_every", "2", "--export", "--slow_export"],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (model_dir / "exporting").exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.2)
    assert [f for f in os.listdir(model_dir) if ".partial-" in f]  # the export is under way
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    results = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert results["results"] == {"preempted": True, "step": 4}
    assert not [f for f in os.listdir(model_dir) if ".partial-" in f]
    assert not os.path.exists(model_dir / "export")
    assert tf.train.latest_checkpoint(model_dir / "checkpoints").endswith("ckpt-4")


# ---------------------------------------------------------------------- out of memory


def oom(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[16,2,100001,100001]"
    )


def test_out_of_memory_building_the_model_is_one_line_naming_what_to_lower(tmp_path):
    with pytest.raises(UserError, match=r"out of memory while building the model.*max_length"):
        Trainer(
            oom,
            make_dataset(32, 8),
            model_dir=str(tmp_path),
            batch_size=8,
            num_train_steps=2,
            verbose=0,
            export_fn=None,
        )


def test_out_of_memory_at_the_first_step_leaves_the_folder_reusable(tmp_path):
    def trainer(batch_size):
        return Trainer(
            make_model,
            make_dataset(64, 8),
            model_dir=str(tmp_path),
            batch_size=batch_size,
            num_train_steps=2,
            verbose=0,
            export_fn=None,
        )

    too_big = trainer(8)
    too_big._train_fn = oom
    expected = r"out of memory while training.*shape\[16,2,100001,100001\].*--batch_size"
    with pytest.raises(UserError, match=expected):
        too_big.train()
    assert (tmp_path / "config.json").exists()
    results = trainer(4).train()  # the corrected command on the same --model_dir
    assert results["step"] == 2
    assert strict_json(tmp_path / "config.json")["trainer"]["batch_size"] == 4


# ---------------------------------------------------------------------- strategies


@pytest.mark.skipif(
    bool(os.environ.get("TPU_NAME") or tf.config.list_physical_devices("TPU")),
    reason="this machine has a TPU",
)
def test_strategy_tpu_without_a_tpu_is_a_value_error_naming_it():
    from lra_keras.training.strategies import make_strategy

    with pytest.raises(ValueError, match="no TPU found"):
        make_strategy("tpu")


# ---------------------------------------------------------------------- --help


@pytest.mark.parametrize(
    "command, module, expected",
    [
        ("lra-train", "lra_keras.training.cli", ["--model_dir", "--strategy", "--set"]),
        ("lra-data", "lra_keras.data.cli", ["listops", "pathfinder", "prepare", "--out"]),
        # Slow: its --help loads TensorFlow (16 s on a loaded core); the other two do not.
        pytest.param(
            "lra-export",
            "lra_keras.export.cli",
            ["--model_dir", "--out", "--overwrite"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_help_lists_the_commands_own_flags_and_subcommands(command, module, expected):
    # As the console script runs it: argv[0] is the script, `__main__` has no docstring.
    script = f"import sys; sys.argv[0] = {command!r}; from {module} import run; run()"
    done = subprocess.run(
        [sys.executable, "-c", script, "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=ROOT,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for text in expected:
        assert text in done.stdout, done.stdout


# ---------------------------------------------------------------------- bad data found late


def test_a_bad_line_found_while_training_is_one_line_naming_file_and_line(tmp_path):
    # tf.data finds a malformed line when it reaches it, inside a TensorFlow error: lra-train
    # prints the reader's one line and exits 2, not a traceback.
    from lra_keras.data import write_listops

    data = tmp_path / "data"
    write_listops(str(data), num_train=32, num_val=8, num_test=8, min_length=5, max_length=40)
    train = data / "basic_train.tsv"
    header, *lines = train.read_text().splitlines()
    # Labels that are not digits; every line is bad, so whichever the shuffle draws first
    # (a line is checked when it is decoded) stops the run.
    lines = [line.split("\t")[0] + "\tx" for line in lines]
    train.write_text("\n".join([header, *lines]) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lra_keras.training.cli",
            "--task=listops",
            "--preset=tiny",
            f"--data_dir={data}",
            f"--model_dir={tmp_path / 'run'}",
            "--num_train_steps=2",
            "--batch_size=8",
            "--noexport",
            "--verbose=0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert re.search(rf"{re.escape(str(train))}, line \d+: expected", last), last
