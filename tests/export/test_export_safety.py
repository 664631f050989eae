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


def test_serve_refuses_the_wrong_length(run_dir, tmp_path):
    _, config, model = run_dir
    path = export_saved_model(model, str(tmp_path / "export"), config=config)
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
