"""Training on JAX: a `jax.jit` stateless step, `keras.distribution`, numpy input, `.npz` files.

Nothing here imports TensorFlow: the accelerators this runs on carry JAX alone.

- The step: `model.stateless_call` and `optimizer.stateless_apply` inside one `jax.jit`
  function over the model's trainable and non-trainable (seed generator states included) and
  the optimizer's variables; the micro-batches of gradient accumulation are unrolled in it;
  the loss is the TensorFlow step's (the per-example loss summed and divided by the global
  batch, model losses averaged over micro-batches), gradients are clipped by their global
  norm after accumulation, and the optimizer is `build_optimizer`'s (parameter groups kept).
  The new values are written back into the Keras variables after every step, so
  checkpoints, evaluation and export read the model as on TensorFlow.
- Distribution: `keras.distribution.DataParallel` over the local devices; each global
  micro-batch is placed split along the batch axis, the variables replicated, and XLA adds
  the gradient all-reduce. One device needs none.
- Data: anything with `batches(epoch=0, start=0)` yielding `(features dict, labels)` numpy
  batches (`lra_keras.data.load_numpy`), read as a stream of examples cut into micro-batches
  and repeated over epochs; its position (epoch, batch, offset) is checkpointed.
- Checkpoints: `checkpoints/ckpt-<step>.npz` (the variables, the step and the data position;
  written to a temporary file, fsynced and renamed) and `checkpoints/checkpoint.json` naming
  the latest; the best weights as `best/model.weights.h5`, which a TensorFlow process reads
  to export (`lra-export`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import keras
import numpy as np
from absl import logging

from lra_keras.errors import UserError
from lra_keras.training import objectives
from lra_keras.training.optimizers import make_optimizer
from lra_keras.training.run_state import read_json, write_json

NAME = "jax"
CHECKPOINT_FORMAT = "lra_keras.jax_checkpoint"
CHECKPOINT_INDEX = "checkpoint.json"
BEST_WEIGHTS = "model.weights.h5"
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def resolve_distribution(strategy):
    """`None` (one device) or a `keras.distribution.Distribution` for `strategy`.

    `auto` and `mirrored`: data parallel over every local device (`auto` uses one device
    when there is only one); `default`: one device. `multi_worker` and `tpu` name
    `tf.distribute` strategies: refused, naming the flag.
    """
    if hasattr(strategy, "get_data_layout") and hasattr(strategy, "scope"):
        return strategy  # a keras.distribution.Distribution
    if strategy is None:
        strategy = "auto"
    if not isinstance(strategy, str):
        raise UserError(
            f"`strategy` on the jax backend is a keras.distribution.Distribution or one of "
            f"{STRATEGIES}; received {type(strategy).__name__}."
        )
    if strategy not in STRATEGIES:
        raise UserError(f"--strategy must be one of {STRATEGIES}; received {strategy!r}.")
    if strategy in ("multi_worker", "tpu"):
        raise UserError(
            f"--strategy {strategy} is a tf.distribute strategy (KERAS_BACKEND=tensorflow); on "
            "jax use --strategy auto (data parallel over the local devices, TPU cores included)."
        )
    devices = jax.local_devices()
    if strategy == "default" or (strategy == "auto" and len(devices) == 1):
        return None
    return keras.distribution.DataParallel(devices=devices)


class MicroBatches:
    """Global micro-batches of `size` examples from a numpy dataset, over epochs, forever.

    The dataset's own batches are a stream of examples: a micro-batch may span two of them or
    two epochs (as the tf.data path's unbatch/repeat/batch does). `position` (epoch, batch,
    offset: the next unread example) is all a resumed run needs to read the same examples.
    """

    def __init__(self, dataset, size: int):
        self.dataset = dataset
        self.size = size
        self.position = {"epoch": 0, "batch": 0, "offset": 0}
        self._batches = None
        self._current = None

    def restore(self, position: dict) -> None:
        self.position = {k: int(position[k]) for k in ("epoch", "batch", "offset")}
        self._batches = self._current = None

    def __iter__(self):
        return self

    def _load(self) -> bool:
        """Reads the batch at the position; False at the end of the epoch."""
        if self._batches is None:
            p = self.position
            self._batches = iter(self.dataset.batches(epoch=p["epoch"], start=p["batch"]))
        try:
            features, labels = next(self._batches)
        except StopIteration:
            return False
        self._current = (features, np.asarray(labels))
        return True

    def __next__(self):
        parts, need = [], self.size
        while need:
            if self._current is None and not self._load():
                if self.position["batch"] == 0:
                    raise UserError("The training data yielded no batch in a whole epoch.")
                self.position = {"epoch": self.position["epoch"] + 1, "batch": 0, "offset": 0}
                self._batches = None
                continue
            features, labels = self._current
            offset = self.position["offset"]
            take = min(need, len(labels) - offset)
            cut = slice(offset, offset + take)
            parts.append(({k: np.asarray(v)[cut] for k, v in features.items()}, labels[cut]))
            need -= take
            if offset + take == len(labels):
                self.position = {**self.position, "batch": self.position["batch"] + 1}
                self.position["offset"] = 0
                self._current = None
            else:
                self.position = {**self.position, "offset": offset + take}
        if len(parts) == 1:
            return parts[0]
        features = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        return features, np.concatenate([p[1] for p in parts])


def eval_batches(dataset, size: int, max_batches: int | None):
    """`(features, labels, weights)` batches of exactly `size`: the last padded with weight-0
    copies of its first example (static shapes), at most `max_batches` of them."""
    limit = None if max_batches is None else max_batches * size
    pending, seen = [], 0

    def emit(parts):
        features = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        labels = np.concatenate([p[1] for p in parts])
        n = len(labels)
        weights = np.ones(size, np.float32)
        if n < size:
            weights[n:] = 0.0
            pad = size - n
            features = {
                k: np.concatenate([v, np.repeat(v[:1], pad, axis=0)]) for k, v in features.items()
            }
            labels = np.concatenate([labels, np.repeat(labels[:1], pad, axis=0)])
        return features, labels, weights

    buffered = 0
    for features, labels in dataset.batches(epoch=0):
        labels = np.asarray(labels)
        features = {k: np.asarray(v) for k, v in features.items()}
        if limit is not None:
            keep = min(len(labels), limit - seen)
            if keep <= 0:
                break
            features = {k: v[:keep] for k, v in features.items()}
            labels = labels[:keep]
        seen += len(labels)
        start = 0
        while start < len(labels):
            take = min(size - buffered, len(labels) - start)
            part = slice(start, start + take)
            pending.append(({k: v[part] for k, v in features.items()}, labels[part]))
            buffered += take
            start += take
            if buffered == size:
                yield emit(pending)
                pending, buffered = [], 0
    if pending:
        yield emit(pending)


class Evaluator:
    """Loss and accuracy over whole splits with a jitted stateless forward pass."""

    def __init__(self, backend, eval_data, max_eval_batches, objective):
        self.backend = backend
        self.data = dict(eval_data)
        self.max_eval_batches = max_eval_batches
        model, objective_fn = backend.model, objectives.get(objective)

        def forward(trainable, non_trainable, features, labels, weights):
            logits, _ = model.stateless_call(trainable, non_trainable, features, training=False)
            per_example, correct = objective_fn(labels, logits)
            return (
                jnp.sum(per_example * weights),
                jnp.sum(correct * weights),
                jnp.sum(weights),
            )

        self._forward = jax.jit(forward)

    def __contains__(self, split: str) -> bool:
        return split in self.data

    def evaluate(self, split: str) -> dict:
        if split not in self.data:
            raise ValueError(f"No evaluation data for split {split!r}; have {sorted(self.data)}.")
        model = self.backend.model
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        totals = np.zeros(3, np.float64)
        size = self.backend.micro_batch_size
        for features, labels, weights in eval_batches(
            self.data[split], size, self.max_eval_batches
        ):
            features, labels, weights = self.backend.distribute((features, labels, weights))
            out = self._forward(trainable, non_trainable, features, labels, weights)
            totals += np.array([float(x) for x in out])
        if totals[2] == 0:
            raise ValueError(f"The {split!r} split is empty.")
        return {
            "loss": totals[0] / totals[2],
            "accuracy": totals[1] / totals[2],
            "examples": int(totals[2]),
        }


class TrainStep:
    """One optimizer step over `grad_accum_steps` micro-batches, as one `jax.jit` function.

    Calling it with a tuple of `(features, labels)` micro-batches updates the model's and the
    optimizer's variables and returns the global batch's loss, model loss and accuracy.
    """

    def __init__(
        self, model, optimizer, *, batch_size, grad_accum_steps, grad_clip_norm, objective
    ):
        self.model = model
        self.optimizer = optimizer
        objective_fn = objectives.get(objective)

        def loss_fn(trainable, non_trainable, features, labels):
            logits, non_trainable, losses = model.stateless_call(
                trainable, non_trainable, features, training=True, return_losses=True
            )
            per_example, correct = objective_fn(labels, logits)
            loss = jnp.sum(per_example) / batch_size
            extra = jnp.zeros((), jnp.float32)
            for term in losses:
                extra = extra + jnp.asarray(term, jnp.float32)
            extra = extra / grad_accum_steps
            return loss + extra, (loss, extra, jnp.sum(correct), non_trainable)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def step(state, micro_batches):
            trainable, non_trainable, optimizer_variables = state
            total = None
            loss = extra = correct = jnp.zeros((), jnp.float32)
            for features, labels in micro_batches:
                (_, (l_i, e_i, c_i, non_trainable)), grads = grad_fn(
                    trainable, non_trainable, features, labels
                )
                loss, extra, correct = loss + l_i, extra + e_i, correct + c_i
                total = (
                    grads if total is None else [a + g for a, g in zip(total, grads, strict=True)]
                )
            if grad_clip_norm is not None:
                # tf.clip_by_global_norm's formula, so both backends clip alike.
                norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in total))
                scale = grad_clip_norm / jnp.maximum(norm, grad_clip_norm)
                total = [g * scale.astype(g.dtype) for g in total]
            trainable, optimizer_variables = optimizer.stateless_apply(
                optimizer_variables, total, trainable
            )
            metrics = {"loss": loss, "model_loss": extra, "accuracy": correct / batch_size}
            return (trainable, non_trainable, optimizer_variables), metrics

        # Donated buffers are reused in place on accelerators; the CPU cannot donate.
        donate = () if jax.default_backend() == "cpu" else (0,)
        self._step = jax.jit(step, donate_argnums=donate)

    def __call__(self, micro_batches):
        model, optimizer = self.model, self.optimizer
        groups = (model.trainable_variables, model.non_trainable_variables, optimizer.variables)
        state = tuple([v.value for v in variables] for variables in groups)
        new_state, metrics = self._step(state, tuple(micro_batches))
        for variables, values in zip(groups, new_state, strict=True):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
        return metrics


def _to_numpy(value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":  # npz keeps no bfloat16; float32 holds it exactly
        array = array.astype(np.float32)
    return array


class Checkpoints:
    """`.npz` checkpoints of the whole training state, and the best weights as `.weights.h5`."""

    def __init__(self, backend, model_dir: str, *, keep: int, is_chief: bool):
        self.backend = backend
        self.keep = keep
        self.is_chief = is_chief
        self.checkpoint_dir = os.path.join(model_dir, "checkpoints")
        self.best_dir = os.path.join(model_dir, "best")

    def _groups(self) -> dict:
        model, optimizer = self.backend.model, self.backend.optimizer
        return {
            "trainable": model.trainable_variables,
            "non_trainable": model.non_trainable_variables,
            "optimizer": optimizer.variables,
        }

    def save(self, step: int) -> None:
        if not self.is_chief:
            return
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        arrays, layout = {}, {}
        for group, variables in self._groups().items():
            layout[group] = [[v.path, list(v.shape)] for v in variables]
            for i, v in enumerate(variables):
                arrays[f"{group}/{i}"] = _to_numpy(v.value)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "backend": NAME,
            "step": int(step),
            "data": self.backend.data_position(),
            "variables": layout,
        }
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        name = f"ckpt-{int(step)}.npz"
        path = os.path.join(self.checkpoint_dir, name)
        partial = f"{path}.partial"
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        _fsync_dir(self.checkpoint_dir)
        index = read_json(os.path.join(self.checkpoint_dir, CHECKPOINT_INDEX)) or {}
        kept = [n for n in index.get("all", []) if n != name] + [name]
        dropped, kept = kept[: -self.keep], kept[-self.keep :]
        # The index names only complete files: it is written after the checkpoint.
        write_json(
            os.path.join(self.checkpoint_dir, CHECKPOINT_INDEX), {"latest": name, "all": kept}
        )
        for old in dropped:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.checkpoint_dir, old))

    def latest(self) -> str | None:
        index = read_json(os.path.join(self.checkpoint_dir, CHECKPOINT_INDEX))
        if not index:
            return None
        return os.path.join(self.checkpoint_dir, index["latest"])

    def restore(self) -> int | None:
        path = self.latest()
        if path is None:
            return None
        meta, values = read_checkpoint(path)
        for group, variables in self._groups().items():
            saved = values[group]
            if len(saved) != len(variables):
                raise UserError(
                    f"{path} holds {len(saved)} {group} variables; this model has "
                    f"{len(variables)}: it was written by another model."
                )
            for variable, value in zip(variables, saved, strict=True):
                if tuple(variable.shape) != tuple(value.shape):
                    raise UserError(
                        f"{path}: variable {variable.path} has shape {tuple(value.shape)} "
                        f"there and {tuple(variable.shape)} in this model."
                    )
                variable.assign(value)
        self.backend.restore_position(int(meta["step"]), meta["data"])
        return int(meta["step"])

    def save_best(self, step: int) -> None:
        if not self.is_chief:
            return
        os.makedirs(self.best_dir, exist_ok=True)
        # Keras wants the `.weights.h5` suffix: a staging folder, then one rename.
        staging = os.path.join(self.best_dir, ".partial")
        os.makedirs(staging, exist_ok=True)
        partial = os.path.join(staging, BEST_WEIGHTS)
        self.backend.model.save_weights(partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, os.path.join(self.best_dir, BEST_WEIGHTS))
        _fsync_dir(self.best_dir)

    def restore_best(self) -> None:
        self.backend.model.load_weights(os.path.join(self.best_dir, BEST_WEIGHTS))


def read_checkpoint(path: str) -> tuple[dict, dict]:
    """`(meta, {group: [numpy arrays]})` of a JAX run's `.npz` checkpoint (no Keras needed)."""
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{path} is not a checkpoint written by lra-train on jax.")
        values = {
            group: [data[f"{group}/{i}"] for i in range(len(entries))]
            for group, entries in meta["variables"].items()
        }
    return meta, values


