"""Steps per second of a training or inference step function."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import tensorflow as tf


def _block_until_ready(result) -> None:
    # Eager TensorFlow may still be running on the device when the call returns: read one
    # element of every output tensor back to the host so that the step is finished.
    for leaf in tf.nest.flatten(result):
        if isinstance(leaf, tf.Tensor | tf.Variable):
            tf.reshape(leaf, [-1])[:1].numpy()


def measure_steps_per_second(step_fn: Callable[[], object], warmup: int = 3, steps: int = 10):
    """Times `step_fn()` after `warmup` untimed calls (tracing, compilation, autotuning).

    Args:
        step_fn: a callable taking no arguments (close over the batch); its outputs are read
            back to the host after each call so asynchronous device work is counted.
        warmup: untimed calls first (>= 0).
        steps: timed calls (>= 1).

    Returns:
        `{"median_step_s", "mean_step_s", "min_step_s", "steps_per_second" (1 / median),
        "steps", "warmup", "step_times_s"}`.

    Example:

    >>> from lra_keras.profiling import measure_steps_per_second
    >>> sorted(measure_steps_per_second(lambda: None, warmup=0, steps=2))[:2]
    ['mean_step_s', 'median_step_s']
    """
    if int(warmup) < 0 or int(steps) < 1:
        raise ValueError(
            f"measure_steps_per_second: need warmup >= 0 and steps >= 1, got warmup={warmup!r}, "
            f"steps={steps!r}."
        )
    for _ in range(int(warmup)):
        _block_until_ready(step_fn())
    times = []
    for _ in range(int(steps)):
        start = time.perf_counter()
        _block_until_ready(step_fn())
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "median_step_s": median,
        "mean_step_s": statistics.fmean(times),
        "min_step_s": min(times),
        "steps_per_second": 1.0 / median if median > 0 else float("inf"),
        "steps": int(steps),
        "warmup": int(warmup),
        "step_times_s": times,
    }
