"""`lra-train` on Keras's JAX backend: the TensorFlow run's files, exact resume, devices, export.

The JAX runs are subprocesses (`tests.training.jax_run`) with `KERAS_BACKEND=jax`; this
process compares them with the TensorFlow trainer and exports with TensorFlow. Data on JAX is
`lra_keras.data.load_numpy`'s, or `tests.training.numpy_data`'s arrays.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from lra_keras.errors import UserError
from lra_keras.training.run_state import RunState
from tests.training.numpy_data import synthetic as numpy_synthetic

pytest.importorskip("jax")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="compares with the TensorFlow trainer"
)


def jax_env(devices: int = 1) -> dict:
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    # Set before jax is imported: the child's host platform shows this many devices.
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def jax_command(*args) -> list[str]:
    return [sys.executable, "-m", "tests.training.jax_run", *map(str, args)]


def run_jax(*args, devices=1, expect=0):
    done = subprocess.run(
        jax_command(*args),
        capture_output=True,
        text=True,
        timeout=600,
        env=jax_env(devices),
        cwd=ROOT,
    )
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def json_line(done) -> dict:
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


# Dropout (seed generator states), a shuffled training set read across batch and epoch
# boundaries (micro-batches of 8 from batches of 16; 256 examples), clipping, accumulation.
SYNTHETIC = [
    "--steps", 36, "--eval_every", 6, "--checkpoint_every", 6, "--dropout", 0.3,
    "--grad_clip_norm", 0.5, "--grad_accum_steps", 2,
]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted JAX run of the synthetic task."""
    model_dir = tmp_path_factory.mktemp("jax_reference")
    out = json_line(run_jax("synthetic", "--model_dir", model_dir, *SYNTHETIC))
    # Installed here, TensorFlow is still never imported by a JAX run.
    assert out["tensorflow_loaded"] is False
    return {"out": out, "model_dir": model_dir}


def check_same_run(got: dict, want: dict) -> None:
    for entry in ("best", "last"):
        assert got["results"][entry]["step"] == want["results"][entry]["step"]
        for split in ("validation", "test"):
            for key in ("accuracy", "loss"):
                assert got["results"][entry][split][key] == pytest.approx(
                    want["results"][entry][split][key], rel=1e-6
                )
    np.testing.assert_allclose(got["weights"], want["weights"], rtol=1e-6, atol=1e-6)


def latest_checkpoint(model_dir) -> str | None:
    index = os.path.join(model_dir, "checkpoints", "checkpoint.json")
    try:
        with open(index) as f:
            return json.load(f)["latest"]
    except (OSError, ValueError):
        return None


