"""S5 against the paper's definitions, run step by step in numpy (complex128)."""

import math

import keras
import numpy as np
import pytest

from lra_keras.layers import S5Mixing, get_attention
from tests.layers.state_space_testing import (
    assert_causal_and_bidirectional,
    assert_masked_layer_equals_reference,
    assert_parallel_equals_loop,
    move_weights,
    recurrence_of_layer,
    sequence_layer,
    weights,
)

DIM, STATE, BLOCKS = 6, 8, 2


def make_layer(length=9, **kwargs):
    kwargs.setdefault("state_dim", STATE)
    kwargs.setdefault("blocks", BLOCKS)
    kwargs.setdefault("seed", 7)
    layer = S5Mixing(**kwargs)
    layer.build((2, length, DIM))
    # Move every parameter off its initial value, and the steps into [0.01, 0.3].
    rng = move_weights(layer.weights)
    steps = rng.uniform(math.log(0.01), math.log(0.3), size=layer.log_step.shape)
    layer.log_step.assign(steps.astype("float32"))
    return layer


def discretised_system(layer):
    """Smith et al. (2023), section 3 and appendix: the full (conjugate-completed) system.

    Lambda = Re + i Im (Re clipped to <= -1e-4 with clip_eigs); zero-order hold with
    Delta = exp(log_step): Lambda_bar = exp(Lambda Delta), B_bar = Lambda^-1 (Lambda_bar - I)
    B_tilde. The layer stores P/2 modes; the conjugate modes are appended here, so that the
    output is the real system's Re(C x) with no factor 2.
    """
    w = weights(layer)
    re = np.minimum(w["lambda_re"], -1e-4) if layer.clip_eigs else w["lambda_re"]
    lam = re + 1j * w["lambda_im"]
    delta = np.exp(w["log_step"])
    lam_bar = np.exp(lam * delta)
    b_tilde = w["b"][..., 0] + 1j * w["b"][..., 1]  # [P/2, H]
    b_bar = ((lam_bar - 1.0) / lam)[:, None] * b_tilde
    c = w["c"][..., 0] + 1j * w["c"][..., 1]  # [dirs, H, P/2]
    full = (
        np.concatenate([lam_bar, lam_bar.conj()]),
        np.concatenate([b_bar, b_bar.conj()]),
        np.concatenate([c, c.conj()], axis=-1),
    )
    return full, w


def recurrence(u, lam_bar, b_bar, c):
    """x_k = Lambda_bar x_{k-1} + B_bar u_k, y_k = C x_k (real: its imaginary part ~ 0)."""
    x = np.zeros(lam_bar.shape, complex)
    out = np.zeros(u.shape, complex)
    for k in range(u.shape[0]):
        x = lam_bar * x + b_bar @ u[k]
        out[k] = c @ x
    assert np.abs(out.imag).max() < 1e-9 * max(1.0, np.abs(out).max())
    return out.real


def reference_ssm(u, layer, causal=False):
    (lam_bar, b_bar, c), w = discretised_system(layer)
    y = recurrence(u, lam_bar, b_bar, c[0])
    if layer.bidirectional and not causal:
        # S5's bidirectional: the same system from the end with its own C; both include u_k.
        y += recurrence(u[::-1], lam_bar, b_bar, c[1])[::-1]
    return y + w["d_skip"] * u


def reference_layer(u, layer, causal=False):
    """S5's SequenceLayer (s5/layers.py) after the SSM, with its activation choices."""
    return sequence_layer(reference_ssm(u, layer, causal), layer)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 2, 9, 50])
def test_scan_equals_the_recurrence(length, causal):
    layer = make_layer(length)
    scan = recurrence_of_layer
    assert_parallel_equals_loop("S5 scan vs loop", scan, reference_ssm, layer, length, causal, DIM)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"activation": "half_glu2", "C_init": "lecun_normal"},
        {"activation": "full_glu", "C_init": "complex_normal", "clip_eigs": True},
        {"activation": "gelu", "blocks": 1},
    ],
)
def test_whole_layer_with_masks_equals_reference(overrides):
    layer = make_layer(12, **overrides)
    if layer.clip_eigs:
        # One eigenvalue in the right half-plane, which the clip must pull back.
        layer.lambda_re.assign(np.where(np.arange(4) == 0, 0.3, -0.5).astype("float32"))
    assert_masked_layer_equals_reference(layer, reference_layer, DIM)


