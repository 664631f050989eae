"""Export never deletes what is not an export, and refuses inputs of the wrong length."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from lra_keras.errors import UserError
from lra_keras.export import export_saved_model, load
from lra_keras.export.cli import check_out
from lra_keras.export.saved_model import EXPORT_MARKER
from lra_keras.zoo import build_model_from_config, get_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished `lra-train` run folder: config.json, best/ weights, results.json."""
    run = tmp_path_factory.mktemp("project") / "runs" / "listops"
    config = get_config("listops", "full", "tiny")
    model = build_model_from_config(config)
    model({"tokens": tf.zeros((1, config["max_length"]), tf.int32)})
    tf.train.Checkpoint(model=model, model_variables=list(model.variables)).save(
        str(run / "best" / "ckpt")
    )
    (run / "checkpoints").mkdir()
    (run / "config.json").write_text(json.dumps({**config, "trainer": {}}))
    (run / "results.json").write_text("{}")
    return run, config, model


@pytest.fixture(scope="module")
def export_path(run_dir, tmp_path_factory):
    """An export of `run_dir`'s model, shared by the tests that only read it."""
    _, config, model = run_dir
    return export_saved_model(
        model, str(tmp_path_factory.mktemp("served") / "export"), config=config
    )


def listing(folder):
    return sorted(
        os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
    )


@pytest.mark.parametrize("out", ["run", "parent", "grandparent"])
def test_cli_refuses_an_out_that_is_or_holds_the_run(run_dir, out):
    run = run_dir[0]
    target = {"run": run, "parent": run.parent, "grandparent": run.parent.parent}[out]
    with pytest.raises(UserError, match="--model_dir"):
        check_out(str(target), str(run))
    with pytest.raises(UserError, match="--model_dir"):
        check_out(os.path.relpath(target), str(run))
    check_out(str(run / "export"), str(run))
    check_out(str(run.parent / "listops_export"), str(run))


def test_overwrite_replaces_only_an_export(run_dir, tmp_path):
    run, config, model = run_dir
    before = listing(run)
    for folder in (run, run.parent, run / "checkpoints"):
        with pytest.raises(FileExistsError, match="not an export"):
            export_saved_model(model, str(folder), config=config, overwrite=True)
    assert listing(run) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an export"):
        export_saved_model(model, str(other), config=config, overwrite=True)
    assert (other / "todo.txt").read_text() == "keep me"

    path = export_saved_model(model, str(tmp_path / "export"), config=config)
    assert os.path.isfile(os.path.join(path, EXPORT_MARKER))
    export_saved_model(model, path, config=config, overwrite=True)  # a previous export: fine
    assert load(path).config["task"] == "listops"
    # An export someone put other things in is not replaced either.
    (tmp_path / "export" / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="results.json"):
        export_saved_model(model, path, config=config, overwrite=True)
    assert (tmp_path / "export" / "results.json").exists()


def test_serve_refuses_the_wrong_length(run_dir, export_path):
    _, config, _ = run_dir
    path = export_path
    length = config["max_length"]
    wrong = np.ones((2, length + 3), np.int32)
    reloaded = tf.saved_model.load(path)
    for name in ("serving_default", "serve"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"shape \[batch, {length}\]"):
            reloaded.signatures[name](tokens=tf.constant(wrong))
    with pytest.raises(ValueError, match=rf"shape \[batch, {length}\].*\[2, {length + 3}\]"):
        load(path)(wrong)
    right = np.ones((2, length), np.int32)
    np.testing.assert_allclose(
        reloaded.signatures["serve"](tokens=tf.constant(right))["logits"].numpy(),
        load(path)(right)["logits"],
        atol=1e-6,
    )


def lra_export(*args):
    return subprocess.run(
        [sys.executable, "-m", "lra_keras.export.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=ROOT,
    )


def assert_one_line_error(done, prog, message):
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-3000:]


def test_cli_overwrite_of_the_project_folder_is_one_line_and_deletes_nothing(run_dir):
    run = run_dir[0]
    before = listing(run.parent.parent)
    done = lra_export("--model_dir", run, "--out", run.parent.parent, "--overwrite")
    assert_one_line_error(done, "lra-export", "contains --model_dir")
    assert listing(run.parent.parent) == before


def test_cli_run_folder_without_a_run_is_one_line(tmp_path):
    done = lra_export("--model_dir", tmp_path / "nothing", "--out", tmp_path / "export")
    assert_one_line_error(done, "lra-export", "config.json")
    assert not (tmp_path / "export").exists()


@pytest.mark.slow
def test_cli_exports_then_overwrites_its_export(run_dir, tmp_path):
    run = run_dir[0]
    out = tmp_path / "exports" / "listops"
    assert lra_export("--model_dir", run, "--out", out).returncode == 0
    assert_one_line_error(lra_export("--model_dir", run, "--out", out), "lra-export", "exists")
    done = lra_export("--model_dir", run, "--out", out, "--overwrite")
    assert done.returncode == 0, done.stderr[-3000:]
    assert load(str(out)).config["attention"] == "full"


class _ServeMustNotRun:
    """Stands in for the SavedModel: its signatures are the real ones, `serve` fails."""

    def __init__(self, saved_model):
        self.signatures = saved_model.signatures

    def serve(self, inputs):
        raise AssertionError("the model ran on ids that should have been refused")


def test_load_refuses_ids_that_are_not_token_ids(run_dir, export_path):
    # A float id was truncated (1.9 -> 1) and a negative one wrapped around the embedding
    # (-3 -> token 14 of 17) without a word; ids past the vocabulary and strings crashed.
    config = run_dir[1]
    loaded = load(export_path)
    length, vocab = config["max_length"], config["vocab_size"]
    good = np.ones((2, length), np.int32)
    expected = loaded(good)["logits"]
    # Whole-valued floats and other integer dtypes are ids all the same.
    np.testing.assert_allclose(loaded(good.astype("float32"))["logits"], expected, atol=1e-6)
    np.testing.assert_allclose(loaded(good.astype("int64"))["logits"], expected, atol=1e-6)
    real = loaded.saved_model
    loaded.saved_model = _ServeMustNotRun(real)

    def bad(index, value, dtype=None):
        ids = good.astype(dtype or np.asarray(value).dtype)
        ids[index] = value
        return ids

    cases = [
        (bad((1, 3), 1.9), r"non-integer id 1\.9 at index \[1, 3\]"),
        (bad((0, 0), np.nan, "float32"), r"non-integer id nan at index \[0, 0\]"),
        (bad((0, 2), -3), r"negative id -3 at index \[0, 2\]"),
        (bad((1, 5), vocab), rf"out-of-vocabulary id {vocab} at index \[1, 5\]"),
        (bad((0, 1), 2**32 + 1), r"out-of-vocabulary id 4294967297"),
        (np.full((2, length), "7"), "got strings; use `predict_text`"),
        ("some text", "got a string; use `predict_text`"),
        (good.astype(bool), "got booleans"),
    ]
    for ids, message in cases:
        with pytest.raises(
            UserError, match=rf"^'tokens' must be integer token ids in \[0, {vocab}\)"
        ):
            loaded(ids)
        with pytest.raises(UserError, match=message) as error:
            loaded(ids)
        assert "\n" not in str(error.value)
    # The shape is still checked, as a UserError now.
    with pytest.raises(UserError, match=rf"shape \[batch, {length}\]"):
        loaded(np.ones((2, length + 1), np.int32))
    loaded.saved_model = real
    np.testing.assert_allclose(loaded(good)["logits"], expected)
