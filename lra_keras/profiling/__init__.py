"""Efficiency measurement: peak memory, steps per second and TensorBoard profiler traces.

Unlike `layers/` and `zoo/`, this package uses TensorFlow directly. Every memory figure names
its source: `"allocator"` (TensorFlow's allocator statistics), `"trace"` (a profiler trace's
memory profile) or `"rss"` (the process's peak resident set size, the fallback where the
allocator keeps no statistics). On the CPU, TensorFlow keeps allocator statistics and records
memory events only with oneDNN on, its default only on CPUs with AVX-512: call
`enable_cpu_memory_statistics()` (from `lra_keras.onednn`, which imports no TensorFlow) or set
`TF_ENABLE_ONEDNN_OPTS=1` before TensorFlow is imported; `lra-train` and the benchmarks do so
unless the user set the variable.
"""

from lra_keras.onednn import ONEDNN_ENV_VAR, child_environment, enable_cpu_memory_statistics
from lra_keras.profiling.memory import (
    SOURCE_ALLOCATOR,
    SOURCE_RSS,
    SOURCE_TF,
    SOURCE_TRACE,
    default_device,
    peak_memory,
    peak_memory_mib,
    read_peak_memory,
    reset_peak_memory,
)
from lra_keras.profiling.throughput import measure_steps_per_second
from lra_keras.profiling.trace import trace
from lra_keras.profiling.trace_memory import find_xplane, trace_peak_memory

__all__ = [
    "ONEDNN_ENV_VAR",
    "SOURCE_ALLOCATOR",
    "SOURCE_RSS",
    "SOURCE_TF",
    "SOURCE_TRACE",
    "child_environment",
    "default_device",
    "enable_cpu_memory_statistics",
    "find_xplane",
    "measure_steps_per_second",
    "peak_memory",
    "peak_memory_mib",
    "read_peak_memory",
    "reset_peak_memory",
    "trace",
    "trace_peak_memory",
]