def start_slow_run(model_dir):
    return subprocess.Popen(
        jax_command("--sleep", 0.15, "synthetic", "--model_dir", model_dir, *SYNTHETIC),
        env=jax_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_new_checkpoint(model_dir, process, previous=None) -> None:
    # No time limit: a loaded machine is slow, not wrong; a run that ends first fails.
    while latest_checkpoint(model_dir) in (None, previous):
        assert process.poll() is None, f"the run exited early: {process.communicate()[1][-3000:]}"
        time.sleep(0.1)


def test_jax_run_stopped_by_sigterm_then_kill_9_resumes_to_the_uninterrupted_run(
    tmp_path, reference
):
    model_dir = tmp_path / "run"
    process = start_slow_run(model_dir)
    wait_for_new_checkpoint(model_dir, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    stopped = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert stopped["results"]["preempted"] is True and stopped["results"]["step"] < 36
    assert not (model_dir / "results.json").exists()

    checkpoint = latest_checkpoint(model_dir)
    process = start_slow_run(model_dir)
    wait_for_new_checkpoint(model_dir, process, previous=checkpoint)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    assert not (model_dir / "results.json").exists()

    resumed = json_line(run_jax("synthetic", "--model_dir", model_dir, *SYNTHETIC))
    check_same_run(resumed, reference["out"])


def test_two_emulated_devices_equal_one(tmp_path, reference):
    two = json_line(run_jax("synthetic", "--model_dir", tmp_path, *SYNTHETIC, devices=2))
    assert (reference["out"]["replicas"], two["devices"], two["replicas"]) == (1, 2, 2)
    for entry in ("best", "last"):
        assert two["results"][entry]["step"] == reference["out"]["results"][entry]["step"]
        for split in ("validation", "test"):
            for key in ("accuracy", "loss"):
                assert two["results"][entry][split][key] == pytest.approx(
                    reference["out"]["results"][entry][split][key], abs=1e-4
                )
    np.testing.assert_allclose(two["weights"], reference["out"]["weights"], atol=1e-4)


@TF_ONLY
def test_jax_steps_equal_the_tensorflow_steps_from_the_same_weights(tmp_path):
    """The LRA schedule with warmup, AdamW with weight decay, clipping, accumulation."""
    from lra_keras.training import Trainer
    from tests.training.synthetic import make_dataset, make_model

    keras.utils.set_random_seed(0)
    init = str(tmp_path / "init.weights.h5")
    make_model().save_weights(init)
    options = dict(
        batch_size=8,
        num_train_steps=6,
        learning_rate=0.05,
        schedule="rsqrt",
        warmup_steps=3,
        weight_decay=0.1,
        grad_clip_norm=0.05,
        grad_accum_steps=2,
    )

    def model_fn():
        model = make_model()
        model.load_weights(init)
        return model

    trainer = Trainer(
        model_fn,
        make_dataset(256, 16, seed=1),
        model_dir=str(tmp_path / "tf"),
        verbose=0,
        export_fn=None,
        **options,
    )
    losses = []
    for _ in range(6):
        micro = tuple(trainer._distribute(next(trainer._train_iterator)) for _ in range(2))
        losses.append(float(trainer._train_fn(micro)["loss"]))
    flags = ["--init_weights", init, "--no_shuffle", "--trajectory", "--steps", 6]
    for key in ("batch_size", "learning_rate", "schedule", "warmup_steps", "weight_decay"):
        flags += [f"--{key}", options[key]]
    flags += ["--grad_clip_norm", 0.05, "--grad_accum_steps", 2]
    jax_run = json_line(run_jax("synthetic", "--model_dir", tmp_path / "jax", *flags))
    np.testing.assert_allclose(jax_run["losses"], losses, rtol=1e-5)
    want = [float(np.sum(np.asarray(w, np.float64))) for w in trainer.model.get_weights()]
    np.testing.assert_allclose(jax_run["weights"], want, rtol=1e-4, atol=1e-5)


def test_a_nan_loss_stops_a_jax_run_at_the_last_finite_checkpoint(tmp_path):
    """`test_misuse_training`'s divergence check, on JAX."""
    args = ["--poison_step", 6, "--steps", 10, "--eval_every", 2, "--checkpoint_every", 2]
    out = json_line(run_jax("synthetic", "--model_dir", tmp_path, *args))
    assert "training loss is NaN at step 6" in out["error"] and "step 4" in out["error"]
    assert latest_checkpoint(tmp_path) == "ckpt-4.npz"
    assert not (tmp_path / "results.json").exists()
    with np.load(tmp_path / "checkpoints" / "ckpt-4.npz") as saved:
        for name in saved.files:
            if saved[name].dtype.kind == "f":
                assert np.isfinite(saved[name]).all(), name

    def refuse(constant):
        raise ValueError(f"a bare {constant}")

    for name in ("progress.json", "validation.json", "best/best.json"):
        with open(tmp_path / name) as f:
            json.loads(f.read(), parse_constant=refuse)
    with open(tmp_path / "best" / "best.json") as f:
        assert json.load(f)["step"] in (2, 4)


def field_set(value, prefix=""):
    """The dotted key paths of a results dict (the config's zoo entries left out)."""
    if not isinstance(value, dict):
        return {prefix[:-1]}
    keys = set()
    for key, item in value.items():
        if prefix == "config." and key != "trainer":
            continue
        keys |= field_set(item, f"{prefix}{key}.")
    return keys


@pytest.fixture(scope="module")
def jax_cli_run(tmp_path_factory):
    """`lra-train` on JAX where TensorFlow is not installed: tiny ListOps, self-pretrained."""
    from lra_keras.data.listops_generator import write_listops
    from tests.backends import no_tensorflow

    root = tmp_path_factory.mktemp("jax_cli")
    data_dir, model_dir, logits = root / "listops", root / "run", root / "logits.npz"
    write_listops(str(data_dir), num_train=64, num_val=16, num_test=16, min_length=5, max_length=60)
    args = ["--task", "listops", "--preset", "tiny", "--data_dir", data_dir]
    args += ["--model_dir", model_dir, "--num_train_steps", 4, "--eval_every", 2]
    args += ["--batch_size", 8, "--noexport", "--verbose", 0, "--set", "max_length=32"]
    args += ["--pretrain", "masked", "--pretrain_steps", 2]
    blocker = no_tensorflow.blocker_dir(root / "blocker")
    done = subprocess.run(
        jax_command("--save_logits", logits, "cli", *args),
        capture_output=True,
        text=True,
        timeout=600,
        env=no_tensorflow.environment(blocker, jax_env()),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"model_dir": model_dir, "logits": logits, "done": done, "args": args}


@TF_ONLY
def test_jax_cli_run_imports_no_tensorflow_and_writes_the_tensorflow_files(jax_cli_run, tmp_path):
    from lra_keras.training import Trainer
    from tests.training.synthetic import make_dataset, make_model

    model_dir = jax_cli_run["model_dir"]
    with open(model_dir / "results.json") as f:
        results = json.load(f)
    tf_dir = tmp_path / "tf"
    keras.utils.set_random_seed(0)
    tf_results = Trainer(
        make_model,
        make_dataset(64, 16, seed=1),
        eval_data={"validation": make_dataset(32, 16, 2), "test": make_dataset(32, 16, 3)},
        model_dir=str(tf_dir),
        batch_size=8,
        num_train_steps=2,
        eval_every=1,
        verbose=0,
        export_fn=None,
    ).train()
    assert field_set(results) == field_set(json.loads(json.dumps(tf_results, default=float)))
    assert sorted(set(os.listdir(model_dir)) - {"pretrain"}) == sorted(os.listdir(tf_dir))
    with open(model_dir / "pretrain" / "results.json") as f:
        assert json.load(f)["step"] == 2
    assert results["config"]["run"]["pretrain"] == "masked"
    assert results["config"]["trainer"]["backend"] == "jax"
    assert results["step"] == 4 and results["train"]["peak_memory_source"] in ("allocator", "rss")
    assert os.path.isfile(model_dir / "best" / "model.weights.h5")
    for split in ("train", "validation"):
        assert os.listdir(model_dir / "logs" / split), "no TensorBoard events"


@TF_ONLY
def test_lra_export_of_a_jax_run_predicts_the_jax_logits(jax_cli_run, tmp_path):
    import lra_keras.layers  # noqa: F401 (registers the layers the .keras archive names)
    from lra_keras.export import load

    out = tmp_path / "export"
    env = dict(jax_env(), KERAS_BACKEND="tensorflow")
    done = subprocess.run(
        [sys.executable, "-m", "lra_keras.export.cli"]
        + ["--model_dir", str(jax_cli_run["model_dir"]), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.path.isfile(out / "model.keras") and os.path.isfile(out / "saved_model.pb")
    saved = np.load(jax_cli_run["logits"])
    exported = load(str(out))(saved["tokens"])
    np.testing.assert_allclose(exported["logits"], saved["logits"], atol=1e-5)
    # `--checkpoint latest` reads the run's `.npz` checkpoint into the TensorFlow model.
    from lra_keras.export.cli import load_trained_model

    model, _ = load_trained_model(str(jax_cli_run["model_dir"]), "latest")
    latest = jax_cli_run["model_dir"] / "checkpoints" / latest_checkpoint(jax_cli_run["model_dir"])
    with np.load(latest) as checkpoint:
        for i, variable in enumerate(model.trainable_variables):
            np.testing.assert_array_equal(np.asarray(variable), checkpoint[f"trainable/{i}"])
    # The `.keras` archive holds the same model.
    archive = keras.saving.load_model(str(out / "model.keras"), compile=False)
    np.testing.assert_allclose(
        np.asarray(archive({"tokens": saved["tokens"]})), saved["logits"], atol=1e-5
    )


@TF_ONLY
def test_a_run_is_refused_on_the_other_backend_and_left_as_it_was(reference, tmp_path):
    from lra_keras.training import Trainer
    from tests.training.synthetic import make_dataset, make_model

    jax_dir = reference["model_dir"]
    before = {name: (jax_dir / name).read_bytes() for name in ("config.json", "results.json")}
    with pytest.raises(
        UserError, match="trained on the jax backend; it cannot resume on tensorflow"
    ):
        Trainer(
            make_model,
            make_dataset(64, 16, seed=1),
            model_dir=str(jax_dir),
            batch_size=8,
            num_train_steps=36,
            verbose=0,
            export_fn=None,
        ).train()
    assert before == {name: (jax_dir / name).read_bytes() for name in before}

    tf_dir = tmp_path / "tf"
    Trainer(
        make_model,
        make_dataset(64, 16, seed=1),
        model_dir=str(tf_dir),
        batch_size=8,
        num_train_steps=1,
        verbose=0,
        export_fn=None,
    ).train()
    saved = json.loads((tf_dir / "config.json").read_text())
    # What the JAX trainer's train() checks first (its RunState with backend "jax").
    with pytest.raises(
        UserError, match="trained on the tensorflow backend; it cannot resume on jax"
    ):
        RunState(str(tf_dir), None, backend="jax").check_config(saved)
    # A run from before the backend was recorded is a TensorFlow run: it resumes there.
    del saved["trainer"]["backend"]
    (tf_dir / "config.json").write_text(json.dumps(saved))
    RunState(str(tf_dir), None, backend="tensorflow").check_config(
        {**saved, "trainer": {**saved["trainer"], "backend": "tensorflow"}}
    )


def test_jax_backend_refuses_tensorflow_only_options_naming_the_flag():
    from lra_keras.training.backends import jax as jax_backend

    def make(strategy="auto", mixed_precision="none"):
        return jax_backend.TrainingBackend(
            strategy, batch_size=8, grad_accum_steps=1, mixed_precision=mixed_precision
        )

    with pytest.raises(UserError, match="--mixed_precision mixed_float16"):
        make(mixed_precision="mixed_float16")
    for name in ("tpu", "multi_worker"):
        with pytest.raises(UserError, match=f"--strategy {name} is a tf.distribute strategy"):
            make(strategy=name)
    with pytest.raises(UserError, match="--profile_steps"):
        make(strategy="default").check_options(profile_steps=(1, 2))


def test_micro_batches_resume_at_any_position():
    from lra_keras.training.backends.jax import MicroBatches

    data = numpy_synthetic(40, 16, seed=1, shuffle=True)  # batches of 16, 16, 8 per epoch
    straight = MicroBatches(data, 12)
    expected = [next(straight) for _ in range(9)]  # 108 examples: into the third epoch
    for stop in range(9):
        first = MicroBatches(data, 12)
        for _ in range(stop):
            next(first)
        resumed = MicroBatches(data, 12)
        resumed.restore(json.loads(json.dumps(first.position)))
        for want in expected[stop:]:
            features, labels = next(resumed)
            np.testing.assert_array_equal(features["tokens"], want[0]["tokens"])
            np.testing.assert_array_equal(labels, want[1])
    # Each epoch reads every example once, in its own order.
    rows = np.concatenate([b[0]["tokens"] for b in expected])
    every = np.sort(data.features["tokens"], axis=0)
    for epoch in (rows[:40], rows[40:80]):
        np.testing.assert_array_equal(np.sort(epoch, axis=0), every)
    assert not np.array_equal(rows[:40], rows[40:80])


def test_numpy_pretraining_batches_are_seeded_by_position_and_corrupt_real_tokens_only():
    from lra_keras.training.pretraining_numpy import PretrainingBatches
    from tests.training.numpy_data import ArrayDataset

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 9, size=(20, 30)).astype("int32")
    tokens[:, 25:] = 0  # padding
    towers = ArrayDataset({"tokens_1": tokens, "tokens_2": tokens[::-1]}, np.zeros(20), 8)
    data = PretrainingBatches(
        towers, "masked", vocab_size=9, mask_padding=True, seed=3, rate=0.3, mask_token=9
    )
    batches = list(data.batches(epoch=1))
    assert len(batches) == 6  # three batches of two towers
    for start in range(6):
        for (f, y), (g, z) in zip(list(data.batches(1, start)), batches[start:], strict=True):
            np.testing.assert_array_equal(f["tokens"], g["tokens"])
            np.testing.assert_array_equal(y, z)
    inputs = np.concatenate([f["tokens"] for f, _ in batches[::2]])
    targets = np.concatenate([y for _, y in batches[::2]])
    selected = targets >= 0
    assert not selected[:, 25:].any(), "padding was selected"
    np.testing.assert_array_equal(targets[selected], tokens[selected])
    np.testing.assert_array_equal(inputs[~selected], tokens[~selected])
    assert 0.2 < selected[:, :25].mean() < 0.4
    assert (inputs[selected] == 9).mean() > 0.6  # most selected tokens become [MASK]
    other_epoch = next(iter(data.batches(epoch=2)))
    assert not np.array_equal(other_epoch[1], batches[0][1])
