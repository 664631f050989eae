"""`trace_peak_memory` on real and hand-built profiler traces."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from lra_keras.profiling import (
    SOURCE_ALLOCATOR,
    default_device,
    read_peak_memory,
    trace,
    trace_peak_memory,
)
from lra_keras.profiling.trace_memory import NO_MEMORY_PROFILE

MIB = 2**20


def _write_xspace(tmp_path, run="run1", host="testhost", space=None):
    folder = tmp_path / "plugins" / "profile" / run
    folder.mkdir(parents=True)
    path = folder / f"{host}.xplane.pb"
    if space is None:
        # A host plane with no events: what a trace holds when the allocator emits none.
        space = xplane_pb2.XSpace(hostnames=[host])
        space.planes.add(id=1, name="/host:CPU")
    path.write_bytes(space.SerializeToString())
    return path


def test_names_the_run_and_host_it_read(tmp_path):
    logdir = str(tmp_path / "logs")

    @tf.function
    def f(x):
        return tf.matmul(x, x) * 2.0  # two live 4 MiB outputs besides the input

    x = tf.ones([1024, 1024])
    with trace(logdir):
        f(x).numpy()
    result = trace_peak_memory(logdir)
    run_dir = os.path.join(logdir, "plugins", "profile", result["run"])
    assert result["file"] == os.path.join(run_dir, result["host"] + ".xplane.pb")
    # Reading the file directly gives the same answer as reading its log directory.
    assert trace_peak_memory(result["file"]) == result
    assert result["source"] == "trace"
    if read_peak_memory(default_device())["source"] != SOURCE_ALLOCATOR:
        # No allocator statistics (a CPU without oneDNN), hence no events: the fallback.
        assert result["peak_bytes"] is None and result["note"] == NO_MEMORY_PROFILE
    else:
        # The oneDNN CPU allocator ("mklcpu") or a GPU's records its events: at least one
        # 4 MiB output.
        assert result["note"] is None
        assert result["peak_bytes"] >= 4 * MIB
        assert result["peak_mib"] == pytest.approx(result["peak_bytes"] / MIB)
        for allocator in result["allocators"].values():
            assert allocator["peak_bytes_lifetime"] >= allocator["peak_bytes_in_use"] > 0


def test_a_trace_without_memory_events_says_so(tmp_path):
    path = _write_xspace(tmp_path)
    result = trace_peak_memory(str(tmp_path))
    assert result["file"] == str(path)
    assert (result["run"], result["host"]) == ("run1", "testhost")
    assert result["allocators"] == {}
    assert result["peak_bytes"] is None and result["peak_mib"] is None
    assert result["note"] == NO_MEMORY_PROFILE


def test_a_corrupt_file_is_an_error_not_an_empty_profile(tmp_path):
    path = tmp_path / "bad.xplane.pb"
    path.write_bytes(b"garbage\x00\xff")
    with pytest.raises(ValueError, match="not a profiler trace"):
        trace_peak_memory(str(path))


# Each case starts TensorFlow in a fresh process (~5 s of CPU); the user's "0" is also checked
# without TensorFlow in test_onednn.py, and the no-events fallback on a hand-built trace above.
@pytest.mark.parametrize("user_setting", [pytest.param("0", marks=pytest.mark.slow), None])
def test_lra_train_turns_onednn_on_unless_the_user_chose(tmp_path, user_setting):
    # A fresh process that starts as `lra-train` does: importing the CLI must set oneDNN up
    # before anything imports TensorFlow, and leave a value the user set alone.
    script = textwrap.dedent(
        f"""
        import json, os, sys
        import lra_keras.training.cli
        loaded_early = "tensorflow" in sys.modules
        import tensorflow as tf
        from lra_keras.profiling import read_peak_memory, trace, trace_peak_memory
        with trace({str(tmp_path)!r}):
            tf.reduce_sum(tf.matmul(tf.ones([512, 512]), tf.ones([512, 512]))).numpy()
        print(json.dumps({{
            "loaded_early": loaded_early,
            "setting": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "memory": read_peak_memory("CPU:0"),
            "trace": trace_peak_memory({str(tmp_path)!r}),
        }}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    if user_setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_setting
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded_early"] is False
    memory, traced = result["memory"], result["trace"]
    if user_setting == "0":
        # The user's choice stands; without oneDNN neither statistics nor trace events exist
        # on any CPU, and both figures say so.
        assert result["setting"] == "0"
        assert memory["source"] == "rss" and "TF_ENABLE_ONEDNN_OPTS is '0'" in memory["note"]
        assert traced["peak_bytes"] is None and traced["note"] == NO_MEMORY_PROFILE
        return
    assert result["setting"] == "1"
    if platform.machine().lower() in ("x86_64", "amd64"):
        # oneDNN on, on any x86 CPU (AVX2-only included): allocator statistics and events.
        assert memory["source"] == "allocator" and memory["note"] is None
        assert traced["peak_bytes"] >= MIB and traced["note"] is None
    else:
        assert (memory["source"] == "allocator") == (traced["peak_bytes"] is not None)
