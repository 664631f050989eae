"""`lra-export` on a full or read-only disk, from a damaged checkpoint, after a killed export:
one line naming what and where, never a traceback; what a killed export left is removed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from lra_keras.errors import UserError
from lra_keras.export import cli
from lra_keras.export.saved_model import EXPORT_MARKER
from lra_keras.zoo import build_model_from_config, get_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A trained `lra-train` run folder: config.json and best/ weights."""
    run = tmp_path_factory.mktemp("faults") / "run"
    config = get_config("listops", "full", "tiny")
    model = build_model_from_config(config)
    model({"tokens": tf.zeros((1, config["max_length"]), tf.int32)})
    tf.train.Checkpoint(model=model, model_variables=list(model.variables)).save(
        str(run / "best" / "ckpt")
    )
    (run / "checkpoints").mkdir()
    (run / "config.json").write_text(json.dumps({**config, "trainer": {}}))
    return run


def export_main(model_dir, out):
    """`lra-export --model_dir model_dir --out out`, in this process."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(model_dir=str(model_dir), out=str(out)):
        cli.main(["lra-export"])


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    "failure, reason",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (
            tf.errors.PermissionDeniedError(None, None, "x/variables; Read-only file system"),
            "Read-only file system",
        ),
    ],
)
def test_a_full_or_read_only_disk_is_one_line_naming_out(
    run_dir, tmp_path, monkeypatch, failure, reason
):
    def fail(*args, **kwargs):
        raise failure

    # What a killed export of the same target left: removed by this export.
    stale = tmp_path / f".exported.partial-{dead_pid()}-abc"
    stale.mkdir()
    monkeypatch.setattr(tf.saved_model, "save", fail)
    out = tmp_path / "exported"
    with pytest.raises(UserError, match=f"cannot write the export to --out {out}: .*{reason}"):
        export_main(run_dir, out)
    assert not out.exists() and not stale.exists()
    assert not [f for f in os.listdir(tmp_path) if ".partial-" in f]


@pytest.mark.parametrize("damage", ["truncated data", "truncated index", "config"])
def test_a_damaged_run_is_one_line_naming_the_file(run_dir, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    best = run / "best"
    if damage == "config":
        (run / "config.json").write_text('{"task": "listops", ')
        expected = "config.json is not valid JSON"
    else:
        suffix = ".index" if damage == "truncated index" else ".data-00000-of-00001"
        (target,) = [f for f in os.listdir(best) if f.endswith(suffix)]
        with open(best / target, "r+b") as f:
            f.truncate(os.path.getsize(best / target) // 2)
        expected = f"cannot read the checkpoint {best}"
    with pytest.raises(UserError, match=expected):
        export_main(run, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


def test_unfinished_exports_of_dead_writers_are_removed(tmp_path):
    from lra_keras.export.saved_model import remove_unfinished_exports

    target = tmp_path / "export"
    dead = tmp_path / f".export.partial-{dead_pid()}-x1"
    live = tmp_path / f".export.partial-{os.getpid()}-x2"
    unnamed = tmp_path / ".export.partial-x3abc"  # written before the PID was recorded
    trash = tmp_path / ("export.old-" + "0" * 32)
    kept = [live, tmp_path / "export.old-notes", tmp_path / ".other.partial-1-x"]
    for folder in [dead, unnamed, trash, *kept]:
        folder.mkdir()
    (trash / EXPORT_MARKER).write_text("{}")
    removed = remove_unfinished_exports(str(target))
    assert sorted(removed) == sorted(map(str, [dead, unnamed, trash]))
    assert all(folder.exists() for folder in kept)
