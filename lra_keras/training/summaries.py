"""What a training run reports: TensorBoard scalars, the progress bar or log lines, traces.

The writers, the peak memory and the trace come from the training backend
(`lra_keras.training.backends`); this module imports no TensorFlow itself.
"""

from __future__ import annotations

import contextlib
import os
import time

import keras
import numpy as np
from absl import logging

from lra_keras.errors import UserError


def peak_memory() -> dict:  # TensorFlow's figure; the JAX backend has its own
    """The peak memory figure and where it came from (`lra_keras.profiling.read_peak_memory`).

    `{"peak_memory_mib": float, "peak_memory_source": "allocator" | "rss"}`: the first GPU's
    (else the CPU's) allocator peak, or the process's peak RSS where the allocator keeps no
    statistics.
    """
    from lra_keras import profiling

    record = profiling.read_peak_memory()
    return {"peak_memory_mib": record["peak_mib"], "peak_memory_source": record["source"]}


@contextlib.contextmanager
def profiler_trace(logdir: str):
    try:
        from lra_keras import profiling

        trace = getattr(profiling, "trace", None)
    except ImportError:
        trace = None
    if trace is not None:
        with trace(logdir):
            yield
        return
    import tensorflow as tf

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
            raise UserError(
                f'`profile_steps` must be "START,STOP" (e.g. "5,8"); received {value!r}.'
            ) from None
    else:
        start, stop = (int(v) for v in value)
    if start < 1 or stop < start:
        raise UserError(f"`profile_steps` needs 1 <= START <= STOP; received {value!r}.")
    return start, stop


class Summaries:
    """One run's reporting: train and validation writers, the training window, the trace.

    Only the chief writes files; other workers get no-op writers. `backend` is the run's
    training backend: its `summary_writer(logdir, enabled)` (None where the backend has no
    TensorBoard writer), `peak_memory()` and `trace(logdir)`.
    """

    def __init__(self, logdir, *, num_train_steps, batch_size, verbose, is_chief, profile, backend):
        self.logdir = logdir
        self.num_train_steps = num_train_steps
        self.batch_size = batch_size
        self.verbose = verbose
        self.is_chief = is_chief
        self.profile = profile
        self.backend = backend
        self.writers = {
            split: backend.summary_writer(os.path.join(logdir, split), is_chief)
            for split in ("train", "validation")
        }
        self.progbar = None
        self._trace = None
        self.reset_window()

    def start(self, step: int):
        if self.verbose == 1 and self.is_chief:
            self.progbar = keras.utils.Progbar(
                self.num_train_steps, stateful_metrics=["lr", "steps/s"]
            )
            if step:
                self.progbar.update(step)

    def reset_window(self):
        self.window = {"loss": [], "accuracy": []}
        self.window_start, self.window_steps = time.time(), 0

    def before_step(self, step: int):
        """Opens the profiler trace when training step `step + 1` is its first."""
        if self.profile and step + 1 == self.profile[0] and self.is_chief:
            self._trace = contextlib.ExitStack()
            self._trace.enter_context(self.backend.trace(os.path.join(self.logdir, "train")))

    def after_step(self, step: int, out: dict):
        self.window["loss"].append(out["loss"])
        self.window["accuracy"].append(out["accuracy"])
        self.window_steps += 1
        if self._trace is not None and step >= self.profile[1]:
            self.close_trace()
            logging.info("Profiler trace written under %s", os.path.join(self.logdir, "train"))

    def close_trace(self):
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    def log_train(self, step: int, learning_rate: float) -> dict:
        """Writes the window's means; returns them (the run's latest training figures)."""
        elapsed = max(time.time() - self.window_start, 1e-9)
        figures = {
            "loss": float(np.mean([float(x) for x in self.window["loss"]])),
            "accuracy": float(np.mean([float(x) for x in self.window["accuracy"]])),
            "learning_rate": learning_rate,
            "steps_per_sec": self.window_steps / elapsed,
            "examples_per_sec": self.window_steps * self.batch_size / elapsed,
        }
        figures.update(self.backend.peak_memory())
        self._write("train", step, {k: v for k, v in figures.items() if not isinstance(v, str)})
        self._report(step, figures)
        self.reset_window()
        return figures

    def log_validation(self, step: int, metrics: dict):
        self._write("validation", step, {k: metrics[k] for k in ("loss", "accuracy")})
        if self.verbose == 2 and self.is_chief:
            logging.info(
                "step %d validation: loss %.4f accuracy %.4f",
                step,
                metrics["loss"],
                metrics["accuracy"],
            )
        # Evaluation time is not training time.
        self.window_start = time.time()

    def _write(self, split: str, step: int, values: dict) -> None:
        if self.writers[split] is not None:
            self.writers[split].scalars(step, values)

    def _report(self, step, values):
        if self.progbar is not None:
            self.progbar.update(
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

    def close(self):
        self.close_trace()
        for w in self.writers.values():
            if w is not None:
                w.close()
