"""Peak memory read back from a profiler trace (the TensorBoard memory-profile tool's data).

Its figures have `source` `"trace"`. The trace holds allocator events only where TensorFlow's
allocator emits them: on GPUs, and on the CPU with the oneDNN allocator (`mklcpu`), which
TensorFlow 2.21 uses by default only on CPUs with AVX-512. Without oneDNN (an AVX2-only CPU
with the default setting, or `TF_ENABLE_ONEDNN_OPTS=0`) the plain CPU allocator records no
memory events, and `trace_peak_memory` says so (`peak_bytes` None and a `note`) rather than
inventing a number. `lra-train --profile_steps` and the benchmark children turn oneDNN on
before TensorFlow loads (`lra_keras.onednn`) unless the user set `TF_ENABLE_ONEDNN_OPTS`.
"""

from __future__ import annotations

import glob
import json
import os

from lra_keras.profiling.memory import SOURCE_TRACE

NO_MEMORY_PROFILE = (
    "no memory profile in this trace (no allocator events were recorded; on a CPU, set "
    "TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow is imported)"
)


def find_xplane(logdir: str) -> str:
    """The newest `<logdir>/**/plugins/profile/<run>/<host>.xplane.pb` written by `trace`."""
    pattern = os.path.join(os.fspath(logdir), "**", "*.xplane.pb")
    paths = sorted(glob.glob(pattern, recursive=True), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(
            f"No profiler trace (*.xplane.pb) under {logdir}: record one with "
            "`lra_keras.profiling.trace(logdir)` or `lra-train --profile_steps 5,8`."
        )
    return paths[-1]


def _check_xspace(path: str) -> None:
    # The converter reads a corrupt file as an empty profile; parse it first so that a broken
    # file is an error, not "no memory profile".
    from google.protobuf.message import DecodeError
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with open(path, "rb") as f:
        try:
            xplane_pb2.XSpace.FromString(f.read())
        except DecodeError as error:
            raise ValueError(
                f"trace_peak_memory: {path} is not a profiler trace (XSpace protobuf)"
            ) from error


def trace_peak_memory(logdir_or_file: str) -> dict:
    """Peak bytes per memory allocator from a trace's memory profile.

    Uses the profiler plugin's own converter (`xprof`, the `memory_profile` tool that
    TensorBoard's Profile tab shows), on the newest trace under a log directory or on one
    `.xplane.pb` file.

    Args:
        logdir_or_file: a TensorBoard log directory given to `lra_keras.profiling.trace`, or
            one `<host>.xplane.pb` file.

    Returns:
        `{"file", "run", "host", "source", "allocators": {name: {"peak_bytes_in_use",
        "peak_bytes_lifetime", "capacity_bytes"}}, "peak_bytes", "peak_mib", "note"}`: `run`
        and `host` name the trace that was read (`plugins/profile/<run>/<host>.xplane.pb`),
        `source` is `"trace"`, and `peak_bytes` is the largest in-use peak over the
        allocators, or None (with `note` saying so) when the trace holds no memory profile;
        `note` is None otherwise.

    Raises:
        FileNotFoundError: no `.xplane.pb` under `logdir_or_file`.
        ValueError: the file is not a profiler trace.

    Example:

    >>> import tempfile, tensorflow as tf
    >>> from lra_keras.profiling import trace, trace_peak_memory
    >>> logdir = tempfile.mkdtemp()
    >>> with trace(logdir):
    ...     _ = tf.reduce_sum(tf.ones([1024, 1024])).numpy()
    >>> sorted(trace_peak_memory(logdir))[:3]
    ['allocators', 'file', 'host']
    """
    from xprof.convert import raw_to_tool_data

    path = os.fspath(logdir_or_file)
    if not path.endswith(".xplane.pb"):
        path = find_xplane(path)
    _check_xspace(path)
    data, _ = raw_to_tool_data.xspace_to_tool_data([path], "memory_profile", {})
    profile = json.loads(data) if data else {}
    allocators = {}
    for name, entry in profile.get("memoryProfilePerAllocator", {}).items():
        summary = entry.get("profileSummary", {})
        peak = summary.get("peakStats", {}).get("peakBytesInUse")
        if peak is None:
            continue
        allocators[name] = {
            "peak_bytes_in_use": int(peak),
            "peak_bytes_lifetime": int(summary.get("peakBytesUsageLifetime", peak)),
            "capacity_bytes": int(summary.get("memoryCapacity", 0)),
        }
    peak_bytes = max((a["peak_bytes_in_use"] for a in allocators.values()), default=None)
    result = {
        "file": path,
        "run": os.path.basename(os.path.dirname(path)),
        "host": os.path.basename(path)[: -len(".xplane.pb")],
        "source": SOURCE_TRACE,
        "allocators": allocators,
        "peak_bytes": peak_bytes,
        "peak_mib": None if peak_bytes is None else peak_bytes / 2**20,
        "note": None if allocators else NO_MEMORY_PROFILE,
    }
    return result
