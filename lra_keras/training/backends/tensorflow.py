"""Training on TensorFlow: `tf.distribute`, a `tf.function` step, tf.data, `tf.train.Checkpoint`.

The step (`lra_keras.training.train_step`) and the evaluator (`lra_keras.training.evaluation`)
run under any `tf.distribute` strategy; `Trainer` drives them through `TrainingBackend`.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import keras
import tensorflow as tf
from absl import logging

from lra_keras.errors import UserError
from lra_keras.training.evaluation import Evaluator
from lra_keras.training.strategies import make_strategy, worker_info
from lra_keras.training.train_step import Batching, TrainStep, make_optimizer

NAME = "tensorflow"


class Checkpoints:
    """`tf.train.CheckpointManager`s of the training state and of the best weights.

    Non-chief workers must save too (saving is collective) but into a scratch folder.
    """

    def __init__(self, model_dir, checkpoint, best_checkpoint, *, keep, is_chief, worker_index):
        self.is_chief = is_chief
        self.worker_index = worker_index
        self.checkpoint = checkpoint
        self.best_checkpoint = best_checkpoint
        self.checkpoint_dir = os.path.join(model_dir, "checkpoints")
        self.best_dir = os.path.join(model_dir, "best")
        self.manager = tf.train.CheckpointManager(
            checkpoint, self._writable(self.checkpoint_dir), keep
        )
        self.best_manager = tf.train.CheckpointManager(
            best_checkpoint, self._writable(self.best_dir), 1
        )

    def _writable(self, directory: str) -> str:
        if self.is_chief:
            return directory
        return os.path.join(directory, f".worker{self.worker_index}_tmp")

    def restore(self) -> int | None:
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        if not latest:
            return None
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.checkpoint.step.numpy())

    def save(self, step: int) -> None:
        self.manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)

    def save_best(self, step: int) -> None:
        self.best_manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(self.best_manager.directory, ignore_errors=True)

    def restore_best(self) -> None:
        path = tf.train.latest_checkpoint(self.best_dir)
        self.best_checkpoint.restore(path).assert_existing_objects_matched()


class SummaryWriter:
    """`tf.summary` scalars of one split (a no-op writer on non-chief workers)."""

    def __init__(self, logdir: str, enabled: bool):
        self._writer = (
            tf.summary.create_file_writer(logdir) if enabled else tf.summary.create_noop_writer()
        )

    def scalars(self, step: int, values: dict) -> None:
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def close(self) -> None:
        self._writer.flush()


class TrainingBackend:
    """Everything `Trainer` does differently on TensorFlow.

    Args:
        strategy: a `tf.distribute.Strategy`, a `--strategy` name
            (`lra_keras.training.strategies.STRATEGIES`), or None (the current strategy).
        batch_size, grad_accum_steps: the global batch and its micro-batches.
        mixed_precision: the Keras dtype policy name ("none" for float32).
    """

    name = NAME

    def __init__(self, strategy, *, batch_size, grad_accum_steps, mixed_precision):
        if isinstance(strategy, str):
            try:
                strategy = make_strategy(strategy)
            except ValueError as error:
                raise UserError(f"--strategy {strategy}: {error}") from error
        self.strategy = strategy or tf.distribute.get_strategy()
        self.is_chief, self.worker_index, self.num_workers = worker_info(self.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.batch_size = batch_size
        self.grad_accum_steps = grad_accum_steps
        self.mixed_precision = mixed_precision
        self.batching = None

    # ------------------------------------------------------------------ setup

    def describe(self) -> dict:
        """The trainer config's hardware entries."""
        return {
            "strategy": type(self.strategy).__name__,
            "num_replicas": self.num_replicas,
            "num_workers": self.num_workers,
        }

    def check_data(self, train_data, eval_data) -> dict:
        if not isinstance(train_data, tf.data.Dataset):
            raise UserError(
                f"`train_data` must be a tf.data.Dataset; received {type(train_data).__name__}."
            )
        eval_data = dict(eval_data or {})
        for split, ds in eval_data.items():
            if not isinstance(ds, tf.data.Dataset):
                raise UserError(f"`eval_data[{split!r}]` must be a tf.data.Dataset.")
        return eval_data

    def check_options(self, *, profile_steps) -> None:
        """Every option works on TensorFlow."""

    def build(self, model_fn, train_data, schedule, learning_rate, weight_decay):
        """The model (built) and its optimizer (built), under the strategy's scope."""
        self.batching = Batching(
            self.strategy,
            self.num_workers,
            self.worker_index,
            self.batch_size,
            self.grad_accum_steps,
        )
        with self.strategy.scope():
            model = model_fn()
            if not model.built:

                def zeros(s):
                    return tf.zeros([1 if d is None else d for d in s.shape.as_list()], s.dtype)

                spec = train_data.element_spec[0]
                model(tf.nest.map_structure(zeros, spec), training=False)
            optimizer = make_optimizer(
                model, schedule, learning_rate, weight_decay, self.mixed_precision
            )
            optimizer.build(model.trainable_variables)
            self.step_variable = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="train_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self.model, self.optimizer = model, optimizer
        return model, optimizer

    def wire(
        self,
        train_data,
        eval_data,
        *,
        model_dir,
        keep_checkpoints,
        max_eval_batches,
        jit_compile,
        grad_clip_norm,
        objective,
    ):
        """Returns `(train iterator, train step, evaluator, checkpoints)`."""
        iterator = iter(self.batching.prepare_train(train_data))
        evaluator = Evaluator(
            self.model,
            self.strategy,
            self.batching,
            eval_data,
            max_eval_batches,
            jit_compile,
            objective,
        )
        all_vars = list(self.model.variables)
        checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step_variable,
            model_variables=all_vars,
            iterator=iterator,
        )
        best_checkpoint = tf.train.Checkpoint(model=self.model, model_variables=all_vars)
        checkpoints = Checkpoints(
            model_dir,
            checkpoint,
            best_checkpoint,
            keep=keep_checkpoints,
            is_chief=self.is_chief,
            worker_index=self.worker_index,
        )
        step = TrainStep(
            self.model,
            self.optimizer,
            self.strategy,
            batch_size=self.batch_size,
            grad_accum_steps=self.grad_accum_steps,
            grad_clip_norm=grad_clip_norm,
            jit_compile=jit_compile,
            objective=objective,
        )
        return iterator, step, evaluator, checkpoints

    # ------------------------------------------------------------------ during training

    def distribute(self, batch):
        return self.batching.distribute(batch)

    @property
    def step(self) -> int:
        return int(self.step_variable.numpy())

    def advance(self) -> None:
        self.step_variable.assign_add(1)

    def learning_rate(self, schedule) -> float:
        return float(schedule(self.optimizer.iterations - 1))

    def summary_writer(self, logdir: str, enabled: bool) -> SummaryWriter:
        return SummaryWriter(logdir, enabled)

    def peak_memory(self) -> dict:
        from lra_keras import profiling

        record = profiling.read_peak_memory()
        return {"peak_memory_mib": record["peak_mib"], "peak_memory_source": record["source"]}

    @contextlib.contextmanager
    def trace(self, logdir: str):
        from lra_keras import profiling

        with profiling.trace(logdir):
            yield

    def export(self, model, path: str, config: dict) -> bool:
        """Writes the run's export (`lra_keras.export`) from the loaded best weights."""
        try:
            from lra_keras import export as export_module
        except ImportError:
            logging.info("lra_keras.export is not available; no export.")
            return False
        # The run owns its export folder: a resumed run replaces it.
        export_module.export_saved_model(model, path, config=config, overwrite=True)
        return True

    def sync(self) -> None:
        """The model's variables hold the training state already."""

    def set_dtype_policy(self) -> None:
        if self.mixed_precision != "none":
            keras.config.set_dtype_policy(self.mixed_precision)
