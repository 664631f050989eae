"""`lra-export`: export a trained `lra-train` run as a reusable SavedModel and `.keras` archive.

lra-export --model_dir runs/listops --out exports/listops [--overwrite] [--checkpoint best]
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
from absl import app, flags

from lra_keras.export.saved_model import export_saved_model

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
    with tf.io.gfile.GFile(config_path) as f:
        config = json.load(f)
    zoo_config = {k: v for k, v in config.items() if k != "trainer"}
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
    ckpt.restore(path).expect_partial().assert_existing_objects_matched()
    return model, zoo_config


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    model, config = load_trained_model(FLAGS.model_dir, FLAGS.checkpoint)
    path = export_saved_model(model, FLAGS.out, config=config, overwrite=FLAGS.overwrite)
    print(f"Exported {config.get('task')} / {config.get('attention')} to {path}")


def run() -> None:
    flags.mark_flags_as_required(["model_dir", "out"])
    app.run(main)


if __name__ == "__main__":
    run()
