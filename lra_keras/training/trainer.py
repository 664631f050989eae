"""One custom training loop for every `tf.distribute` strategy.

The loop is here; the step is in `train_step.py`, evaluation in `evaluation.py`, the run's
files (checkpoints, config, records) in `run_state.py`, reporting in `summaries.py`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from lra_keras.errors import UserError, file_system_failure
from lra_keras.training import objectives
from lra_keras.training.evaluation import Evaluator, improves
from lra_keras.training.lra_schedule import LRASchedule
from lra_keras.training.run_state import RunState
from lra_keras.training.safeguards import (
    LossWatch,
    check_finite_metrics,
    check_finite_weights,
    lock_model_dir,
    out_of_memory_as_user_error,
)
from lra_keras.training.strategies import worker_info
from lra_keras.training.summaries import Summaries, parse_profile_steps
from lra_keras.training.train_step import Batching, TrainStep, make_optimizer

__all__ = ["MIXED_PRECISION", "Trainer", "parse_profile_steps"]


class _Preempted(BaseException):
    """A SIGTERM after the last checkpoint (a BaseException: no `except Exception` eats it)."""


MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")


def _check_data(train_data, eval_data) -> dict:
    if not isinstance(train_data, tf.data.Dataset):
        raise UserError(
            f"`train_data` must be a tf.data.Dataset; received {type(train_data).__name__}."
        )
    eval_data = dict(eval_data or {})
    for split, ds in eval_data.items():
        if not isinstance(ds, tf.data.Dataset):
            raise UserError(f"`eval_data[{split!r}]` must be a tf.data.Dataset.")
    return eval_data


def _positive(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise UserError(f"`{name}` must be a positive int; received {value!r}.")
    return int(value)


class Trainer:
    """Trains a classifier (int labels, float32 logits) under any `tf.distribute` strategy.

    One loop for the default (one device), mirrored, multi-worker and TPU strategies:
    `strategy.run` on per-replica slices of the global batch, `tf.nn.compute_average_loss`
    over the global batch, model losses (`model.losses`) through
    `tf.nn.scale_regularization_loss`, AdamW (beta_2 0.98, epsilon 1e-9) with the LRA
    schedule, optional global-norm clipping (of the all-reduced, unscaled gradient) and
    gradient accumulation, a `LossScaleOptimizer` under `mixed_float16`, and an optional XLA
    forward/backward (`jit_compile`).

    `batch_size` is the global number of examples per optimizer step; each step consumes
    `grad_accum_steps` micro-batches of `batch_size // grad_accum_steps` examples, so the
    hyperparameters mean the same with and without accumulation. It must be divisible by
    `grad_accum_steps * num_replicas`.

    Data: `train_data` yields `(features, labels)` batches of any size (the loader's batching
    is undone and redone at the micro-batch size with `drop_remainder`, repeated forever,
    sharded by worker). The trainer iterates it with a plain (host) iterator and slices each
    global batch across the replicas itself, because `tf.distribute` iterators cannot be
    checkpointed (`tf.train.Checkpoint` rejects a `DistributedIterator`); the plain iterator
    is checkpointed with the model, so a resumed run reads the same examples. Evaluation
    data is padded with zero-weight copies to full batches (static shapes for XLA and TPU),
    and every worker evaluates the whole split on its local replicas (no collectives, so
    workers cannot hang on uneven shards).

    Checkpoints (`model_dir/checkpoints`, `tf.train.CheckpointManager`): model, optimizer,
    step, data iterator, and every variable in `model.variables` (this includes each
    `keras.random.SeedGenerator` state, which `tf.train.Checkpoint(model=...)` alone does not
    save). `train()` resumes from the latest one, and refuses (`UserError`, naming the keys)
    to resume a run whose saved `config.json` differs from this one's. A step due for
    validation is validated before it is checkpointed, and a resumed run validates its
    checkpointed step if no validation of it was recorded (`validation.json`), so a run killed
    at any point and resumed ends with the uninterrupted run's results. The best-validation
    weights are kept in `model_dir/best` (with `best.json`). A SIGTERM received during
    `train()` (main thread only) makes the loop finish the current step (and its validation,
    if due), save a checkpoint and return with `results["preempted"] = True`; one received
    during the final evaluation and export abandons them and returns the same. Rerunning a
    finished run evaluates it again and keeps its training figures. `train()` holds
    `model_dir/.lock` (a second live run on the folder is refused), and stops with a
    `UserError` naming the step when the loss turns NaN or infinite (nothing non-finite is
    checkpointed, picked as best or exported) or the run does not fit in memory.

    Args:
        model_fn: callable returning the model, called under `strategy.scope()`. Its inputs
            are the dataset's features; its output float32 logits `[batch, classes]`.
        train_data: `tf.data.Dataset` of `(features, int labels)` batches.
        model_dir: str. Checkpoints, TensorBoard logs (`logs/`), `results.json`.
        batch_size: int. Global examples per optimizer step.
        num_train_steps: int. Optimizer steps.
        eval_data: dict split name -> dataset (`"validation"`, `"test"`), optional.
        strategy: a `tf.distribute.Strategy`; the current one by default.
        learning_rate, weight_decay, warmup_steps, schedule, steps_per_cycle: the LRA
            optimiser settings (`LRASchedule`; decoupled weight decay on all weights, as the
            reference's Adam, except state-space parameters: their own learning rate, no
            decay).
        grad_clip_norm: float or None. Clip the global gradient norm.
        grad_accum_steps: int. Micro-batches per optimizer step.
        eval_every: int. Evaluate on `"validation"` every this many steps (and at the end).
        checkpoint_every: int. Save every this many steps (default `eval_every`).
        max_eval_batches: int or None. Evaluate at most this many batches per split.
        mixed_precision: "none", "mixed_float16" or "mixed_bfloat16"; sets the global Keras
            dtype policy before `model_fn` is called.
        jit_compile: bool. XLA-compile the forward/backward and the evaluation forward.
        profile_steps: `"start,stop"` or a pair: profiler trace over those steps.
        log_every: int. Training summaries and progress every this many steps.
        verbose: 0 quiet, 1 progress bar, 2 one log line per `log_every`.
        keep_checkpoints: int. Checkpoints kept.
        config: dict written into `results.json` (the run's configuration).
        export_fn: callable `(model, path)` run at the end on the best weights, or "auto"
            (`lra_keras.export.export_saved_model` when importable), or None.
        objective: "classification" (labels `[batch]`, logits `[batch, classes]`) or
            "token_prediction" (self-pretraining: labels `[batch, length]`, -1 where not
            scored; logits `[batch, length, vocab]`), `lra_keras.training.objectives`.

    Example:

    >>> import tempfile
    >>> import keras
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> def model_fn():
    ...     inputs = keras.Input((4,), name="x")
    ...     return keras.Model({"x": inputs}, keras.layers.Dense(2)(inputs))
    >>> x = np.random.default_rng(0).random((64, 4), dtype="float32")
    >>> data = tf.data.Dataset.from_tensor_slices(({"x": x}, (x[:, 0] > 0.5).astype("int32")))
    >>> trainer = Trainer(model_fn, data.batch(16), model_dir=tempfile.mkdtemp(),
    ...                   batch_size=16, num_train_steps=4, eval_every=2,
    ...                   eval_data={"validation": data.batch(16)}, verbose=0, export_fn=None)
    >>> results = trainer.train()
    >>> results["step"], sorted(results["last"]["validation"])
    (4, ['accuracy', 'examples', 'loss'])
    """

    def __init__(
        self,
        model_fn: Callable[[], keras.Model],
        train_data: tf.data.Dataset,
        *,
        model_dir: str,
        batch_size: int,
        num_train_steps: int,
        eval_data: dict[str, tf.data.Dataset] | None = None,
        strategy: tf.distribute.Strategy | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        schedule: str = "rsqrt",
        steps_per_cycle: int | None = None,
        grad_clip_norm: float | None = None,
        grad_accum_steps: int = 1,
        eval_every: int | None = None,
        checkpoint_every: int | None = None,
        max_eval_batches: int | None = None,
        mixed_precision: str | None = None,
        jit_compile: bool = False,
        profile_steps: str | tuple[int, int] | None = None,
        log_every: int | None = None,
        verbose: int = 1,
        keep_checkpoints: int = 3,
        config: dict | None = None,
        export_fn: Callable | str | None = "auto",
        objective: str = "classification",
    ):
        self.batch_size = _positive("batch_size", batch_size)
        self.num_train_steps = _positive("num_train_steps", num_train_steps)
        self.grad_accum_steps = _positive("grad_accum_steps", grad_accum_steps)
        self.eval_every = _positive("eval_every", eval_every, True) or self.num_train_steps
        self.checkpoint_every = (
            _positive("checkpoint_every", checkpoint_every, True) or self.eval_every
        )
        self.max_eval_batches = _positive("max_eval_batches", max_eval_batches, True)
        self.log_every = _positive("log_every", log_every, True) or min(self.eval_every, 100)
        self.keep_checkpoints = _positive("keep_checkpoints", keep_checkpoints)
        self.mixed_precision = mixed_precision or "none"
        if self.mixed_precision not in MIXED_PRECISION:
            raise UserError(
                f"`mixed_precision` must be one of {MIXED_PRECISION}; received {mixed_precision!r}."
            )
        if grad_clip_norm is not None and grad_clip_norm <= 0:
            grad_clip_norm = None
        if verbose not in (0, 1, 2):
            raise UserError(f"`verbose` must be 0, 1 or 2; received {verbose!r}.")
        eval_data = _check_data(train_data, eval_data)
        self.model_dir = str(model_dir)
        self.jit_compile = bool(jit_compile)
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self.profile_steps = parse_profile_steps(profile_steps)
        self.verbose = verbose
        self.config = dict(config or {})
        self.export_fn = export_fn
        if objective not in objectives.OBJECTIVES:
            raise UserError(
                f"`objective` must be one of {list(objectives.OBJECTIVES)}; received {objective!r}."
            )
        self.objective = objective

        self.strategy = strategy or tf.distribute.get_strategy()
        self.is_chief, self.worker_index, self.num_workers = worker_info(self.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        if self.batch_size % (self.grad_accum_steps * self.num_replicas):
            raise UserError(
                f"`batch_size` ({self.batch_size}) must be divisible by grad_accum_steps "
                f"({self.grad_accum_steps}) x replicas ({self.num_replicas})."
            )
        self.batching = Batching(
            self.strategy, self.num_workers, self.worker_index, self.batch_size, grad_accum_steps
        )
        with out_of_memory_as_user_error("while building the model"):
            self._build(
                model_fn,
                train_data,
                learning_rate,
                weight_decay,
                warmup_steps,
                schedule,
                steps_per_cycle,
            )
        self._wire(train_data, eval_data)
        self._stop_requested = self._finishing = False
        self._watch = LossWatch()

    def _build(
        self,
        model_fn,
        train_data,
        learning_rate,
        weight_decay,
        warmup_steps,
        schedule,
        steps_per_cycle,
    ):
        if self.mixed_precision != "none":
            keras.config.set_dtype_policy(self.mixed_precision)
        with self.strategy.scope():
            self.model = model_fn()
            if not self.model.built:

                def zeros(s):
                    return tf.zeros([1 if d is None else d for d in s.shape.as_list()], s.dtype)

                spec = train_data.element_spec[0]
                self.model(tf.nest.map_structure(zeros, spec), training=False)
            self.schedule = LRASchedule(
                learning_rate,
                warmup_steps=warmup_steps,
                schedule=schedule,
                steps_per_cycle=steps_per_cycle or self.num_train_steps,
            )
            self.optimizer = make_optimizer(
                self.model, self.schedule, learning_rate, weight_decay, self.mixed_precision
            )
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="train_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

    def _wire(self, train_data, eval_data):
        """The data iterator, the evaluator, the run's files and the step, around the model."""
        self._train_iterator = iter(self.batching.prepare_train(train_data))
        self.evaluator = Evaluator(
            self.model,
            self.strategy,
            self.batching,
            eval_data,
            self.max_eval_batches,
            self.jit_compile,
            self.objective,
        )
        all_vars = list(self.model.variables)
        checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step,
            model_variables=all_vars,
            iterator=self._train_iterator,
        )
        best_checkpoint = tf.train.Checkpoint(model=self.model, model_variables=all_vars)
        self.state = RunState(
            self.model_dir,
            checkpoint,
            best_checkpoint,
            keep_checkpoints=self.keep_checkpoints,
            is_chief=self.is_chief,
            worker_index=self.worker_index,
        )
        self._train_fn = TrainStep(
            self.model,
            self.optimizer,
            self.strategy,
            batch_size=self.batch_size,
            grad_accum_steps=self.grad_accum_steps,
            grad_clip_norm=self.grad_clip_norm,
            jit_compile=self.jit_compile,
            objective=self.objective,
        )

    def _distribute(self, batch):
        return self.batching.distribute(batch)

    def evaluate(self, split: str) -> dict:
        """Loss and accuracy over `split` (at most `max_eval_batches` batches)."""
        return self.evaluator.evaluate(split)

    def restore(self) -> int:
        """Restores the latest checkpoint in `model_dir` if any; returns the step."""
        return self.state.restore(self.step)

    # ------------------------------------------------------------------ loop

    def _on_sigterm(self, signum, frame):
        self._stop_requested = True
        if self._finishing:
            # Evaluating and exporting after the last checkpoint: abandon them (the export is
            # written beside its target and renamed, so nothing half-written stays).
            raise _Preempted()

    def request_stop(self):
        """Asks the loop to checkpoint and return at the next step boundary."""
        self._stop_requested = True

    def _due(self, step: int, every: int) -> bool:
        return step % every == 0 or step == self.num_train_steps

    def _validate(self, step: int, best: dict | None, summaries: Summaries) -> dict | None:
        """Validates the current weights as step `step`; returns the (new) best."""
        self._check_finite(step)
        metrics = self.evaluate("validation")
        check_finite_metrics(metrics, step, self._watch)
        summaries.log_validation(step, metrics)
        if improves(best, metrics):
            best = self.state.save_best(step, metrics)
        # Recorded after the best weights: a kill before this line validates the step again.
        self.state.record_validation(step, metrics)
        return best

    def _check_finite(self, step: int) -> None:
        """Before anything is validated or saved: every loss so far, and the weights."""
        self._watch.check()
        check_finite_weights(self.model.trainable_variables, step, self._watch)

    def train(self) -> dict:
        """Runs (or resumes) training; returns the results written to `results.json`.

        Holds `model_dir/.lock` meanwhile (a second live run on the folder is refused). A NaN
        or infinite loss stops the run with `NonFiniteLossError` (a `UserError`) naming the
        step: the losses are checked before each log, validation and checkpoint (where the
        loop syncs anyway), and the weights before each validation and checkpoint, so the
        latest and best checkpoints stay the last finite ones and nothing is exported.
        Running out of memory is a `UserError` saying what to lower. A SIGTERM during the
        final evaluation and export abandons them and returns as a preempted run does.
        """
        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._stop_requested = self._finishing = False
        self._watch = LossWatch()
        lock = lock_model_dir(self.model_dir) if self.is_chief else contextlib.nullcontext()
        try:
            with lock, out_of_memory_as_user_error("while training"):
                return self._train()
        except _Preempted:
            step = self._watch.last_saved_step
            logging.info("Stop requested after the last step: checkpoint %s kept.", step)
            return {"preempted": True, "step": step}
        finally:
            self._finishing = False
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)

    def _train(self) -> dict:
        start_time = time.time()
        self.state.check_config(self._full_config())
        step = start_step = self.restore()
        self._watch.last_saved_step = step if self.state.has_checkpoint() else None
        self.state.write_config(self._full_config())
        progress = self.state.read_progress(step)
        last_train = progress.get("train", {})
        previous_time = float(progress.get("wall_time_s", 0.0))
        summaries = Summaries(
            os.path.join(self.model_dir, "logs"),
            num_train_steps=self.num_train_steps,
            batch_size=self.batch_size,
            verbose=self.verbose,
            is_chief=self.is_chief,
            profile=self.profile_steps,
        )
        best = self.state.read_best()
        has_val = "validation" in self.evaluator

        def save():
            self._check_finite(step)
            wall = previous_time + time.time() - start_time
            self.state.save(step, {"train": last_train, "wall_time_s": wall})
            self._watch.last_saved_step = step

        try:
            if (
                has_val
                and step
                and self._due(step, self.eval_every)
                and str(step) not in self.state.validations()
            ):
                # Killed after this step's checkpoint, before its validation was recorded.
                logging.info("Validating step %d, checkpointed without its validation.", step)
                best = self._validate(step, best, summaries)
            summaries.start(step)
            if step >= self.num_train_steps:
                logging.info("Already trained to step %d; evaluating.", step)
            while step < self.num_train_steps:
                summaries.before_step(step)
                micro = tuple(
                    self._distribute(next(self._train_iterator))
                    for _ in range(self.grad_accum_steps)
                )
                out = self._train_fn(micro)
                self.step.assign_add(1)
                step += 1
                summaries.after_step(step, out)
                self._watch.add(step, out["loss"])
                if self._due(step, self.log_every):
                    self._watch.check()  # nothing is logged from a diverged run
                    lr = float(self.schedule(self.optimizer.iterations - 1))
                    last_train = summaries.log_train(step, lr)
                # Validate before checkpointing: a checkpointed step is a validated step.
                if has_val and self._due(step, self.eval_every):
                    best = self._validate(step, best, summaries)
                if self._stop_requested or self._due(step, self.checkpoint_every):
                    save()
                if self._stop_requested:
                    logging.info("Stop requested: checkpoint saved at step %d.", step)
                    return {"preempted": True, "step": step}
        finally:
            summaries.close()
        wall_time = previous_time + time.time() - start_time
        previous = self.state.read_results() if step == start_step else None
        if previous:
            # Nothing trained now (a finished run evaluated again): the figures of its
            # training stay.
            last_train = previous.get("train") or last_train
            wall_time = previous.get("wall_time_s", wall_time)
        self._finishing = True  # from here a SIGTERM abandons evaluation and export
        if self._stop_requested:
            raise _Preempted()
        return self._final_results(best, last_train, wall_time)

    def _full_config(self) -> dict:
        return {
            **self.config,
            "trainer": {
                "batch_size": self.batch_size,
                "num_train_steps": self.num_train_steps,
                "grad_accum_steps": self.grad_accum_steps,
                "eval_every": self.eval_every,
                "checkpoint_every": self.checkpoint_every,
                "max_eval_batches": self.max_eval_batches,
                "mixed_precision": self.mixed_precision,
                "jit_compile": self.jit_compile,
                "grad_clip_norm": self.grad_clip_norm,
                "schedule": self.schedule.get_config(),
                "strategy": type(self.strategy).__name__,
                "num_replicas": self.num_replicas,
                "num_workers": self.num_workers,
            },
        }

    def _final_results(self, best, last_train, wall_time) -> dict:
        step = int(self.step.numpy())
        last = {"step": step}
        for split in ("validation", "test"):
            if split in self.evaluator:
                last[split] = self.evaluate(split)
        best_entry = dict(last)
        if best is not None and best["step"] != step:
            last_weights = self.model.get_weights()
            self.state.restore_best()
            best_entry = {"step": best["step"], "validation": best["validation"]}
            if "test" in self.evaluator:
                best_entry["test"] = self.evaluate("test")
            self._export()
            self.model.set_weights(last_weights)
        else:
            self._export()
        results = {
            "step": step,
            "best": best_entry,
            "last": last,
            "train": last_train,
            "wall_time_s": wall_time,
            "config": self._full_config(),
        }
        self.state.write_results(results)
        return results

    def _export(self):
        """Export hook (the best weights are loaded when this runs)."""
        if not self.is_chief or self.export_fn is None:
            return
        fn = self.export_fn
        if fn == "auto":
            try:
                from lra_keras import export as export_module
            except ImportError:
                export_module = None
            fn = getattr(export_module, "export_saved_model", None)
            if fn is None:
                logging.info("lra_keras.export.export_saved_model is not available; no export.")
                return
        path = os.path.join(self.model_dir, "export")
        try:
            if self.export_fn == "auto":
                # The run owns its export folder: a resumed run replaces it.
                fn(self.model, path, config=self.config, overwrite=True)
            else:
                fn(self.model, path)
        except Exception as error:
            reason = file_system_failure(error)
            if reason is None:
                raise
            raise UserError(
                f"the run is trained and checkpointed, but its export to {path} failed: "
                f"{reason}; fix that and rerun the command (it exports again)."
            ) from error
        logging.info("Exported the best-validation model to %s", path)
