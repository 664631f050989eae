"""S4D against the paper's definitions, run step by step in numpy (complex128)."""

import math

import keras
import numpy as np
import pytest

from lra_keras.layers import S4DMixing, get_attention
from tests.layers.state_space_testing import (
    assert_causal_and_bidirectional,
    assert_jax_matches_tensorflow,
    assert_outputs_ignore_the_padded_length,
    assert_parallel_equals_loop,
    move_weights,
    weights,
)

DIM, STATE = 6, 8


def make_layer(length=9, **kwargs):
    kwargs.setdefault("state_dim", STATE)
    kwargs.setdefault("seed", 7)
    layer = S4DMixing(**kwargs)
    layer.build((2, length, DIM))
    # Move A, B and dt off their initial values so that every parameter is exercised.
    rng = move_weights((layer.log_a_real, layer.a_imag, layer.b_real, layer.b_imag), scale=0.3)
    layer.log_dt.assign(rng.uniform(math.log(0.01), math.log(0.3), size=DIM).astype("float32"))
    return layer


def ssm_parameters(layer):
    """The paper's continuous parameters and their zero-order-hold discretisation, complex128."""
    w = weights(layer)
    a = -np.exp(w["log_a_real"]) + 1j * w["a_imag"]  # [H, N/2]
    dt = np.exp(w["log_dt"])[:, None]
    b = w["b_real"] + 1j * w["b_imag"]
    c = w["c_real"] + 1j * w["c_imag"]  # [dirs, H, N/2]
    a_bar = np.exp(dt * a)
    b_bar = (a_bar - 1.0) / a * b
    # The conjugate modes that the layer leaves implicit: N states per channel, a real output.
    a_bar, b_bar = (
        np.concatenate([a_bar, a_bar.conj()], -1),
        np.concatenate([b_bar, b_bar.conj()], -1),
    )
    c = np.concatenate([c, c.conj()], -1)
    return a_bar, b_bar, c, w["d_skip"], w


def recurrence(u, a_bar, b_bar, c):
    """x_k = A_bar x_{k-1} + B_bar u_k, y_k = Re(C x_k), one step at a time; u [L, H]."""
    x = np.zeros(a_bar.shape, complex)
    out = np.zeros(u.shape)
    for k in range(u.shape[0]):
        x = a_bar * x + b_bar * u[k][:, None]
        out[k] = np.real(np.sum(c * x, -1))
    return out


def reference_ssm(u, layer, causal):
    """The SSM part (before the activation) for one sequence u [L, H], from the recurrence."""
    a_bar, b_bar, c, d, _ = ssm_parameters(layer)
    y = recurrence(u, a_bar, b_bar, c[0])
    if layer.bidirectional and not causal:
        # The backward SSM runs from the end; position t receives the state after u_{t+1}.
        back = recurrence(u[::-1], a_bar, b_bar, c[1])[::-1]
        y[:-1] += back[1:]
    return y + d * u


def reference_layer(u, layer, causal=False):
    """The whole layer: SSM, exact GELU, Dense(2H) and GLU, in numpy."""
    from scipy.special import erf

    _, _, _, _, w = ssm_parameters(layer)
    y = reference_ssm(u, layer, causal)
    y = 0.5 * y * (1.0 + erf(y / np.sqrt(2.0)))
    y = y @ w["output_linear/kernel"] + w["output_linear/bias"]
    a, b = y[:, :DIM], y[:, DIM:]
    return a / (1.0 + np.exp(-b))


def ssm_of_layer(layer, u, causal):
    """The layer's FFT path with the D skip, before the activation: [batch, L, H]."""
    conv = layer._convolve(keras.ops.convert_to_tensor(u), causal=causal)
    return keras.ops.convert_to_numpy(conv) + u * layer.d_skip.numpy()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 9, 50])
def test_fft_path_equals_the_recurrence(length, causal):
    layer = make_layer(length)
    label = "recurrence vs FFT"
    assert_parallel_equals_loop(label, ssm_of_layer, reference_ssm, layer, length, causal, DIM)


