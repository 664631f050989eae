"""Running one measurement in a child process, so an out-of-memory kill is a result.

Children start with `TF_ENABLE_ONEDNN_OPTS=1` unless the user set it (`lra_keras.onednn`), so
TensorFlow's CPU allocator keeps the statistics the memory figures read, on any x86 CPU.
"""

from __future__ import annotations

import json
import subprocess

from lra_keras.onednn import child_environment


def run_json_child(command: list[str], timeout: float) -> dict:
    """Runs `command`; returns the last JSON line it printed, with `"status": "ok"`.

    A child killed by the kernel (SIGKILL, the out-of-memory killer) or failing with a
    TensorFlow `ResourceExhausted` error gives `"status": "out of memory"`; another failure
    gives `"failed"` with the last stderr line as `error`; running past `timeout` seconds
    gives `"timeout"`.
    """
    env = child_environment(TF_CPP_MIN_LOG_LEVEL="2")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": f"over {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return {"status": "ok", **json.loads(lines[-1])}
    text = (done.stderr or "")[-2000:]
    out_of_memory = done.returncode in (-9, 137) or "ResourceExhausted" in text or "OOM" in text
    last = text.strip().splitlines()[-1] if text.strip() else f"exit {done.returncode}"
    return {"status": "out of memory" if out_of_memory else "failed", "error": last}
