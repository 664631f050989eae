"""Helpers for the state-space mixer tests (lru, s5, s4d, mega): numpy references and checks."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np

from tests.layers.reference import lengths_mask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def weights(layer) -> dict:
    """The layer's weights as float64 numpy, by path below the layer ("b", "dense/kernel")."""
    return {v.path.split("/", 1)[-1]: v.numpy().astype(np.float64) for v in layer.weights}


def move_weights(variables, scale=0.2, seed: int = 3):
    """Adds N(0, scale) noise to each variable (`scale` may be a function of the variable).

    Moves every parameter off its initial value, so that a wrong term cannot hide behind a
    weight that starts at 0 or 1. Returns the generator, for more draws.
    """
    rng = np.random.default_rng(seed)
    for var in variables:
        std = scale(var) if callable(scale) else scale
        var.assign(var.numpy() + rng.normal(scale=std, size=var.shape).astype("float32"))
    return rng


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def gelu_tanh(x):
    # The tanh form (flax's default GELU, which S5 and the LRU's JAX code use).
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def sequence_layer(y, layer):
    """S5's SequenceLayer (s5/layers.py) after the SSM output y [L, H]: GELU, then the gate
    of `layer.activation` (full_glu, half_glu1, half_glu2 or none for gelu)."""
    w = weights(layer)
    g = gelu_tanh(y)
    if layer.activation == "gelu":
        return g
    dense = g @ w["output_linear/kernel"] + w["output_linear/bias"]
    if layer.activation == "full_glu":
        half = dense.shape[-1] // 2
        return dense[:, :half] * sigmoid(dense[:, half:])
    if layer.activation == "half_glu1":
        return g * sigmoid(dense)
    return y * sigmoid(dense)  # half_glu2: the SSM output, gated


def assert_parallel_equals_loop(label, parallel, reference, layer, length, causal, dim):
    """`parallel(layer, u, causal)` (the layer's scan or FFT, numpy `[2, L, dim]`) equals the
    step-by-step `reference(u_row, layer, causal)` in float64, row by row."""
    u = np.random.default_rng(length).normal(size=(2, length, dim)).astype("float32")
    got = parallel(layer, u, causal)
    want = np.stack([reference(x.astype(np.float64), layer, causal) for x in u])
    print(f"{label} (L={length}, causal={causal}): max abs error {np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def assert_masked_layer_equals_reference(layer, reference_layer, dim):
    """With padding masks, each row's real positions equal the reference on the unpadded
    sentence, in both directions and causally; padded rows are zero."""
    u = np.random.default_rng(1).normal(size=(2, 12, dim)).astype("float32")
    mask = lengths_mask([12, 7], 12)
    for causal in (False, True):
        got = keras.ops.convert_to_numpy(
            layer(u, u, query_mask=mask, value_mask=mask, use_causal_mask=causal)
        )
        for row, n in enumerate((12, 7)):
            # The padded row is the unpadded sentence: nothing of the padding reaches it.
            want = reference_layer(u[row, :n].astype(np.float64), layer, causal)
            np.testing.assert_allclose(got[row, :n], want, atol=2e-5, rtol=1e-4)
        np.testing.assert_array_equal(got[1, 7:], 0.0)


def assert_causal_and_bidirectional(make_layer, dim):
    """A causal call, and a layer built with `bidirectional=False`, ignore a change after
    position 9; a bidirectional call sees it. Returns the one-directional layer."""
    layer = make_layer(16)
    x = np.random.default_rng(0).normal(size=(2, 16, dim)).astype("float32")
    changed = x.copy()
    changed[:, 9:] += 1.0
    for causal in (True, False):
        y = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=causal))
        y2 = keras.ops.convert_to_numpy(layer(changed, changed, use_causal_mask=causal))
        if causal:
            np.testing.assert_allclose(y2[:, :9], y[:, :9], atol=1e-6)
        else:
            assert np.abs(y2[:, :9] - y[:, :9]).max() > 1e-3
    one_way = make_layer(16, bidirectional=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(one_way(changed, changed))[:, :9],
        keras.ops.convert_to_numpy(one_way(x, x))[:, :9],
        atol=1e-6,
    )
    return one_way


def assert_outputs_ignore_the_padded_length(layer, dim):
    """The same sentence padded (with 7s) from 11 to 20 positions gives the same outputs at
    its real positions, in both directions, and zeros at the padded ones: the mixing is a
    linear (not circular) convolution or a scan, masked."""
    x = np.random.default_rng(2).normal(size=(1, 11, dim)).astype("float32")
    y_short = keras.ops.convert_to_numpy(layer(x, x))
    padded = np.concatenate([x, np.full((1, 9, dim), 7.0, "float32")], axis=1)
    mask = lengths_mask([11], 20)
    y_long = keras.ops.convert_to_numpy(layer(padded, padded, query_mask=mask, value_mask=mask))
    np.testing.assert_allclose(y_long[:, :11], y_short, atol=1e-5)
    np.testing.assert_array_equal(y_long[:, 11:], 0.0)


def recurrence_of_layer(layer, u, causal):
    """The scan's output (`layer.recurrence`, before the nonlinearity) for numpy `u`."""
    return keras.ops.convert_to_numpy(layer.recurrence(keras.ops.convert_to_tensor(u), causal))


# Builds `get_attention(name, **config)` for each config, sets its weights from numpy (Keras'
# seeded initializers draw differently per backend) and saves the masked outputs, not causal
# then causal, of every config stacked into one array.
_BACKEND_SCRIPT = """
import sys
import keras
import numpy as np
from lra_keras.layers import get_attention
outs = []
for config in {configs!r}:
    layer = get_attention({name!r}, **config)
    x = np.random.default_rng(0).normal(size=(2, 19, 6)).astype("float32")
    m = np.arange(19)[None] < np.array([[19], [11]])
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    layer.set_weights([rng.normal(size=w.shape) * 0.5 for w in layer.get_weights()])
    for causal in (False, True):
        y = layer(x, x, query_mask=m, value_mask=m, use_causal_mask=causal)
        outs.append(keras.ops.convert_to_numpy(y))
np.save(sys.argv[1], np.stack(outs))
"""


def assert_jax_matches_tensorflow(name: str, configs, directory) -> None:
    """The variant `name` built from each config gives the same outputs (masked, causal and
    not) on the JAX and TensorFlow backends, each run in a fresh process on CPU."""
    code = _BACKEND_SCRIPT.format(name=name, configs=list(configs))
    outputs = {}
    for backend in ("jax", "tensorflow"):
        path = os.path.join(str(directory), f"{backend}.npy")
        env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
        subprocess.run([sys.executable, "-c", code, path], env=env, check=True, timeout=300)
        outputs[backend] = np.load(path)
    np.testing.assert_allclose(outputs["jax"], outputs["tensorflow"], atol=1e-5)
