"""One custom training loop for every `tf.distribute` strategy."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from lra_keras.training.lra_schedule import LRASchedule
from lra_keras.training.optimizers import build_optimizer
from lra_keras.training.strategies import worker_info

MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")


def _peak_memory_mib() -> float | None:
    """Peak memory of the first accelerator (or the process's peak RSS on CPU), in MiB."""
    try:
        from lra_keras import profiling

        fn = getattr(profiling, "peak_memory_mib", None)
        if fn is not None:
            return float(fn())
    except ImportError:
        pass
    for kind in ("GPU", "TPU"):
        if tf.config.list_logical_devices(kind):
            try:
                return tf.config.experimental.get_memory_info(f"{kind}:0")["peak"] / 2**20
            except (ValueError, tf.errors.OpError):
                return None
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def _profiler_trace(logdir: str):
    try:
        from lra_keras import profiling

        trace = getattr(profiling, "trace", None)
    except ImportError:
        trace = None
    if trace is not None:
        with trace(logdir):
            yield
        return
    tf.profiler.experimental.start(logdir)
    try:
        yield
    finally:
        tf.profiler.experimental.stop()


def parse_profile_steps(value: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """`"5,8"` -> `(5, 8)`: trace training steps 5 to 8 (1-based, inclusive).

    None, "" or "0" -> no trace.
    """
    if value is None or value == "" or value == "0":
        return None
    if isinstance(value, str):
        parts = value.split(",")
        try:
            if len(parts) == 1:
                start = stop = int(parts[0])
            elif len(parts) == 2:
                start, stop = int(parts[0]), int(parts[1])
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f'`profile_steps` must be "START,STOP" (e.g. "5,8"); received {value!r}.'
            ) from None
    else:
        start, stop = (int(v) for v in value)
    if start < 1 or stop < start:
        raise ValueError(f"`profile_steps` needs 1 <= START <= STOP; received {value!r}.")
    return start, stop


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
    save). `train()` resumes from the latest one. The best-validation weights are kept in
    `model_dir/best` (with `best.json`). A SIGTERM received during `train()` (main thread
    only) makes the loop save a checkpoint at the next step boundary and return with
    `results["preempted"] = True`.

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
            reference's Adam).
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
    ):
        def positive(name, value, allow_none=False):
            if value is None and allow_none:
                return None
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; received {value!r}.")
            return int(value)

        self.batch_size = positive("batch_size", batch_size)
        self.num_train_steps = positive("num_train_steps", num_train_steps)
        self.grad_accum_steps = positive("grad_accum_steps", grad_accum_steps)
        self.eval_every = positive("eval_every", eval_every, True) or self.num_train_steps
        self.checkpoint_every = positive("checkpoint_every", checkpoint_every, True) or (
            self.eval_every
        )
        self.max_eval_batches = positive("max_eval_batches", max_eval_batches, True)
        self.log_every = positive("log_every", log_every, True) or min(self.eval_every, 100)
        self.keep_checkpoints = positive("keep_checkpoints", keep_checkpoints)
        mixed_precision = mixed_precision or "none"
        if mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"`mixed_precision` must be one of {MIXED_PRECISION}; received {mixed_precision!r}."
            )
        if grad_clip_norm is not None and grad_clip_norm <= 0:
            grad_clip_norm = None
        if verbose not in (0, 1, 2):
            raise ValueError(f"`verbose` must be 0, 1 or 2; received {verbose!r}.")
        if not isinstance(train_data, tf.data.Dataset):
            raise ValueError(
                f"`train_data` must be a tf.data.Dataset; received {type(train_data).__name__}."
            )
        eval_data = dict(eval_data or {})
        for split, ds in eval_data.items():
            if not isinstance(ds, tf.data.Dataset):
                raise ValueError(f"`eval_data[{split!r}]` must be a tf.data.Dataset.")
        self.model_dir = str(model_dir)
        self.mixed_precision = mixed_precision
        self.jit_compile = bool(jit_compile)
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self.profile_steps = parse_profile_steps(profile_steps)
        self.verbose = verbose
        self.config = dict(config or {})
        self.export_fn = export_fn

        self.strategy = strategy or tf.distribute.get_strategy()
        self.is_chief, self.worker_index, self.num_workers = worker_info(self.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.num_local_replicas = max(1, self.num_replicas // self.num_workers)
        if self.batch_size % (self.grad_accum_steps * self.num_replicas):
            raise ValueError(
                f"`batch_size` ({self.batch_size}) must be divisible by grad_accum_steps "
                f"({self.grad_accum_steps}) x replicas ({self.num_replicas})."
            )
        self.micro_batch_size = self.batch_size // self.grad_accum_steps
        self.per_replica_batch = self.micro_batch_size // self.num_replicas
        self.local_batch = self.per_replica_batch * self.num_local_replicas

        if mixed_precision != "none":
            keras.config.set_dtype_policy(mixed_precision)
        with self.strategy.scope():
            self.model = model_fn()
            if not self.model.built:
                self._build_model(train_data.element_spec[0])
            self.schedule = LRASchedule(
                learning_rate,
                warmup_steps=warmup_steps,
                schedule=schedule,
                steps_per_cycle=steps_per_cycle or self.num_train_steps,
            )
            # Clipping is done here, not by Keras: Keras clips each replica's partial
            # gradient before the all-reduce (and a scaled one under loss scaling).
            # State-space layers (s4d) get their own learning rate and no weight decay.
            optimizer = build_optimizer(
                self.model,
                self.schedule,
                learning_rate=learning_rate,
                weight_decay=float(weight_decay or 0.0),
                beta_1=0.9,
                beta_2=0.98,
                epsilon=1e-9,
            )
            if mixed_precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="train_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

        self._train_iterator = iter(self._prepare_train(train_data))
        self._eval_data = {k: self._prepare_eval(v) for k, v in eval_data.items()}
        all_vars = list(self.model.variables)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step,
            model_variables=all_vars,
            iterator=self._train_iterator,
        )
        self.best_checkpoint = tf.train.Checkpoint(model=self.model, model_variables=all_vars)
        self.checkpoint_dir = os.path.join(self.model_dir, "checkpoints")
        self.best_dir = os.path.join(self.model_dir, "best")
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self._writable(self.checkpoint_dir), self.keep_checkpoints
        )
        self.best_manager = tf.train.CheckpointManager(
            self.best_checkpoint, self._writable(self.best_dir), 1
        )

        grad_fn = tf.function(self._compute_grads, jit_compile=self.jit_compile)
        self._grad_fn = grad_fn
        self._eval_forward = tf.function(self._eval_replica, jit_compile=self.jit_compile)
        self._train_fn = tf.function(self._train_step)
        self._eval_fn = tf.function(self._eval_step)
        self._stop_requested = False

    # ------------------------------------------------------------------ data

    def _build_model(self, spec):
        def zeros(s):
            return tf.zeros([1 if d is None else d for d in s.shape.as_list()], s.dtype)

        self.model(tf.nest.map_structure(zeros, spec), training=False)

    def _prepare_train(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        ds = ds.unbatch()
        if self.num_workers > 1:
            ds = ds.shard(self.num_workers, self.worker_index)
        per_worker = self.micro_batch_size // self.num_workers
        return ds.repeat().batch(per_worker, drop_remainder=True).prefetch(2)

    def _prepare_eval(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        ds = ds.unbatch()
        if self.max_eval_batches:
            ds = ds.take(self.max_eval_batches * self.local_batch)
        real = ds.map(lambda f, y: (f, y, tf.constant(1.0)))
        filler = real.take(1).map(lambda f, y, w: (f, y, tf.constant(0.0)))
        filler = filler.repeat(self.local_batch - 1)
        return real.concatenate(filler).batch(self.local_batch, drop_remainder=True).prefetch(1)

    def _distribute(self, batch):
        if self.num_replicas == 1:
            return batch
        per, local = self.per_replica_batch, self.num_local_replicas

        def value_fn(ctx):
            i = ctx.replica_id_in_sync_group % local
            return tf.nest.map_structure(lambda t: t[i * per : (i + 1) * per], batch)

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    # ------------------------------------------------------------------ steps

    def _compute_grads(self, features, labels):
        with tf.GradientTape() as tape:
            logits = self.model(features, training=True)
            logits = tf.cast(logits, tf.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.batch_size)
            if self.model.losses:
                extra = tf.add_n([tf.cast(x, tf.float32) for x in self.model.losses])
                extra = tf.nn.scale_regularization_loss(extra) / self.grad_accum_steps
            else:
                extra = tf.constant(0.0)
            total = loss + extra
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                total = self.optimizer.scale_loss(total)
        grads = tape.gradient(total, self.model.trainable_variables)
        predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32))
        return loss, extra, correct, grads

    def _finalize_grads(self, grads):
        if self.grad_clip_norm is None:
            return grads
        if self.num_replicas > 1:
            ctx = tf.distribute.get_replica_context()
            present = [g for g in grads if g is not None]
            reduced = iter(ctx.all_reduce(tf.distribute.ReduceOp.SUM, present))
            grads = [None if g is None else next(reduced) for g in grads]
        scale = None
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            scale = tf.cast(self.optimizer.dynamic_scale, tf.float32)
            grads = [None if g is None else g / tf.cast(scale, g.dtype) for g in grads]
        present = [g for g in grads if g is not None]
        clipped = iter(tf.clip_by_global_norm(present, self.grad_clip_norm)[0])
        grads = [None if g is None else next(clipped) for g in grads]
        if scale is not None:
            grads = [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]
        if self.num_replicas > 1:
            # The optimizer sums the replicas' gradients again; these are already the sum.
            grads = [None if g is None else g / self.num_replicas for g in grads]
        return grads

    def _replica_step(self, micro_batches):
        total_grads = None
        loss = extra = correct = 0.0
        for features, labels in micro_batches:
            l_i, e_i, c_i, grads = self._grad_fn(features, labels)
            loss, extra, correct = loss + l_i, extra + e_i, correct + c_i
            # Embedding gradients come as IndexedSlices: they do not add, and the optimizer
            # would update them sparsely (moments of absent rows left alone), so one step
            # would differ with and without accumulation. LRA vocabularies are small.
            grads = [None if g is None else tf.convert_to_tensor(g) for g in grads]
            if total_grads is None:
                total_grads = list(grads)
            else:
                total_grads = [
                    g if a is None else (a if g is None else a + g)
                    for a, g in zip(total_grads, grads, strict=True)
                ]
        grads = self._finalize_grads(total_grads)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return loss, extra, correct

    def _train_step(self, micro_batches):
        results = self.strategy.run(self._replica_step, args=(micro_batches,))
        loss, extra, correct = (
            self.strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results
        )
        return {"loss": loss, "model_loss": extra, "accuracy": correct / self.batch_size}

    def _eval_replica(self, features, labels, weights):
        logits = tf.cast(self.model(features, training=False), tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
        correct = tf.cast(tf.equal(predictions, labels), tf.float32)
        return (
            tf.reduce_sum(per_example * weights),
            tf.reduce_sum(correct * weights),
            tf.reduce_sum(weights),
        )

    def _eval_step(self, batch):
        results = self.strategy.run(self._eval_forward, args=batch)
        # Local replicas only: every worker evaluates the whole split, no collectives.
        return [tf.add_n(self.strategy.experimental_local_results(r)) for r in results]

    def evaluate(self, split: str) -> dict:
        """Loss and accuracy over `split` (at most `max_eval_batches` batches)."""
        if split not in self._eval_data:
            raise ValueError(
                f"No evaluation data for split {split!r}; have {sorted(self._eval_data)}."
            )
        totals = np.zeros(3, np.float64)
        for batch in self._eval_data[split]:
            totals += np.array([float(x) for x in self._eval_fn(self._distribute(batch))])
        if totals[2] == 0:
            raise ValueError(f"The {split!r} split is empty.")
        return {
            "loss": totals[0] / totals[2],
            "accuracy": totals[1] / totals[2],
            "examples": int(totals[2]),
        }

    # ------------------------------------------------------------------ files

    def _writable(self, directory: str) -> str:
        """Non-chief workers must save too (saving is collective) but into a scratch folder."""
        if self.is_chief:
            return directory
        return os.path.join(directory, f".worker{self.worker_index}_tmp")

    def _save(self):
        self.manager.save(checkpoint_number=int(self.step.numpy()))
        if not self.is_chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)

    def _read_best(self) -> dict | None:
        path = os.path.join(self.best_dir, "best.json")
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                return json.load(f)
        return None

    def _save_best(self, metrics: dict):
        self.best_manager.save(checkpoint_number=int(self.step.numpy()))
        if self.is_chief:
            best = {"step": int(self.step.numpy()), "validation": metrics}
            with tf.io.gfile.GFile(os.path.join(self.best_dir, "best.json"), "w") as f:
                json.dump(best, f, indent=2)
        else:
            shutil.rmtree(self.best_manager.directory, ignore_errors=True)

    def restore(self) -> int:
        """Restores the latest checkpoint in `model_dir` if any; returns the step."""
        latest = tf.train.latest_checkpoint(self.checkpoint_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            logging.info("Resumed from %s (step %d)", latest, int(self.step.numpy()))
        return int(self.step.numpy())

    # ------------------------------------------------------------------ loop

    def _on_sigterm(self, signum, frame):
        self._stop_requested = True

    def request_stop(self):
        """Asks the loop to checkpoint and return at the next step boundary."""
        self._stop_requested = True

    def train(self) -> dict:
        """Runs (or resumes) training; returns the results written to `results.json`."""
        start_time = time.time()
        step = self.restore()
        if self.is_chief:
            tf.io.gfile.makedirs(self.model_dir)
            with tf.io.gfile.GFile(os.path.join(self.model_dir, "config.json"), "w") as f:
                json.dump(self._full_config(), f, indent=2, default=str)
        logdir = os.path.join(self.model_dir, "logs")
        if self.is_chief:
            writers = {
                "train": tf.summary.create_file_writer(os.path.join(logdir, "train")),
                "validation": tf.summary.create_file_writer(os.path.join(logdir, "validation")),
            }
        else:
            writers = {"train": tf.summary.create_noop_writer()}
            writers["validation"] = writers["train"]
        best = self._read_best()
        has_val = "validation" in self._eval_data
        progbar = None
        if self.verbose == 1 and self.is_chief:
            progbar = keras.utils.Progbar(self.num_train_steps, stateful_metrics=["lr", "steps/s"])
            if step:
                progbar.update(step)

        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._stop_requested = False
        trace = None
        window = {"loss": [], "accuracy": []}
        window_start, window_steps = time.time(), 0
        last_train = {}
        preempted = False
        try:
            while step < self.num_train_steps:
                if self.profile_steps and step + 1 == self.profile_steps[0] and self.is_chief:
                    trace = contextlib.ExitStack()
                    trace.enter_context(_profiler_trace(os.path.join(logdir, "train")))
                micro = tuple(
                    self._distribute(next(self._train_iterator))
                    for _ in range(self.grad_accum_steps)
                )
                out = self._train_fn(micro)
                self.step.assign_add(1)
                step += 1
                window["loss"].append(out["loss"])
                window["accuracy"].append(out["accuracy"])
                window_steps += 1
                if trace is not None and step >= self.profile_steps[1]:
                    trace.close()
                    trace = None
                    logging.info("Profiler trace written under %s", os.path.join(logdir, "train"))
                if step % self.log_every == 0 or step == self.num_train_steps:
                    elapsed = max(time.time() - window_start, 1e-9)
                    last_train = {
                        "loss": float(np.mean([float(x) for x in window["loss"]])),
                        "accuracy": float(np.mean([float(x) for x in window["accuracy"]])),
                        "learning_rate": float(self.schedule(self.optimizer.iterations - 1)),
                        "steps_per_sec": window_steps / elapsed,
                        "examples_per_sec": window_steps * self.batch_size / elapsed,
                    }
                    peak = _peak_memory_mib()
                    if peak is not None:
                        last_train["peak_memory_mib"] = peak
                    with writers["train"].as_default(step=step):
                        for k, v in last_train.items():
                            tf.summary.scalar(k, v)
                    self._report(progbar, step, last_train)
                    window = {"loss": [], "accuracy": []}
                    window_start, window_steps = time.time(), 0
                if self._stop_requested:
                    self._save()
                    preempted = True
                    logging.info("Stop requested: checkpoint saved at step %d.", step)
                    break
                if step % self.checkpoint_every == 0 or step == self.num_train_steps:
                    self._save()
                if has_val and (step % self.eval_every == 0 or step == self.num_train_steps):
                    metrics = self.evaluate("validation")
                    with writers["validation"].as_default(step=step):
                        tf.summary.scalar("loss", metrics["loss"])
                        tf.summary.scalar("accuracy", metrics["accuracy"])
                    if self.verbose == 2 and self.is_chief:
                        logging.info(
                            "step %d validation: loss %.4f accuracy %.4f",
                            step,
                            metrics["loss"],
                            metrics["accuracy"],
                        )
                    if best is None or metrics["accuracy"] > best["validation"]["accuracy"]:
                        self._save_best(metrics)
                        best = {"step": step, "validation": metrics}
                    window_start = time.time()
        finally:
            if trace is not None:
                trace.close()
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
            for w in writers.values():
                w.flush()
        if preempted:
            return {"preempted": True, "step": step}
        if step >= self.num_train_steps and not last_train:
            logging.info("Already trained to step %d; evaluating.", step)
        results = self._final_results(best, last_train, time.time() - start_time)
        return results

    def _report(self, progbar, step, values):
        if progbar is not None:
            progbar.update(
                step,
                [
                    ("loss", values["loss"]),
                    ("accuracy", values["accuracy"]),
                    ("lr", values["learning_rate"]),
                    ("steps/s", values["steps_per_sec"]),
                ],
            )
        elif self.verbose == 2 and self.is_chief:
            logging.info(
                "step %d/%d loss %.4f accuracy %.4f lr %.3g %.2f steps/s %.1f examples/s",
                step,
                self.num_train_steps,
                values["loss"],
                values["accuracy"],
                values["learning_rate"],
                values["steps_per_sec"],
                values["examples_per_sec"],
            )

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
            if split in self._eval_data:
                last[split] = self.evaluate(split)
        best_entry = dict(last)
        if best is not None and best["step"] != step:
            last_weights = self.model.get_weights()
            best_path = tf.train.latest_checkpoint(self.best_dir)
            self.best_checkpoint.restore(best_path).assert_existing_objects_matched()
            best_entry = {"step": best["step"], "validation": best["validation"]}
            if "test" in self._eval_data:
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
        if self.is_chief:
            with tf.io.gfile.GFile(os.path.join(self.model_dir, "results.json"), "w") as f:
                json.dump(results, f, indent=2, default=float)
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
        if self.export_fn == "auto":
            # The run owns its export folder: a resumed run replaces it.
            fn(self.model, path, config=self.config, overwrite=True)
        else:
            fn(self.model, path)
        logging.info("Exported the best-validation model to %s", path)
