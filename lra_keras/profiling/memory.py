"""Peak memory of a block of work: TensorFlow's allocator statistics, or the process's peak RSS.

`tf.config.experimental.get_memory_info(device)["peak"]` tracks the TensorFlow allocator of
one device and can be reset; it works on GPUs and, with TensorFlow 2.21's default (oneDNN)
CPU allocator, on the CPU too. Where the allocator keeps no statistics (a ValueError, e.g. on
the CPU with `TF_ENABLE_ONEDNN_OPTS=0`), the fallback is the process's peak resident set size
from `resource.getrusage`, which cannot be reset and includes everything the process ever
held (Python, the TensorFlow runtime, data); each record says which source it used.
"""

from __future__ import annotations

import contextlib
import resource
import sys

import tensorflow as tf

SOURCE_TF = "tf.config.experimental.get_memory_info"
SOURCE_RSS = "resource.getrusage.ru_maxrss"


def default_device() -> str:
    """`"GPU:0"` when TensorFlow sees a GPU, else `"CPU:0"`."""
    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def _rss_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _tf_memory_info(device: str) -> dict | None:
    try:
        return tf.config.experimental.get_memory_info(device)
    except (ValueError, tf.errors.OpError):
        return None


def reset_peak_memory(device: str | None = None) -> str:
    """Resets the device's peak-memory statistic; returns the source that will be read.

    Args:
        device: a TensorFlow device name such as `"GPU:0"` or `"CPU:0"` (default: the first
            GPU if any, else the CPU).

    Returns:
        `SOURCE_TF` when TensorFlow keeps statistics for the device (now reset), else
        `SOURCE_RSS` (the process-lifetime peak RSS, which cannot be reset).
    """
    device = device or default_device()
    if _tf_memory_info(device) is None:
        return SOURCE_RSS
    try:
        tf.config.experimental.reset_memory_stats(device)
    except (ValueError, tf.errors.OpError):
        return SOURCE_RSS
    return SOURCE_TF


def read_peak_memory(device: str | None = None) -> dict:
    """The device's peak memory since the last reset (TensorFlow) or the process's peak RSS.

    Returns:
        `{"device", "source", "peak_bytes", "current_bytes", "peak_mib"}`; `current_bytes` is
        None for the RSS source.
    """
    device = device or default_device()
    info = _tf_memory_info(device)
    if info is None:
        peak, current, source = _rss_peak_bytes(), None, SOURCE_RSS
    else:
        peak, current, source = int(info["peak"]), int(info["current"]), SOURCE_TF
    return {
        "device": device,
        "source": source,
        "peak_bytes": peak,
        "current_bytes": current,
        "peak_mib": peak / 2**20,
    }


def peak_memory_mib(device: str | None = None) -> float:
    """`read_peak_memory(device)["peak_mib"]`: the peak since the last reset, in MiB."""
    return float(read_peak_memory(device)["peak_mib"])


@contextlib.contextmanager
def peak_memory(device: str | None = None):
    """Context manager: the peak memory of the work inside it, as a record filled on exit.

    Example:

    >>> import tensorflow as tf
    >>> from lra_keras.profiling import peak_memory
    >>> with peak_memory("CPU:0") as record:
    ...     _ = tf.matmul(tf.ones([256, 256]), tf.ones([256, 256]))
    >>> sorted(record)
    ['baseline_bytes', 'current_bytes', 'device', 'peak_bytes', 'peak_mib', 'source']

    Yields:
        A dict that, after the block, holds `read_peak_memory`'s keys plus `baseline_bytes`:
        the memory in use when the block started (TensorFlow source) or the peak RSS before it
        (RSS source; the block's own peak is only visible when it exceeds this).
    """
    device = device or default_device()
    source = reset_peak_memory(device)
    if source == SOURCE_TF:
        baseline = int(tf.config.experimental.get_memory_info(device)["current"])
    else:
        baseline = _rss_peak_bytes()
    record: dict = {}
    try:
        yield record
    finally:
        record.update(read_peak_memory(device))
        record["baseline_bytes"] = baseline
