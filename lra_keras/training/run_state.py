"""What a run keeps in `model_dir` to resume as the same run: checkpoints, config, records.

model_dir/config.json       the run's configuration (a resume must match it), with the backend
model_dir/checkpoints/      model, optimizer, step, data position, every model variable
model_dir/progress.json     the latest training figures and wall time, at each checkpoint
model_dir/validation.json   every validation done: step -> metrics
model_dir/best/             the best-validation weights and best.json
model_dir/results.json      the final results

The JSON files are the same on every backend; the checkpoint files are the backend's
(`lra_keras.training.backends`: `tf.train.Checkpoint` on TensorFlow, `.npz` and
`best/model.weights.h5` on JAX), so a run resumes only on the backend that wrote it.
This module imports TensorFlow only for a path with a scheme (`gs://...`).
"""

from __future__ import annotations

import json
import math
import os

from absl import logging

from lra_keras.errors import UserError

# Keys a resumed run may change: the hardware it runs on, not what it computes.
RESUMABLE_KEYS = ("trainer.strategy", "trainer.num_replicas")
# Zoo config keys added after runs were saved, with the value that reproduces those runs
# (`lra_keras.zoo.config.LATER_KEYS`): a run saved without one resumes when it has that value.
BACKFILLED_KEYS = {"norm": "layer", "input_encoding": "embedding", "no_weight_decay": []}
# Runs written before the trainer recorded its backend were TensorFlow runs.
DEFAULT_BACKEND = "tensorflow"
# What marks trained state: tf.train.CheckpointManager's state files (TensorFlow), the
# checkpoint index and the best weights (JAX, `backends/jax.py`).
CHECKPOINT_FILES = (
    ("checkpoints", "checkpoint"),
    ("best", "checkpoint"),
    ("checkpoints", "checkpoint.json"),
    ("best", "model.weights.h5"),
)


def _remote(path: str) -> bool:
    return "://" in str(path)


def exists(path: str) -> bool:
    if _remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def makedirs(path: str) -> None:
    if _remote(path):
        import tensorflow as tf

        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def read_json(path: str):
    if not exists(path):
        return None
    if _remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    with open(path) as f:
        return json.load(f)


def finite_json(value):
    """`value` as plain JSON data, every NaN or infinity replaced by `null` (None).

    Python's `json` writes bare `NaN` and `Infinity`, which JSON readers refuse. Numpy and
    tensor scalars become floats first.
    """
    value = json.loads(json.dumps(value, default=float))

    def clean(item):
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {k: clean(v) for k, v in item.items()}
        if isinstance(item, list):
            return [clean(v) for v in item]
        return item

    return clean(value)


