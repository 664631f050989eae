"""Peak memory, steps per second and profiler traces."""

from __future__ import annotations

import glob
import os
import resource

import numpy as np
import pytest
import tensorflow as tf

from lra_keras import profiling
from lra_keras.profiling import (
    SOURCE_ALLOCATOR,
    SOURCE_RSS,
    SOURCE_TRACE,
    default_device,
    measure_steps_per_second,
    peak_memory,
    read_peak_memory,
    trace,
)
from lra_keras.profiling import throughput as throughput_module
from lra_keras.profiling.trace_memory import NO_MEMORY_PROFILE

MIB = 2**20


def _allocate(mib: int) -> float:
    x = tf.ones([mib * MIB // 4], tf.float32)  # `mib` MiB of float32
    return float(tf.reduce_sum(x[:1]))


def test_peak_memory_sees_an_allocation_on_cpu():
    with peak_memory("CPU:0") as record:
        _allocate(64)
    assert record["device"] == "CPU:0"
    if record["source"] == SOURCE_ALLOCATOR:
        # The oneDNN CPU allocator keeps statistics: the 64 MiB is counted.
        assert record["peak_bytes"] - record["baseline_bytes"] >= 64 * MIB
        assert record["current_bytes"] is not None and record["note"] is None
    else:
        # No oneDNN in this process (TF_ENABLE_ONEDNN_OPTS=0, or an AVX2-only CPU with the
        # variable unset when TensorFlow loaded): the documented fallback.
        assert record["source"] == SOURCE_RSS
        assert record["peak_bytes"] >= record["baseline_bytes"] > 0
        assert "TF_ENABLE_ONEDNN_OPTS=1" in record["note"]
    assert record["peak_mib"] == pytest.approx(record["peak_bytes"] / MIB)
    assert profiling.peak_memory_mib("CPU:0") >= 0.0


def test_peak_memory_is_reset_between_blocks():
    with peak_memory("CPU:0") as big:
        _allocate(128)
    with peak_memory("CPU:0") as small:
        _allocate(4)
    if big["source"] != SOURCE_ALLOCATOR:
        # The documented fallback: the process's peak RSS, which cannot be reset, so the
        # second block starts from (and reports at least) the first one's peak.
        assert big["source"] == small["source"] == SOURCE_RSS
        assert small["peak_bytes"] >= small["baseline_bytes"] >= big["peak_bytes"]
        return
    assert small["peak_bytes"] - small["baseline_bytes"] < 64 * MIB
    assert big["peak_bytes"] - big["baseline_bytes"] >= 128 * MIB


def test_falls_back_to_peak_rss(monkeypatch):
    def unavailable(device):
        raise ValueError(f"Allocator stats not available for device '{device}'")

    # What TensorFlow does on the CPU without oneDNN, simulated on any machine.
    monkeypatch.setattr(tf.config.experimental, "get_memory_info", unavailable)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    with peak_memory("CPU:0") as record:
        _allocate(1)
    assert record["source"] == SOURCE_RSS == "rss"
    assert record["current_bytes"] is None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert 0 < record["peak_bytes"] <= rss
    # The record says why it fell back and how to get allocator figures.
    assert "no statistics" in record["note"] and "TF_ENABLE_ONEDNN_OPTS is '0'" in record["note"]
    assert "TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow is imported" in record["note"]
    again = read_peak_memory("CPU:0")
    assert again["source"] == SOURCE_RSS and again["note"] == record["note"]
    assert "GPU:0" in read_peak_memory("GPU:0")["note"]


def test_default_device_is_cpu_without_gpu():
    expected = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    assert profiling.default_device() == expected


def test_measure_steps_per_second_arithmetic_on_a_fake_clock(monkeypatch):
    # A fake clock (not a wall-clock assertion): each step advances it by a known duration,
    # so the statistics are checked exactly and nothing depends on this machine's speed.
    now = [0.0]
    monkeypatch.setattr(throughput_module.time, "perf_counter", lambda: now[0])
    durations = iter([7.0, 9.0, 0.5, 0.1, 0.3, 0.2, 0.4])  # two warm-up steps, then five

    def step():
        now[0] += next(durations)
        return tf.constant([1.0, 2.0])

    result = measure_steps_per_second(step, warmup=2, steps=5)
    assert result["step_times_s"] == pytest.approx([0.5, 0.1, 0.3, 0.2, 0.4])
    assert result["median_step_s"] == pytest.approx(0.3)
    assert result["steps_per_second"] == pytest.approx(1.0 / 0.3)
    assert result["min_step_s"] == pytest.approx(0.1)
    assert result["mean_step_s"] == pytest.approx(np.mean([0.5, 0.1, 0.3, 0.2, 0.4]))
    assert (result["steps"], result["warmup"]) == (5, 2)
    with pytest.raises(ValueError, match="steps >= 1"):
        measure_steps_per_second(step, warmup=0, steps=0)


def test_trace_writes_an_xplane(tmp_path):
    logdir = str(tmp_path / "logs")

    @tf.function
    def f(x):
        return tf.reduce_sum(tf.matmul(x, x))

    with trace(logdir) as where:
        f(tf.ones([16, 16]))
    assert where == logdir
    files = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    assert files and os.path.getsize(files[0]) > 0


def test_trace_disabled_does_nothing(tmp_path):
    with trace(str(tmp_path / "off"), enabled=False) as where:
        _allocate(1)
    assert where is None
    assert not os.path.exists(tmp_path / "off")


def test_trace_peak_memory_reads_the_memory_profile(tmp_path):
    from lra_keras.profiling import trace_peak_memory

    logdir = str(tmp_path / "logs")

    @tf.function
    def f(x):
        return tf.reduce_sum(tf.matmul(x, x) + 1.0)

    big = tf.ones([1024, 1024])  # 4 MiB, and f's matmul output another 4 MiB
    with trace(logdir):
        f(big).numpy()
    result = trace_peak_memory(logdir)
    assert result["file"].endswith(".xplane.pb")
    assert result["source"] == SOURCE_TRACE
    if read_peak_memory(default_device())["source"] == SOURCE_ALLOCATOR:
        # An allocator that keeps statistics also records its events in the trace.
        assert result["peak_bytes"] >= 8 * 2**20 and result["note"] is None
        assert all(a["peak_bytes_in_use"] > 0 for a in result["allocators"].values())
    else:
        # The documented fallback without oneDNN: no number, and a note that says why.
        assert result["peak_bytes"] is None and result["allocators"] == {}
        assert result["note"] == NO_MEMORY_PROFILE


def test_trace_peak_memory_without_a_trace_says_how_to_record_one(tmp_path):
    from lra_keras.profiling import trace_peak_memory

    with pytest.raises(FileNotFoundError, match="profile_steps"):
        trace_peak_memory(str(tmp_path))
