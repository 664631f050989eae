"""What a run keeps in `model_dir` to resume as the same run: checkpoints, config, records.

model_dir/config.json       the run's configuration (a resume must match it)
model_dir/checkpoints/      model, optimizer, step, data iterator, every model variable
model_dir/progress.json     the latest training figures and wall time, at each checkpoint
model_dir/validation.json   every validation done: step -> metrics
model_dir/best/             the best-validation weights and best.json
model_dir/results.json      the final results
"""

from __future__ import annotations

import json
import math
import os
import shutil

import tensorflow as tf
from absl import logging

from lra_keras.errors import UserError

# Keys a resumed run may change: the hardware it runs on, not what it computes.
RESUMABLE_KEYS = ("trainer.strategy", "trainer.num_replicas")


def read_json(path: str):
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
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
    with tf.io.gfile.GFile(partial, "w") as f:
        f.write(text)
    tf.io.gfile.rename(partial, path, overwrite=True)


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
        if old != now and key not in RESUMABLE_KEYS:
            old = "(unset)" if old is missing else json.dumps(old)
            now = "(unset)" if now is missing else json.dumps(now)
            changes.append(f"{key}: {old} -> {now}")
    return changes


class RunState:
    """The files of one run. Only the chief writes; every worker saves (saving is collective).

    Args:
        model_dir: the run's folder.
        checkpoint: the `tf.train.Checkpoint` of the full training state.
        best_checkpoint: the `tf.train.Checkpoint` of the model's variables only.
        keep_checkpoints: how many training checkpoints to keep.
        is_chief, worker_index: this worker's role.
    """

    def __init__(
        self, model_dir, checkpoint, best_checkpoint, *, keep_checkpoints, is_chief, worker_index
    ):
        self.model_dir = model_dir
        self.is_chief = is_chief
        self.worker_index = worker_index
        self.checkpoint = checkpoint
        self.best_checkpoint = best_checkpoint
        self.checkpoint_dir = os.path.join(model_dir, "checkpoints")
        self.best_dir = os.path.join(model_dir, "best")
        self.manager = tf.train.CheckpointManager(
            checkpoint, self._writable(self.checkpoint_dir), keep_checkpoints
        )
        self.best_manager = tf.train.CheckpointManager(
            best_checkpoint, self._writable(self.best_dir), 1
        )

    def _path(self, name: str) -> str:
        return os.path.join(self.model_dir, name)

    def _writable(self, directory: str) -> str:
        """Non-chief workers must save too (saving is collective) but into a scratch folder."""
        if self.is_chief:
            return directory
        return os.path.join(directory, f".worker{self.worker_index}_tmp")

    # ------------------------------------------------------------------ config

    def has_checkpoint(self) -> bool:
        """Whether the folder holds any trained state (a training or best checkpoint)."""
        return bool(
            tf.train.latest_checkpoint(self.checkpoint_dir)
            or tf.train.latest_checkpoint(self.best_dir)
        )

    def check_config(self, config: dict) -> None:
        """Refuses to continue a run in `model_dir` that was started with another config.

        A folder without any checkpoint holds nothing to continue (e.g. a start that ran out
        of memory), so it takes the new config.
        """
        saved = read_json(self._path("config.json"))
        if saved is None or not self.has_checkpoint():
            return
        changes = config_differences(saved, config)
        if changes:
            raise UserError(
                f"{self.model_dir} holds a run with another configuration "
                f"({'; '.join(changes)}): resume it with the flags it was started with, or "
                "train in a new --model_dir."
            )

    def write_config(self, config: dict) -> None:
        if self.is_chief:
            tf.io.gfile.makedirs(self.model_dir)
            write_json(self._path("config.json"), json.loads(json.dumps(config, default=str)))

    # ------------------------------------------------------------------ checkpoints

    def restore(self, step_variable) -> int:
        """Restores the latest checkpoint if any; returns the step."""
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            logging.info("Resumed from %s (step %d)", latest, int(step_variable.numpy()))
        return int(step_variable.numpy())

    def save(self, step: int, progress: dict) -> None:
        """Saves the training state at `step` and, after it, the run's progress figures."""
        self.manager.save(checkpoint_number=step)
        if self.is_chief:
            write_json(self._path("progress.json"), {"step": step, **progress})
        else:
            shutil.rmtree(self.manager.directory, ignore_errors=True)

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
        self.best_manager.save(checkpoint_number=step)
        best = {"step": step, "validation": metrics}
        if self.is_chief:
            write_json(os.path.join(self.best_dir, "best.json"), best)
        else:
            shutil.rmtree(self.best_manager.directory, ignore_errors=True)
        return best

    def restore_best(self) -> None:
        path = tf.train.latest_checkpoint(self.best_dir)
        self.best_checkpoint.restore(path).assert_existing_objects_matched()

    # ------------------------------------------------------------------ results

    def read_results(self) -> dict | None:
        return read_json(self._path("results.json"))

    def write_results(self, results: dict) -> None:
        if self.is_chief:
            write_json(self._path("results.json"), results)