def hippo_legs_normal_eigenvalues(n):
    """Eigenvalues of HiPPO-LegS + P P^T (Gu et al. 2022; S5 section 4.1), from the definition.

    A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k); P_n = sqrt(n + 1/2).
    """
    a = np.zeros((n, n))
    for i in range(n):
        for k in range(n):
            if i > k:
                a[i, k] = -math.sqrt(2 * i + 1) * math.sqrt(2 * k + 1)
            elif i == k:
                a[i, k] = -(i + 1)
    p = np.sqrt(np.arange(n) + 0.5)
    return np.linalg.eigvals(a + np.outer(p, p))


@pytest.mark.parametrize("state_dim,blocks", [(16, 1), (16, 2), (24, 3)])
def test_lambda_starts_from_block_diagonal_hippo_n(state_dim, blocks):
    layer = S5Mixing(state_dim=state_dim, blocks=blocks, seed=2)
    layer.build((1, 4, DIM))
    w = weights(layer)
    size = state_dim // blocks
    eig = hippo_legs_normal_eigenvalues(size)
    np.testing.assert_allclose(eig.real, -0.5, atol=1e-8)
    # One of each conjugate pair per block (the negative imaginary parts), `blocks` times.
    kept = np.sort(eig.imag[eig.imag < 0])
    np.testing.assert_allclose(w["lambda_re"], -0.5, atol=1e-6)
    for j in range(blocks):
        block = w["lambda_im"][j * size // 2 : (j + 1) * size // 2]
        np.testing.assert_allclose(np.sort(block), kept, rtol=1e-5, atol=1e-5)
    # One timescale per stored state, log-uniform in [dt_min, dt_max].
    assert w["log_step"].shape == (state_dim // 2,)
    assert w["log_step"].min() >= math.log(0.001) and w["log_step"].max() <= math.log(0.1)
    assert len(np.unique(np.round(w["log_step"], 6))) == state_dim // 2


def test_b_tilde_is_v_inverse_of_a_real_b():
    # B_tilde = V^-1 B for a real B: completed with the conjugate modes, V B_tilde is real.
    layer = S5Mixing(state_dim=16, blocks=2, seed=5)
    layer.build((1, 4, DIM))
    w = weights(layer)
    _, v = layer.initial_eigensystem()  # [P, P/2]
    b_tilde = w["b"][..., 0] + 1j * w["b"][..., 1]
    b = v @ b_tilde + v.conj() @ b_tilde.conj()
    assert np.abs(b.imag).max() < 1e-5
    # LeCun normal over fan-in P (truncated at 2 sigma): standard deviation ~ 1/sqrt(P).
    assert 0.5 / math.sqrt(16) < np.std(b.real) < 1.5 / math.sqrt(16)


def test_unidirectional_is_causal_and_bidirectional_sees_the_future():
    one_way = assert_causal_and_bidirectional(make_layer, DIM)
    assert one_way.c.shape[0] == 1


def test_state_space_variables():
    names = sorted(v.path.split("/")[-1] for v in make_layer(4).state_space_variables)
    assert names == ["b", "lambda_im", "lambda_re", "log_step"]


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"state_dim": 8.5}, "state_dim"),
        ({"blocks": 3}, "blocks"),  # 8 / 3
        ({"state_dim": 12, "blocks": 4}, "blocks"),  # blocks of 3: odd
        ({"blocks": 0}, "blocks"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"dt_min": 0.0}, "dt_min"),
        ({"C_init": "normal"}, "C_init"),
        ({"activation": "glu"}, "activation"),
        ({"ssm_learning_rate": -1.0}, "ssm_learning_rate"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(bad, match):
    kwargs = {"state_dim": STATE, "blocks": BLOCKS}
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        S5Mixing(**kwargs)


def test_mixed_precision_keeps_the_recurrence_in_float32():
    x = np.random.default_rng(0).normal(size=(2, 64, DIM)).astype("float32")
    reference = get_attention("s5", state_dim=8, blocks=2, seed=4)
    y32 = keras.ops.convert_to_numpy(reference(x, x))
    layer = get_attention("s5", state_dim=8, blocks=2, seed=4, dtype="mixed_float16")
    layer(x, x)
    layer.set_weights(reference.get_weights())
    y = layer(x, x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert all(v.dtype == "float32" for v in layer.state_space_variables + [layer.c])
    y = keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
    error = np.abs(y - y32).max() / np.abs(y32).max()
    assert error < 2e-3
