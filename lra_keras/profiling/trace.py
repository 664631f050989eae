"""A TensorBoard profiler trace (xplane) around a block of work."""

from __future__ import annotations

import contextlib
import os

import tensorflow as tf


@contextlib.contextmanager
def trace(
    logdir: str,
    enabled: bool = True,
    host_tracer_level: int = 2,
    python_tracer_level: int = 0,
    device_tracer_level: int = 1,
):
    """Records a profiler trace of the block under `logdir` (TensorBoard's Profile tab).

    Wraps `tf.profiler.experimental.start/stop`; the trace is written to
    `<logdir>/plugins/profile/<run>/<host>.xplane.pb`. Only one trace can run at a time.

    Args:
        logdir: the TensorBoard log directory.
        enabled: when False, does nothing (so callers need no branch).
        host_tracer_level: 1-3, how much host (CPU) activity to trace.
        python_tracer_level: 0 or 1, trace Python function calls (slow).
        device_tracer_level: 0 or 1, trace device (GPU) activity.

    Yields:
        `logdir` when tracing, else None.

    Example:

    >>> import tempfile, tensorflow as tf
    >>> from lra_keras.profiling import trace
    >>> with trace(tempfile.mkdtemp()):
    ...     _ = tf.reduce_sum(tf.ones([8]))
    """
    if not enabled:
        yield None
        return
    os.makedirs(logdir, exist_ok=True)
    options = tf.profiler.experimental.ProfilerOptions(
        host_tracer_level=host_tracer_level,
        python_tracer_level=python_tracer_level,
        device_tracer_level=device_tracer_level,
    )
    try:
        tf.profiler.experimental.start(logdir, options=options)
    except tf.errors.AlreadyExistsError as error:
        raise ValueError(
            "trace: a profiler trace is already running in this process; stop it first "
            "(only one trace can run at a time)."
        ) from error
    try:
        yield logdir
    finally:
        tf.profiler.experimental.stop()
