"""`lra-export`: export a trained `lra-train` run as a reusable SavedModel and `.keras` archive.

lra-export --model_dir runs/listops --out exports/listops [--overwrite] [--checkpoint best]
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
from absl import app, flags

from lra_keras.errors import UserError, file_system_failure, run_cli
from lra_keras.export.saved_model import (
    check_replaceable,
    export_saved_model,
    remove_unfinished_exports,
)

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model_dir", None, "The lra-train run folder (config.json, best/, checkpoints/)."
)
flags.DEFINE_string("out", None, "Where to write the export (a folder).")
flags.DEFINE_bool("overwrite", False, "Replace an existing export at --out.")
flags.DEFINE_enum(
    "checkpoint", "best", ["best", "latest"], "Best-validation weights, or the last checkpoint."
)


def load_trained_model(model_dir: str, checkpoint: str = "best"):
    """Rebuilds a run's model from `config.json` and restores its weights.

    Returns:
        `(model, zoo_config)`.
    """
    from lra_keras.zoo import build_model_from_config

    config_path = os.path.join(model_dir, "config.json")
    if not tf.io.gfile.exists(config_path):
        raise FileNotFoundError(
            f"No {config_path}: --model_dir must be a folder written by `lra-train`."
        )
    try:
        with tf.io.gfile.GFile(config_path) as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{config_path} is not valid JSON ({error}): it is damaged.") from error
    # `trainer` and `run` describe how the model was trained, not the model.
    zoo_config = {k: v for k, v in config.items() if k not in ("trainer", "run")}
    model = build_model_from_config(zoo_config)
    specs = {t.name.split(":")[0]: t.shape for t in model.inputs}
    model({name: tf.zeros((1,) + tuple(shape[1:]), tf.int32) for name, shape in specs.items()})
    folders = ["best", "checkpoints"] if checkpoint == "best" else ["checkpoints"]
    path = None
    for folder in folders:
        path = tf.train.latest_checkpoint(os.path.join(model_dir, folder))
        if path:
            break
    if path is None:
        raise FileNotFoundError(
            f"No checkpoint under {model_dir}/{{{','.join(folders)}}}: train first with "
            f"`lra-train --model_dir {model_dir} ...`."
        )
    ckpt = tf.train.Checkpoint(model=model, model_variables=list(model.variables))
    try:
        ckpt.restore(path).expect_partial().assert_existing_objects_matched()
    except Exception as error:
        # A truncated or corrupt file (DataLoss, OutOfRange, IndexError from the reader), or
        # one of another model (AssertionError).
        detail = " ".join(str(getattr(error, "message", None) or error).split())[:200]
        raise UserError(
            f"cannot read the checkpoint {path} ({type(error).__name__}: {detail}): it is "
            "truncated, corrupt or of another model; export another one (--checkpoint "
            "latest or best) or train again."
        ) from error
    return model, zoo_config


def check_out(out: str, model_dir: str) -> None:
    """Refuses an output folder that is, or holds, the run (overwrite would delete it)."""
    out_path, run_path = os.path.realpath(out), os.path.realpath(model_dir)
    if os.path.commonpath([out_path, run_path]) == out_path:
        where = "is" if out_path == run_path else "contains"
        raise UserError(
            f"--out {out} {where} --model_dir {model_dir}: exporting there would replace the "
            "run; choose an output folder outside it (e.g. --out exports/NAME)."
        )


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    check_out(FLAGS.out, FLAGS.model_dir)
    if os.path.exists(FLAGS.out):
        if not FLAGS.overwrite:
            raise UserError(
                f"{FLAGS.out} already exists: pass --overwrite to replace a previous export "
                "there, or choose another --out."
            )
        try:
            check_replaceable(os.path.abspath(FLAGS.out))
        except FileExistsError as error:
            raise UserError(str(error)) from error
    # What an export of this run that was killed midway left (lra-train exports into it).
    remove_unfinished_exports(os.path.join(FLAGS.model_dir, "export"))
    try:
        model, config = load_trained_model(FLAGS.model_dir, FLAGS.checkpoint)
    except FileNotFoundError as error:
        raise UserError(str(error)) from error
    try:
        path = export_saved_model(model, FLAGS.out, config=config, overwrite=FLAGS.overwrite)
    except FileExistsError as error:
        raise UserError(str(error)) from error
    except Exception as error:
        reason = file_system_failure(error)
        if reason is None:
            raise
        raise UserError(f"cannot write the export to --out {FLAGS.out}: {reason}") from error
    print(f"Exported {config.get('task')} / {config.get('attention')} to {path}")


def run() -> None:
    flags.mark_flags_as_required(["model_dir", "out"])
    run_cli(main, "lra-export")


if __name__ == "__main__":
    run()