def test_whole_layer_equals_reference():
    layer = make_layer(12)
    u = np.random.default_rng(1).normal(size=(2, 12, DIM)).astype("float32")
    for causal in (False, True):
        got = keras.ops.convert_to_numpy(layer(u, u, use_causal_mask=causal))
        want = np.stack([reference_layer(x.astype(np.float64), layer, causal) for x in u])
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("length", [1, 2, 37, 1000])
def test_kernel_equals_the_vandermonde_formula(length):
    layer = make_layer(length)
    a_bar, b_bar, c, _, _ = ssm_parameters(layer)
    # K_l = Re(sum_n C_n B_bar_n A_bar_n^l), over all N modes (conjugates included).
    powers = a_bar[..., None] ** np.arange(length)
    want = np.real(np.einsum("dhn,hnl->dhl", c * b_bar[None], powers))
    got = keras.ops.convert_to_numpy(layer.convolution_kernel(length))
    assert got.shape == (2, DIM, length)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_kernel_with_unknown_length_in_a_graph():
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("drives tf.function")
    layer = make_layer(9)
    fn = tf.function(layer.convolution_kernel, input_signature=[tf.TensorSpec((), tf.int32)])
    for length in (5, 23):
        np.testing.assert_allclose(
            fn(tf.constant(length)).numpy(),
            keras.ops.convert_to_numpy(layer.convolution_kernel(length)),
            atol=1e-6,
        )


@pytest.mark.parametrize("init", ["lin", "inv"])
def test_initialisation_follows_the_paper(init):
    n = 16
    layer = S4DMixing(state_dim=n, init=init, seed=2)
    layer.build((1, 4, DIM))
    index = np.arange(n // 2)
    if init == "lin":
        imag = np.pi * index
    else:
        imag = n / np.pi * (n / (2 * index + 1) - 1)
    np.testing.assert_allclose(layer.a_imag.numpy(), np.broadcast_to(imag, (DIM, n // 2)), 1e-6)
    np.testing.assert_allclose(-np.exp(layer.log_a_real.numpy()), -0.5, rtol=1e-6)
    log_dt = layer.log_dt.numpy()
    assert np.all(log_dt >= math.log(0.001)) and np.all(log_dt <= math.log(0.1))
    assert len(set(np.round(log_dt, 6))) == DIM
    # Seeded weights are drawn with distinct seeds: C's real and imaginary parts differ.
    assert not np.allclose(layer.c_real.numpy(), layer.c_imag.numpy())
    assert not np.allclose(layer.c_real.numpy()[0], layer.c_real.numpy()[1])


def test_strictly_causal_and_bidirectional_sees_the_future():
    one_way = assert_causal_and_bidirectional(make_layer, DIM)
    assert one_way.c_real.shape[0] == 1


def test_real_outputs_do_not_depend_on_the_padded_length():
    # Unlike FNet, the convolution is linear (not circular): the same sentence padded to two
    # lengths gives the same outputs, in both directions.
    assert_outputs_ignore_the_padded_length(make_layer(20), DIM)


def test_state_space_variables_and_bad_arguments():
    layer = make_layer(4)
    names = sorted(v.path.split("/")[-1] for v in layer.state_space_variables)
    assert names == ["a_imag", "b_imag", "b_real", "log_a_real", "log_dt"]
    for bad, match in (
        ({"state_dim": 7}, "state_dim.*even"),
        ({"init": "legs"}, "init"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"activation": "softmax"}, "activation"),
        ({"ssm_learning_rate": 0.0}, "ssm_learning_rate"),
    ):
        with pytest.raises(ValueError, match=match):
            S4DMixing(**bad)
    with pytest.raises(ValueError, match="output_shape"):
        get_attention("s4d", output_shape=5)(
            np.zeros((1, 3, 4), "float32"), np.zeros((1, 3, 4), "float32")
        )


@pytest.mark.slow
def test_jax_backend_matches_tensorflow(tmp_path):
    """The layer on the JAX backend (fresh process) gives the TensorFlow backend's outputs.

    The weights are set from numpy: Keras' seeded initializers draw differently per backend.
    """
    assert_jax_matches_tensorflow("s4d", [{"state_dim": 8, "seed": 5}], tmp_path)
