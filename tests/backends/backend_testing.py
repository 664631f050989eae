"""Backend-neutral test helpers: gradients and compilation on the current Keras backend.

The layer and zoo suites run under `KERAS_BACKEND=tensorflow` and `KERAS_BACKEND=jax`
(`make test`); tests that need gradients or a compiled function go through these instead of
`tf.GradientTape` / `tf.function`, so they import no TensorFlow on JAX.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


def tensorflow_only(reason: str):
    """Skips a test that is TensorFlow-specific by nature (tf.data, SavedModel, tf.function)."""
    return pytest.mark.skipif(BACKEND != "tensorflow", reason=f"TensorFlow only: {reason}")


def to_numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def loss_and_grads(fn, inputs, variables=()):
    """`fn(*inputs) -> (loss, aux)`; returns numpy (aux, [d loss/d input..., d/d var...]).

    `inputs` are numpy arrays (differentiated), `variables` Keras variables read by `fn`.
    """
    variables = list(variables)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss, out = fn(*tensors)
        grads = tape.gradient(loss, tensors + variables)
        grads = [None if g is None else to_numpy(tf.convert_to_tensor(g)) for g in grads]
        return keras.tree.map_structure(to_numpy, out), grads
    if BACKEND == "jax":
        import jax

        def wrapped(values, tensors):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                loss, out = fn(*tensors)
            return loss, out

        values = [v.value for v in variables]
        tensors = [jax.numpy.asarray(x) for x in inputs]
        # Compiled: eager JAX would compile every small op of a Python-unrolled loop apart.
        step = jax.jit(jax.value_and_grad(wrapped, argnums=(0, 1), has_aux=True))
        (_, out), (g_vars, g_inputs) = step(values, tensors)
        grads = [to_numpy(g) for g in list(g_inputs) + list(g_vars)]
        return keras.tree.map_structure(to_numpy, out), grads
    pytest.skip(f"no gradient helper for the {BACKEND} backend")


def compiled(fn):
    """`fn` compiled by the backend's XLA (tf.function(jit_compile=True) or jax.jit)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    pytest.skip(f"no compiler for the {BACKEND} backend")