def write_json(path: str, value) -> None:
    """Writes `path` whole or not at all (a kill mid-write leaves the previous file).

    Always valid JSON: NaN and infinities are written as `null` (`finite_json`).
    """
    text = json.dumps(finite_json(value), indent=2, allow_nan=False)
    partial = f"{path}.partial"
    if _remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(partial, "w") as f:
            f.write(text)
        tf.io.gfile.rename(partial, path, overwrite=True)
        return
    with open(partial, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def saved_backend(config: dict | None) -> str | None:
    """The backend a saved `config.json` was trained on (None without a config)."""
    if config is None:
        return None
    return (config.get("trainer") or {}).get("backend", DEFAULT_BACKEND)


def _flatten(value, prefix=""):
    if isinstance(value, dict) and value:
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def config_differences(saved: dict, new: dict) -> list[str]:
    """The dotted keys whose values differ (JSON-normalised), as `key: old -> new`."""
    saved = _flatten(json.loads(json.dumps(saved, default=str)))
    new = _flatten(json.loads(json.dumps(new, default=str)))
    missing = object()
    changes = []
    # Runs saved before the `run` section (seed, pretraining) existed resume as they were.
    has_run_section = any(key.startswith("run.") for key in saved)
    for key in sorted(set(saved) | set(new)):
        old, now = saved.get(key, missing), new.get(key, missing)
        if key.startswith("run.") and not has_run_section:
            continue
        if old is missing and key in BACKFILLED_KEYS and now == BACKFILLED_KEYS[key]:
            continue
        if old != now and key not in RESUMABLE_KEYS:
            old = "(unset)" if old is missing else json.dumps(old)
            now = "(unset)" if now is missing else json.dumps(now)
            changes.append(f"{key}: {old} -> {now}")
    return changes


class RunState:
    """The files of one run. Only the chief writes; every worker saves (saving is collective).

    Args:
        model_dir: the run's folder.
        checkpoints: the backend's checkpoint files (`lra_keras.training.backends`): an object
            with `restore() -> int | None` (the restored step), `save(step)`,
            `save_best(step)` and `restore_best()`.
        is_chief: this worker writes the JSON files.
        backend: the Keras backend training this run (recorded in `config.json`).
    """

    def __init__(self, model_dir, checkpoints, *, is_chief=True, backend=DEFAULT_BACKEND):
        self.model_dir = model_dir
        self.is_chief = is_chief
        self.checkpoints = checkpoints
        self.backend = backend
        self.best_dir = os.path.join(model_dir, "best")

    def _path(self, name: str) -> str:
        return os.path.join(self.model_dir, name)

    # ------------------------------------------------------------------ config

    def has_checkpoint(self) -> bool:
        """Whether the folder holds trained state of either backend (training or best).

        Files of both backends count, so that a folder trained on one is never taken as
        empty by the other.
        """
        return any(exists(os.path.join(self.model_dir, *name)) for name in CHECKPOINT_FILES)

    def check_config(self, config: dict) -> None:
        """Refuses to continue a run in `model_dir` that was started with another config.

        A folder without any checkpoint holds nothing to continue (e.g. a start that ran out
        of memory), so it takes the new config. A run trained on another backend is refused,
        naming both: its checkpoints are that backend's files.
        """
        saved = read_json(self._path("config.json"))
        if saved is None or not self.has_checkpoint():
            return
        previous = saved_backend(saved)
        if previous != self.backend:
            raise UserError(
                f"{self.model_dir} holds a run trained on the {previous} backend; it cannot "
                f"resume on {self.backend} (its checkpoints are {previous}'s): resume it with "
                f"KERAS_BACKEND={previous}, or train in a new --model_dir."
            )
        saved = json.loads(json.dumps(saved))
        saved.setdefault("trainer", {}).setdefault("backend", DEFAULT_BACKEND)
        changes = config_differences(saved, config)
        if changes:
            raise UserError(
                f"{self.model_dir} holds a run with another configuration "
                f"({'; '.join(changes)}): resume it with the flags it was started with, or "
                "train in a new --model_dir."
            )

    def write_config(self, config: dict) -> None:
        if self.is_chief:
            makedirs(self.model_dir)
            write_json(self._path("config.json"), json.loads(json.dumps(config, default=str)))

    # ------------------------------------------------------------------ checkpoints

    def restore(self) -> int:
        """Restores the latest checkpoint if any; returns its step (0 without one)."""
        step = self.checkpoints.restore()
        if step is None:
            return 0
        logging.info("Resumed from %s (step %d)", self.model_dir, step)
        return int(step)

    def save(self, step: int, progress: dict) -> None:
        """Saves the training state at `step` and, after it, the run's progress figures."""
        self.checkpoints.save(step)
        if self.is_chief:
            write_json(self._path("progress.json"), {"step": step, **progress})

    def read_progress(self, step: int) -> dict:
        """The figures saved with the checkpoint at `step` (none if they are from another)."""
        progress = read_json(self._path("progress.json")) or {}
        return progress if progress.get("step") == step else {}

    # ------------------------------------------------------------------ validation

    def validations(self) -> dict:
        return read_json(self._path("validation.json")) or {}

    def record_validation(self, step: int, metrics: dict) -> None:
        if self.is_chief:
            record = self.validations()
            record[str(step)] = metrics
            write_json(self._path("validation.json"), record)

    def read_best(self) -> dict | None:
        return read_json(os.path.join(self.best_dir, "best.json"))

    def save_best(self, step: int, metrics: dict) -> dict:
        """Keeps the current weights as the best; `best.json` is written after them."""
        self.checkpoints.save_best(step)
        best = {"step": step, "validation": metrics}
        if self.is_chief:
            write_json(os.path.join(self.best_dir, "best.json"), best)
        return best

    def restore_best(self) -> None:
        self.checkpoints.restore_best()

    # ------------------------------------------------------------------ results

    def read_results(self) -> dict | None:
        return read_json(self._path("results.json"))

    def write_results(self, results: dict) -> None:
        if self.is_chief:
            write_json(self._path("results.json"), results)
