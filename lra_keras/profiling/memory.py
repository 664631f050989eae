"""Peak memory of a block of work: TensorFlow's allocator statistics, or the process's peak RSS.

Each record names its source in `source`:

- `"allocator"`: `tf.config.experimental.get_memory_info(device)["peak"]`, the TensorFlow
  allocator of one device, reset at the start of the block. GPUs keep these statistics; the CPU
  keeps them when TensorFlow uses its oneDNN allocator, which it does by default only on CPUs
  with AVX-512. `lra-train` and the benchmark children turn oneDNN on before TensorFlow loads
  (`lra_keras.onednn`), so they get allocator figures on any x86 CPU; in your own script, call
  `lra_keras.onednn.enable_cpu_memory_statistics()` (or set `TF_ENABLE_ONEDNN_OPTS=1`) before
  importing TensorFlow.
- `"rss"`, the fallback where the allocator keeps no statistics (`get_memory_info` raises: a CPU
  without oneDNN, e.g. AVX2-only with the default setting or `TF_ENABLE_ONEDNN_OPTS=0`): the
  process's peak resident set size from `resource.getrusage`. It cannot be reset and includes
  everything the process ever held (Python, the TensorFlow runtime, data); the record's `note`
  says why the allocator was not used.

A profiler trace's memory profile is a third source (`"trace"`, see `trace_memory`).
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys

import tensorflow as tf

from lra_keras.onednn import ONEDNN_ENV_VAR

SOURCE_ALLOCATOR = "allocator"
SOURCE_TRACE = "trace"
SOURCE_RSS = "rss"
SOURCE_TF = SOURCE_ALLOCATOR  # the former name


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


def rss_fallback_note(device: str) -> str:
    """Why a record of `device` fell back to the peak RSS, and what would avoid it."""
    if "CPU" not in device.upper():
        return f"TensorFlow keeps no allocator statistics for {device}: peak RSS of the process."
    setting = os.environ.get(ONEDNN_ENV_VAR)
    setting = "unset" if setting is None else repr(setting)
    return (
        f"TensorFlow's CPU allocator keeps no statistics in this process (oneDNN off; "
        f"{ONEDNN_ENV_VAR} is {setting}): peak RSS of the process. Set {ONEDNN_ENV_VAR}=1 "
        "before TensorFlow is imported for allocator figures."
    )


def reset_peak_memory(device: str | None = None) -> str:
    """Resets the device's peak-memory statistic; returns the source that will be read.

    Args:
        device: a TensorFlow device name such as `"GPU:0"` or `"CPU:0"` (default: the first
            GPU if any, else the CPU).

    Returns:
        `SOURCE_ALLOCATOR` (`"allocator"`) when TensorFlow keeps statistics for the device
        (now reset), else `SOURCE_RSS` (`"rss"`: the process-lifetime peak RSS, which cannot
        be reset).
    """
    device = device or default_device()
    if _tf_memory_info(device) is None:
        return SOURCE_RSS
    try:
        tf.config.experimental.reset_memory_stats(device)
    except (ValueError, tf.errors.OpError):
        return SOURCE_RSS
    return SOURCE_ALLOCATOR


def read_peak_memory(device: str | None = None) -> dict:
    """The device's peak memory since the last reset (allocator) or the process's peak RSS.

    Returns:
        `{"device", "source", "peak_bytes", "current_bytes", "peak_mib", "note"}`: `source`
        is `"allocator"` or `"rss"`; `current_bytes` is None and `note` says why for the RSS
        source (`note` is None otherwise).
    """
    device = device or default_device()
    info = _tf_memory_info(device)
    if info is None:
        peak, current, source = _rss_peak_bytes(), None, SOURCE_RSS
        note = rss_fallback_note(device)
    else:
        peak, current, source = int(info["peak"]), int(info["current"]), SOURCE_ALLOCATOR
        note = None
    return {
        "device": device,
        "source": source,
        "peak_bytes": peak,
        "current_bytes": current,
        "peak_mib": peak / 2**20,
        "note": note,
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
    ['baseline_bytes', 'current_bytes', 'device', 'note', 'peak_bytes', 'peak_mib', 'source']
    >>> record["source"] in ("allocator", "rss")
    True

    Yields:
        A dict that, after the block, holds `read_peak_memory`'s keys plus `baseline_bytes`:
        the memory in use when the block started (allocator source) or the peak RSS before it
        (RSS source; the block's own peak is only visible when it exceeds this).
    """
    device = device or default_device()
    source = reset_peak_memory(device)
    if source == SOURCE_ALLOCATOR:
        baseline = int(tf.config.experimental.get_memory_info(device)["current"])
    else:
        baseline = _rss_peak_bytes()
    record: dict = {}
    try:
        yield record
    finally:
        record.update(read_peak_memory(device))
        record["baseline_bytes"] = baseline
