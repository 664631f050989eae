"""On another Keras backend, importing the layers and the zoo never imports TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import sys
import numpy as np
import lra_keras.layers, lra_keras.zoo
from lra_keras.layers import get_attention
from lra_keras.zoo import build_model_from_config, get_config
layer = get_attention("chunked", num_heads=2, key_dim=4, query_chunk_size=4, key_chunk_size=4)
x = np.ones((1, 9, 8), "float32")
assert layer(x, x, use_causal_mask=True).shape == (1, 9, 8)
config = get_config("text", "chunked", "tiny")
model = build_model_from_config(config)
assert model({"tokens": np.ones((1, config["max_length"]), "int32")}).shape[0] == 1
loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
assert not loaded, loaded
print("no tensorflow")
"""


def test_layers_and_zoo_run_on_jax_without_importing_tensorflow():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no tensorflow" in done.stdout
