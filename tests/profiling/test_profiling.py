"""Peak memory, steps per second and profiler traces."""

from __future__ import annotations

import glob
import os
import resource
import time

import numpy as np
import pytest
import tensorflow as tf

from lra_keras import profiling
from lra_keras.profiling import (
    SOURCE_RSS,
    SOURCE_TF,
    measure_steps_per_second,
    peak_memory,
    read_peak_memory,
    trace,
)

MIB = 2**20


def _allocate(mib: int) -> float:
    x = tf.ones([mib * MIB // 4], tf.float32)  # `mib` MiB of float32
    return float(tf.reduce_sum(x[:1]))


def test_peak_memory_sees_an_allocation_on_cpu():
    with peak_memory("CPU:0") as record:
        _allocate(64)
    assert record["device"] == "CPU:0"
    if record["source"] == SOURCE_TF:
        # TensorFlow 2.21's default CPU allocator keeps statistics: the 64 MiB is counted.
        assert record["peak_bytes"] - record["baseline_bytes"] >= 64 * MIB
        assert record["current_bytes"] is not None
    else:
        assert record["source"] == SOURCE_RSS
        assert record["peak_bytes"] >= record["baseline_bytes"] > 0
    assert record["peak_mib"] == pytest.approx(record["peak_bytes"] / MIB)
    assert profiling.peak_memory_mib("CPU:0") >= 0.0


def test_peak_memory_is_reset_between_blocks():
    with peak_memory("CPU:0") as big:
        _allocate(128)
    with peak_memory("CPU:0") as small:
        _allocate(4)
    if big["source"] != SOURCE_TF:
        pytest.skip("TensorFlow keeps no CPU allocator statistics here (RSS fallback)")
    assert small["peak_bytes"] - small["baseline_bytes"] < 64 * MIB
    assert big["peak_bytes"] - big["baseline_bytes"] >= 128 * MIB


def test_falls_back_to_peak_rss(monkeypatch):
    def unavailable(device):
        raise ValueError(f"Allocator stats not available for device '{device}'")

    monkeypatch.setattr(tf.config.experimental, "get_memory_info", unavailable)
    with peak_memory("CPU:0") as record:
        _allocate(1)
    assert record["source"] == SOURCE_RSS
    assert record["current_bytes"] is None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert 0 < record["peak_bytes"] <= rss
    assert read_peak_memory("CPU:0")["source"] == SOURCE_RSS


def test_default_device_is_cpu_without_gpu():
    expected = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    assert profiling.default_device() == expected


def test_measure_steps_per_second():
    calls = []

    def step():
        calls.append(1)
        time.sleep(0.01)
        return tf.constant([1.0, 2.0])

    result = measure_steps_per_second(step, warmup=2, steps=5)
    assert len(calls) == 7
    assert len(result["step_times_s"]) == 5
    assert 0.009 <= result["median_step_s"] < 0.2
    assert result["steps_per_second"] == pytest.approx(1.0 / result["median_step_s"])
    assert result["min_step_s"] <= result["median_step_s"]
    assert result["mean_step_s"] == pytest.approx(np.mean(result["step_times_s"]))
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
    # TensorFlow's CPU allocator records memory events in the trace on this platform.
    assert result["peak_bytes"] >= 8 * 2**20
    assert all(a["peak_bytes_in_use"] > 0 for a in result["allocators"].values())


def test_trace_peak_memory_without_a_trace_says_how_to_record_one(tmp_path):
    from lra_keras.profiling import trace_peak_memory

    with pytest.raises(FileNotFoundError, match="profile_steps"):
        trace_peak_memory(str(tmp_path))
