"""oneDNN on, before TensorFlow loads, so that the CPU allocator keeps memory statistics.

TensorFlow 2.21 turns its oneDNN CPU path on by default only on CPUs with AVX-512 (and a few
other feature sets); elsewhere (an AVX2-only AMD EPYC, for instance) it uses the plain CPU
allocator, which keeps no statistics: `tf.config.experimental.get_memory_info("CPU:0")` raises
and a profiler trace holds no memory events. `TF_ENABLE_ONEDNN_OPTS=1` set before TensorFlow is
imported selects the oneDNN allocator on any x86 CPU; TensorFlow reads the variable once, at
import, so setting it later changes nothing. oneDNN may change float32 results by round-off
(TensorFlow prints as much when it loads).

`lra-train` calls `enable_cpu_memory_statistics()` before it imports TensorFlow, and the
benchmarks start their measuring children with `child_environment()`; both leave a value the
user set alone (`TF_ENABLE_ONEDNN_OPTS=0` keeps oneDNN off, and the measurements then say they
fell back to the process's peak RSS). This module imports no TensorFlow.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

ONEDNN_ENV_VAR = "TF_ENABLE_ONEDNN_OPTS"


def enable_cpu_memory_statistics() -> bool:
    """Sets `TF_ENABLE_ONEDNN_OPTS=1` unless the user set it or TensorFlow is already loaded.

    Returns:
        True when this call set the variable (and so decides the TensorFlow about to be
        imported), False when the user's value stands or TensorFlow was imported already (its
        setting can no longer change; the environment is then left as it is).
    """
    if ONEDNN_ENV_VAR in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[ONEDNN_ENV_VAR] = "1"
    return True


def child_environment(base: Mapping[str, str] | None = None, **overrides: str) -> dict:
    """The environment of a measuring child process: `base` (default `os.environ`) plus
    `overrides`, with `TF_ENABLE_ONEDNN_OPTS=1` unless one of them sets it.

    Example:

    >>> from lra_keras.onednn import child_environment
    >>> child_environment({}, TF_CPP_MIN_LOG_LEVEL="2")
    {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '1'}
    >>> child_environment({"TF_ENABLE_ONEDNN_OPTS": "0"})["TF_ENABLE_ONEDNN_OPTS"]
    '0'
    """
    env = dict(os.environ if base is None else base, **overrides)
    env.setdefault(ONEDNN_ENV_VAR, "1")
    return env