class SummaryWriter:
    """TensorBoard scalars through TensorBoard's own event writer (no TensorFlow)."""

    def __init__(self, writer):
        self._writer = writer

    def scalars(self, step: int, values: dict) -> None:
        for name, value in values.items():
            self._writer.add_scalar(name, float(value), step=step)

    def close(self) -> None:
        self._writer.flush()


_logged_no_tensorboard = []


def tensorboard_writer(logdir: str):
    """TensorBoard's `tensorboard.summary.Writer`, kept from importing TensorFlow; or None."""
    if "tensorflow" not in sys.modules and "tensorboard.compat.notf" not in sys.modules:
        # TensorBoard's compat layer imports TensorFlow when it is installed unless this
        # module exists (what the `tensorboard-notf` package ships); its stub writes local
        # event files the same way.
        sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    try:
        from tensorboard.summary import Writer
    except ImportError as error:
        if not _logged_no_tensorboard:
            _logged_no_tensorboard.append(True)
            logging.info("No TensorBoard scalars: tensorboard.summary.Writer (%s).", error)
        return None
    return SummaryWriter(Writer(logdir))


class TrainingBackend:
    """Everything `Trainer` does differently on JAX (see the module docstring).

    Args:
        strategy: a `--strategy` name, a `keras.distribution.Distribution`, or None (data
            parallel over all local devices when there are several).
        batch_size, grad_accum_steps: the global batch and its micro-batches.
        mixed_precision: the Keras dtype policy name ("none" for float32).
    """

    name = NAME

    def __init__(self, strategy, *, batch_size, grad_accum_steps, mixed_precision):
        if mixed_precision == "mixed_float16":
            raise UserError(
                "--mixed_precision mixed_float16 needs loss scaling, which lra-train does on "
                "the tensorflow backend only; on jax use mixed_bfloat16."
            )
        self.distribution = resolve_distribution(strategy)
        self.num_replicas = (
            1 if self.distribution is None else int(np.prod(self.distribution.device_mesh.shape))
        )
        self.is_chief = jax.process_index() == 0
        self.worker_index = jax.process_index()
        self.num_workers = jax.process_count()
        self.batch_size = batch_size
        self.grad_accum_steps = grad_accum_steps
        self.micro_batch_size = batch_size // grad_accum_steps
        self.mixed_precision = mixed_precision
        self._step = 0
        self._iterator = None

    def _scope(self):
        if self.distribution is None:
            return contextlib.nullcontext()
        return self.distribution.scope()

    # ------------------------------------------------------------------ setup

    def describe(self) -> dict:
        name = "one device" if self.distribution is None else type(self.distribution).__name__
        return {"strategy": name, "num_replicas": self.num_replicas, "num_workers": 1}

    def check_data(self, train_data, eval_data) -> dict:
        def check(name, data):
            if not callable(getattr(data, "batches", None)):
                raise UserError(
                    f"`{name}` must be a numpy dataset with `batches(epoch, start)` on the jax "
                    f"backend (lra_keras.data.load_numpy); received {type(data).__name__}."
                )

        check("train_data", train_data)
        eval_data = dict(eval_data or {})
        for split, data in eval_data.items():
            check(f"eval_data[{split!r}]", data)
        return eval_data

    def check_options(self, *, profile_steps) -> None:
        if profile_steps:
            raise UserError(
                "--profile_steps traces with TensorFlow's profiler: the tensorflow backend "
                "only; drop it on jax."
            )

    def set_dtype_policy(self) -> None:
        if self.mixed_precision != "none":
            keras.config.set_dtype_policy(self.mixed_precision)

    def build(self, model_fn, train_data, schedule, learning_rate, weight_decay):
        with self._scope():
            model = model_fn()
            if not model.built:
                spec = dict(train_data.element_spec)
                spec.pop("label", None)
                model(
                    {
                        k: np.zeros([1 if d is None else d for d in shape], dtype)
                        for k, (shape, dtype) in spec.items()
                    },
                    training=False,
                )
            optimizer = make_optimizer(model, schedule, learning_rate, weight_decay, "none")
            optimizer.build(model.trainable_variables)
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
        """Returns `(train iterator, train step, evaluator, checkpoints)`.

        `jit_compile` changes nothing: the JAX step is always compiled.
        """
        self._iterator = MicroBatches(train_data, self.micro_batch_size)
        step = TrainStep(
            self.model,
            self.optimizer,
            batch_size=self.batch_size,
            grad_accum_steps=self.grad_accum_steps,
            grad_clip_norm=grad_clip_norm,
            objective=objective,
        )
        evaluator = Evaluator(self, eval_data, max_eval_batches, objective)
        checkpoints = Checkpoints(self, model_dir, keep=keep_checkpoints, is_chief=self.is_chief)
        return self._iterator, step, evaluator, checkpoints

    # ------------------------------------------------------------------ during training

    def data_position(self) -> dict:
        return dict(self._iterator.position)

    def restore_position(self, step: int, position: dict) -> None:
        self._step = step
        self._iterator.restore(position)

    def distribute(self, batch):
        """The batch's arrays on the device(s), split along the batch axis across replicas."""
        if self.distribution is None:
            return jax.tree_util.tree_map(jnp.asarray, batch)

        def place(x):
            x = np.asarray(x)
            layout = self.distribution.get_data_layout(x.shape)
            return keras.distribution.distribute_tensor(x, layout)

        return jax.tree_util.tree_map(place, batch)

    @property
    def step(self) -> int:
        return self._step

    def advance(self) -> None:
        self._step += 1

    def learning_rate(self, schedule) -> float:
        return float(schedule(self.optimizer.iterations - 1))

    def summary_writer(self, logdir: str, enabled: bool):
        return tensorboard_writer(logdir) if enabled else None

    def peak_memory(self) -> dict:
        """The first device's allocator peak (accelerators), else the process's peak RSS."""
        stats = None
        with contextlib.suppress(Exception):
            stats = jax.local_devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            return {
                "peak_memory_mib": stats["peak_bytes_in_use"] / 2**20,
                "peak_memory_source": "allocator",
            }
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak if sys.platform == "darwin" else peak * 1024
        return {"peak_memory_mib": peak / 2**20, "peak_memory_source": "rss"}

    def trace(self, logdir: str):
        raise UserError("--profile_steps runs on the tensorflow backend only.")

    def export(self, model, path: str, config: dict) -> bool:
        """Exports in a TensorFlow process (`lra-export`), from `best/` as saved."""
        model_dir = os.path.dirname(path)
        command = f"lra-export --model_dir {model_dir} --out {path} --overwrite"
        if importlib.util.find_spec("tensorflow") is None:
            logging.info("No TensorFlow here to export with; where it is, run: %s", command)
            return False
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        args = ["--model_dir", model_dir, "--out", path]
        if os.path.exists(path):
            args.append("--overwrite")
        done = subprocess.run(
            [sys.executable, "-m", "lra_keras.export.cli", *args],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            message = f"the run is trained and checkpointed, but `{command}` failed"
            if done.returncode == 2:  # lra-export's one-line user error
                raise UserError(f"{message}: {lines[-1]}")
            raise RuntimeError(f"{message}:\n" + "\n".join(lines[-30:]))
        return True
