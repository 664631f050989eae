"""Efficiency measurement: peak memory, steps per second and TensorBoard profiler traces.

Unlike `layers/` and `zoo/`, this package uses TensorFlow directly.
"""

from lra_keras.profiling.memory import (
    SOURCE_RSS,
    SOURCE_TF,
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
    "SOURCE_RSS",
    "SOURCE_TF",
    "default_device",
    "find_xplane",
    "measure_steps_per_second",
    "peak_memory",
    "peak_memory_mib",
    "read_peak_memory",
    "reset_peak_memory",
    "trace",
    "trace_peak_memory",
]
