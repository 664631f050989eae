"""Peak memory read back from a profiler trace (the TensorBoard memory-profile tool's data)."""

from __future__ import annotations

import glob
import json
import os


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


def trace_peak_memory(logdir_or_file: str) -> dict:
    """Peak bytes per memory allocator from a trace's memory profile.

    Uses the profiler plugin's own converter (`xprof`, the `memory_profile` tool that
    TensorBoard's Profile tab shows), on the newest trace under a log directory or on one
    `.xplane.pb` file.

    Returns:
        `{"file", "allocators": {name: {"peak_bytes_in_use", "peak_bytes_lifetime",
        "capacity_bytes"}}, "peak_bytes"}`, where `peak_bytes` is the largest in-use peak over
        the allocators, or None (with a `note`) when the trace holds no memory profile.
    """
    from xprof.convert import raw_to_tool_data

    path = os.fspath(logdir_or_file)
    if not path.endswith(".xplane.pb"):
        path = find_xplane(path)
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
    result = {
        "file": path,
        "allocators": allocators,
        "peak_bytes": max((a["peak_bytes_in_use"] for a in allocators.values()), default=None),
    }
    if not allocators:
        result["note"] = "no memory profile in this trace (no allocator events were recorded)"
    return result
