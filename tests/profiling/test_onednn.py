"""oneDNN set up before TensorFlow loads, so the CPU allocator keeps memory statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lra_keras.onednn import ONEDNN_ENV_VAR, child_environment, enable_cpu_memory_statistics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _unset(monkeypatch):
    # setenv first so that monkeypatch restores the variable's original state afterwards.
    monkeypatch.setenv(ONEDNN_ENV_VAR, "placeholder")
    monkeypatch.delenv(ONEDNN_ENV_VAR)


def test_enables_onednn_before_tensorflow_loads(monkeypatch):
    _unset(monkeypatch)
    monkeypatch.delitem(sys.modules, "tensorflow")
    assert enable_cpu_memory_statistics() is True
    assert os.environ[ONEDNN_ENV_VAR] == "1"


@pytest.mark.parametrize("user_setting", ["0", "1", ""])
def test_leaves_the_users_setting_alone(monkeypatch, user_setting):
    monkeypatch.setenv(ONEDNN_ENV_VAR, user_setting)
    monkeypatch.delitem(sys.modules, "tensorflow")
    assert enable_cpu_memory_statistics() is False
    assert os.environ[ONEDNN_ENV_VAR] == user_setting
    assert child_environment()[ONEDNN_ENV_VAR] == user_setting


def test_does_nothing_once_tensorflow_is_loaded(monkeypatch):
    import tensorflow  # noqa: F401

    _unset(monkeypatch)
    # TensorFlow read the variable when it loaded; setting it now would only mislead.
    assert enable_cpu_memory_statistics() is False
    assert ONEDNN_ENV_VAR not in os.environ


def test_child_environment(monkeypatch):
    _unset(monkeypatch)
    monkeypatch.setenv("LRA_TEST_MARKER", "kept")
    env = child_environment(TF_CPP_MIN_LOG_LEVEL="2")
    assert env[ONEDNN_ENV_VAR] == "1"
    assert env["LRA_TEST_MARKER"] == "kept" and env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert child_environment({}, TF_ENABLE_ONEDNN_OPTS="0") == {ONEDNN_ENV_VAR: "0"}
    assert ONEDNN_ENV_VAR not in os.environ  # the parent's environment is not changed


@pytest.mark.parametrize("user_setting", ["0", None])
def test_importing_the_training_cli_loads_no_tensorflow(user_setting):
    # `lra-train` imports lra_keras.training.cli first: it must set the variable (unless the
    # user did) before anything imports TensorFlow, or the setting comes too late.
    script = (
        "import json, os, sys\n"
        "import lra_keras.training.cli\n"
        "print(json.dumps(['tensorflow' in sys.modules, 'keras' in sys.modules, "
        f"os.environ.get({ONEDNN_ENV_VAR!r})]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in sys.path if p])
    if user_setting is not None:
        env[ONEDNN_ENV_VAR] = user_setting
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded_tf, loaded_keras, setting = json.loads(done.stdout.strip().splitlines()[-1])
    assert not loaded_tf and not loaded_keras
    assert setting == (user_setting or "1")


def test_training_exports_still_resolve():
    import lra_keras.training as training
    from lra_keras.training import LRASchedule, Trainer, compiled_lm_step, parse_profile_steps

    assert Trainer.__name__ == "Trainer" and LRASchedule.__name__ == "LRASchedule"
    assert callable(compiled_lm_step) and parse_profile_steps("5,8") == (5, 8)
    assert set(training.__all__) <= set(dir(training))
    assert training.trainer.Trainer is Trainer
    with pytest.raises(AttributeError, match="no_such_name"):
        training.no_such_name  # noqa: B018
