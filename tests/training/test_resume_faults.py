"""A run interrupted at any point, or restarted, ends with the uninterrupted run's results.

In process: a "kill" is an exception raised at a precise point of the loop (nothing the loop
does on the way out writes run state), and the resumed run is a fresh `Trainer` on the same
folder. `test_trainer.py` kills real processes.
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
from lra_keras.training import Trainer
from tests.training.synthetic import make_dataset, make_model


class Killed(BaseException):
    """Stands for kill -9: nothing catches it."""


def make_trainer(model_dir, exports=None, **overrides):
    keras.utils.set_random_seed(0)
    options = dict(
        model_dir=str(model_dir),
        eval_data={"validation": make_dataset(64, 16, seed=2), "test": make_dataset(64, 16, 3)},
        batch_size=8,
        num_train_steps=20,
        learning_rate=0.01,
        schedule="constant",
        eval_every=10,
        verbose=0,
        export_fn=lambda model, path: exports.append(model.get_weights()),
    )
    options.update(overrides)
    return Trainer(make_model, make_dataset(256, 16, seed=1, shuffle=True), **options)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    exports = []
    model_dir = tmp_path_factory.mktemp("reference")
    results = make_trainer(model_dir, exports).train()
    # The faults below matter only if the step they hit would have been the best.
    assert results["best"]["step"] == 20
    return {"results": results, "export": exports[-1], "model_dir": model_dir}


def check_same_as(reference, results, export):
    for entry in ("best", "last"):
        assert results[entry]["step"] == reference["results"][entry]["step"]
        for split in ("validation", "test"):
            for key in ("accuracy", "loss"):
                assert results[entry][split][key] == pytest.approx(
                    reference["results"][entry][split][key], rel=1e-6
                )
    for got, want in zip(export, reference["export"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def die_checkpointed_but_not_validated(trainer):
    """The order before the fix: step 20 checkpointed, then killed before validating it."""
    validate = trainer._validate

    def patched(step, best, summaries):
        if step == 20:
            trainer.state.save(step, {})
            raise Killed
        return validate(step, best, summaries)

    trainer._validate = patched


def die_after_best_before_record(trainer):
    record = trainer.state.record_validation

    def patched(step, metrics):
        if step == 20:
            raise Killed
        record(step, metrics)

    trainer.state.record_validation = patched


def sigterm_during_step(trainer, number=10):
    step_fn, calls = trainer._train_fn, []

    def patched(micro):
        calls.append(1)
        if len(calls) == number:
            os.kill(os.getpid(), signal.SIGTERM)
        return step_fn(micro)

    trainer._train_fn = patched


def sigterm_during_validation(trainer):
    evaluate = trainer.evaluator.evaluate

    def patched(split):
        os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(split)

    trainer.evaluator.evaluate = patched


@pytest.mark.parametrize(
    "fault",
    [
        die_checkpointed_but_not_validated,
        die_after_best_before_record,
        sigterm_during_step,
        sigterm_during_validation,
    ],
)
def test_interrupted_run_resumes_to_the_uninterrupted_results(tmp_path, reference, fault):
    exports = []
    trainer = make_trainer(tmp_path, exports)
    fault(trainer)
    try:
        results = trainer.train()
        assert results["preempted"] is True
    except Killed:
        pass
    assert not os.path.exists(tmp_path / "results.json")
    results = make_trainer(tmp_path, exports).train()
    check_same_as(reference, results, exports[-1])
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["best"]["step"] == 20


def test_rerunning_a_finished_run_keeps_its_training_figures(reference):
    with open(reference["model_dir"] / "results.json") as f:
        before = json.load(f)
    assert before["train"]["loss"] > 0
    results = make_trainer(reference["model_dir"], []).train()
    with open(reference["model_dir"] / "results.json") as f:
        after = json.load(f)
    assert results["train"] == before["train"] == after["train"]
    assert after["wall_time_s"] == before["wall_time_s"]
    assert after["best"] == before["best"]


def test_resuming_with_another_config_is_refused(reference):
    model_dir = reference["model_dir"]
    with open(model_dir / "config.json") as f:
        saved = f.read()
    with pytest.raises(UserError, match=r"trainer\.schedule\.learning_rate: 0\.01 -> 0\.02"):
        make_trainer(model_dir, [], learning_rate=0.02).train()
    with pytest.raises(UserError, match=r"attention: \(unset\) -> \"full\""):
        make_trainer(model_dir, [], config={"attention": "full"}).train()
    with open(model_dir / "config.json") as f:
        assert f.read() == saved


def exported_weights(model_dir):
    archive = os.path.join(model_dir, "export", "model.keras")
    return keras.saving.load_model(archive, compile=False).get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_random_moments_gives_the_uninterrupted_results(tmp_path, seed):
    """Two kill -9 at random moments of one run, each resumed; then it runs to the end."""
    from tests.training.test_trainer import ENV, ROOT, run_synthetic

    args = ["--steps", 30, "--checkpoint_every", 10, "--eval_every", 5, "--deterministic"]
    args += ["--export"]
    reference = run_synthetic("--model_dir", tmp_path / "straight", *args)
    rng = np.random.default_rng(seed)
    killed = tmp_path / "killed"
    for _ in range(2):
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.training.synthetic", "--model_dir", str(killed)]
            + [str(a) for a in args]
            + ["--sleep", "0.05"],
            env=ENV,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait until the run has started (it writes config.json first); a child that dies
        # before that fails the test with its exit status instead of hanging it.
        while not (killed / "config.json").exists():
            assert process.poll() is None, f"the run exited early ({process.returncode})"
            time.sleep(0.05)
        # A random moment of the run to kill it at (not a speed check).
        time.sleep(rng.uniform(0.0, 3.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    resumed = run_synthetic("--model_dir", killed, *args)
    for entry in ("best", "last"):
        for split in ("validation", "test"):
            assert resumed["results"][entry][split] == pytest.approx(
                reference["results"][entry][split], rel=1e-6
            )
        assert resumed["results"][entry]["step"] == reference["results"][entry]["step"]
    for got, want in zip(
        exported_weights(killed), exported_weights(tmp_path / "straight"), strict=True
    ):
        np.testing.assert_allclose(got, want, atol=1e-6)
