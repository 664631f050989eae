"""Runs Python as if TensorFlow were not installed: a helper for subprocess tests.

`blocker_dir(folder)` writes a `sitecustomize.py` there that installs a meta-path finder; with
the folder first on PYTHONPATH (`environment(folder)`), importing tensorflow, tensorflow_text,
tensorflow_datasets, tensorflow_hub or tf_keras (or any submodule) raises ModuleNotFoundError,
in `python -c`, `python -m` and console scripts alike:

    blocker = no_tensorflow.blocker_dir(tmp_path / "blocker")
    done = no_tensorflow.run_python(["-m", "lra_keras.data.cli", "listops", ...], blocker)
    done = subprocess.run([".venv/bin/lra-train", ...], env=no_tensorflow.environment(blocker))
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("tensorflow", "tensorflow_text", "tensorflow_datasets", "tensorflow_hub", "tf_keras")

BLOCKER = f'''"""Written by tests/backends/no_tensorflow.py: these count as not installed."""
import sys

_BLOCKED = {BLOCKED!r}


class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(
                f"No module named {{name!r}} (blocked by the no-TensorFlow test helper)",
                name=name,
            )
        return None


sys.meta_path.insert(0, _NoTensorFlow())
'''


def blocker_dir(folder) -> str:
    """Writes the blocking `sitecustomize.py` into `folder` (created) and returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return str(folder)


def environment(blocker: str, base: dict | None = None) -> dict:
    """`base` (default os.environ) with the blocker and this checkout first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    paths = [blocker, str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def run_python(args: list[str], blocker: str, cwd=None, timeout: float = 120, **kwargs):
    """`python *args` without TensorFlow; returns the CompletedProcess (text output)."""
    return subprocess.run(
        [sys.executable, *args],
        env=environment(blocker, kwargs.pop("env", None)),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
