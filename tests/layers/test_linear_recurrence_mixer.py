"""The parallel scan of the diagonal recurrence (lru, s5) against a Python loop over time."""

import keras
import numpy as np
import pytest

from lra_keras.layers.attention import linear_recurrence_mixer as scans

tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="drives TensorFlow directly"
)
STATES = 3
LENGTHS = [1, 2, 3, 7, 8, 64, 101]


def loop(lam, b, reverse):
    """x_k = lam x_{k-1} + b_k (x_k = lam x_{k+1} + b_k with `reverse`), one step at a time."""
    steps = range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])
    x = np.zeros((b.shape[0], b.shape[2]), complex)
    out = np.zeros(b.shape, complex)
    for k in steps:
        x = lam * x + b[:, k]
        out[:, k] = x
    return out


def problem(length, seed=0):
    rng = np.random.default_rng(seed)
    # Radii near 1 (long memory) and any phase, as the LRU and S5 use them.
    lam = rng.uniform(0.9, 0.999, STATES) * np.exp(1j * rng.uniform(0, 2 * np.pi, STATES))
    b = rng.normal(size=(2, length, STATES)) + 1j * rng.normal(size=(2, length, STATES))
    return lam, b


def parts(z):
    return z.real.astype("float32"), z.imag.astype("float32")


def joined(pair):
    return keras.ops.convert_to_numpy(pair[0]) + 1j * keras.ops.convert_to_numpy(pair[1])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", LENGTHS)
def test_diagonal_scan_equals_the_loop(length, reverse):
    lam, b = problem(length)
    got = joined(scans.diagonal_scan(*parts(lam), *parts(b), reverse=reverse))
    np.testing.assert_allclose(got, loop(lam, b, reverse), atol=2e-5)


@pytest.mark.parametrize("length", LENGTHS)
def test_each_scan_form_equals_the_loop(length):
    # The doubling scans (TensorFlow's), and Keras's associative scan over real and imaginary
    # parts (torch's) and in complex64 (JAX's), on any backend that runs them.
    lam, b = problem(length, seed=1)
    want = loop(lam, b, False)
    step, b_parts = [[keras.ops.convert_to_tensor(x) for x in parts(z)] for z in (lam, b)]
    np.testing.assert_allclose(joined(scans._doubling_scan(step, b_parts)), want, atol=2e-5)
    unrolled = scans._unrolled_doubling_scan(step, b_parts, length)
    np.testing.assert_allclose(joined(unrolled), want, atol=2e-5)
    if keras.backend.backend() == "tensorflow":
        return  # Keras's associative scan does not run here (see `diagonal_scan`)
    ones = keras.ops.ones((1, length, 1))
    elems = (ones * step[0], ones * step[1], *b_parts)
    got = keras.ops.associative_scan(scans._combine, elems, axis=1)[2:]
    np.testing.assert_allclose(joined(got), want, atol=2e-5)
    if keras.backend.backend() == "jax":
        elems = (np.ones((1, length, 1), "complex64") * lam, b.astype("complex64"))
        got = keras.ops.associative_scan(scans._combine_complex, elems, axis=1)[1]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, atol=2e-5)


def scan_of(lam, reverse):
    lam_re, lam_im = parts(lam)
    return lambda b_re, b_im: scans.diagonal_scan(lam_re, lam_im, b_re, b_im, reverse=reverse)


@tensorflow_only
@pytest.mark.parametrize("reverse", [False, True])
def test_unknown_length_and_xla_on_tensorflow(reverse):
    import tensorflow as tf

    spec = tf.TensorSpec((None, None, STATES))
    lam, b = problem(13, seed=13)
    want = loop(lam, b, reverse)
    scan = scan_of(lam, reverse)
    unknown = tf.function(scan, input_signature=[spec, spec])
    np.testing.assert_allclose(joined(unknown(*parts(b))), want, atol=2e-5)
    compiled = tf.function(scan, jit_compile=True)
    np.testing.assert_allclose(joined(compiled(*parts(b))), want, atol=2e-5)
