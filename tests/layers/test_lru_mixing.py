"""The LRU against the paper's recurrence, run step by step in numpy (complex128)."""

import math

import keras
import numpy as np
import pytest

from lra_keras.layers import LRUMixing, get_attention
from lra_keras.training.optimizers import GroupedAdamW, build_optimizer
from tests.layers.state_space_testing import (
    assert_causal_and_bidirectional,
    assert_masked_layer_equals_reference,
    assert_parallel_equals_loop,
    move_weights,
    recurrence_of_layer,
    sequence_layer,
    weights,
)

DIM, STATE = 6, 8


def make_layer(length=9, **kwargs):
    kwargs.setdefault("state_dim", STATE)
    kwargs.setdefault("seed", 7)
    layer = LRUMixing(**kwargs)
    layer.build((2, length, DIM))
    move_weights(layer.weights)
    return layer


def lru_recurrence(u, nu_log, theta_log, gamma_log, b, c):
    """Orvieto et al. (2023), eq. (1) and section 3: one sequence u [L, H], one direction.

    lambda = exp(-exp(nu) + i exp(theta)); x_k = lambda x_{k-1} + gamma (B u_k);
    returns Re(C x_k) [L, H].
    """
    lam = np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))
    gamma = np.exp(gamma_log)
    x = np.zeros(lam.shape, complex)
    out = np.zeros(u.shape)
    for k in range(u.shape[0]):
        x = lam * x + gamma * (b @ u[k])
        out[k] = np.real(c @ x)
    return out


def reference_ssm(u, layer, causal=False):
    """The recurrence's output with the D skip, before the nonlinearity, for u [L, H]."""
    w = weights(layer)
    b = w["b"][..., 0] + 1j * w["b"][..., 1]  # [N, H]
    c = w["c"][..., 0] + 1j * w["c"][..., 1]  # [dirs, H, N]
    params = (w["nu_log"], w["theta_log"], w["gamma_log"], b)
    y = lru_recurrence(u, *params, c[0])
    if layer.bidirectional and not causal:
        # The backward recurrence runs from the end; step k includes u_k, as the forward one.
        y += lru_recurrence(u[::-1], *params, c[1])[::-1]
    return y + w["d_skip"] * u


def reference_layer(u, layer, causal=False):
    """The whole layer: recurrence, GELU, then the gate of `layer.activation`."""
    return sequence_layer(reference_ssm(u, layer, causal), layer)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 2, 9, 50])
def test_scan_equals_the_recurrence(length, causal):
    layer = make_layer(length)
    scan = recurrence_of_layer
    assert_parallel_equals_loop("LRU scan vs loop", scan, reference_ssm, layer, length, causal, DIM)


@pytest.mark.parametrize("activation", ["full_glu", "half_glu1", "half_glu2", "gelu"])
def test_whole_layer_with_masks_equals_reference(activation):
    layer = make_layer(12, activation=activation)
    assert_masked_layer_equals_reference(layer, reference_layer, DIM)


def test_unidirectional_is_causal_and_bidirectional_sees_the_future():
    one_way = assert_causal_and_bidirectional(make_layer, DIM)
    assert one_way.c.shape[0] == 1


def test_ring_initialisation_and_normalisation():
    r_min, r_max, max_phase = 0.4, 0.8, math.pi / 4
    layer = LRUMixing(state_dim=512, r_min=r_min, r_max=r_max, max_phase=max_phase, seed=2)
    layer.build((1, 4, DIM))
    w = weights(layer)
    lam = np.exp(-np.exp(w["nu_log"]) + 1j * np.exp(w["theta_log"]))
    radius, phase = np.abs(lam), np.angle(lam) % (2 * np.pi)
    assert radius.min() >= r_min - 1e-6 and radius.max() <= r_max + 1e-6
    assert phase.min() >= 0 and phase.max() <= max_phase + 1e-6
    # Uniform on the ring: |lambda|^2 uniform in [r_min^2, r_max^2] (mean and spread).
    assert abs(np.mean(radius**2) - (r_min**2 + r_max**2) / 2) < 0.02
    assert abs(np.mean(phase) - max_phase / 2) < 0.05
    np.testing.assert_allclose(np.exp(w["gamma_log"]), np.sqrt(1 - radius**2), rtol=1e-5)
    # B and C: complex normal with variance 1/(2H) and 1/N in each part; D standard normal.
    assert abs(np.std(w["b"]) - 1 / np.sqrt(2 * DIM)) < 0.02
    assert abs(np.std(w["c"]) - 1 / np.sqrt(512)) < 0.005
    assert not np.allclose(w["b"][..., 0], w["b"][..., 1])


def test_long_memory_stays_finite_and_normalised():
    # |lambda| close to 1: gamma keeps the state's scale; 2000 steps in float32 stay finite.
    layer = LRUMixing(state_dim=16, r_min=0.999, r_max=0.9999, seed=1)
    x = np.random.default_rng(0).normal(size=(1, 2000, DIM)).astype("float32")
    layer.build(x.shape)
    y = keras.ops.convert_to_numpy(layer.recurrence(keras.ops.convert_to_tensor(x)))
    assert np.all(np.isfinite(y)) and np.abs(y).max() < 100


def test_state_space_variables_reach_the_grouped_optimizer():
    layer = make_layer(4)
    names = sorted(v.path.split("/")[-1] for v in layer.state_space_variables)
    assert names == ["gamma_log", "nu_log", "theta_log"]
    inputs = keras.Input((4, DIM))
    model = keras.Model(inputs, get_attention("lru", state_dim=4, seed=1)(inputs, inputs))
    optimizer = build_optimizer(model, 1e-2, learning_rate=1e-2, weight_decay=0.1)
    assert isinstance(optimizer, GroupedAdamW)
    optimizer.build(model.trainable_variables)
    multipliers = {
        v.path.split("/")[-1]: optimizer.learning_rate_multiplier(v)
        for v in model.trainable_variables
    }
    assert {k: m for k, m in multipliers.items() if m != 1.0} == {
        "gamma_log": pytest.approx(0.1),
        "nu_log": pytest.approx(0.1),
        "theta_log": pytest.approx(0.1),
    }


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"state_dim": 0}, "state_dim"),
        ({"state_dim": 4.0}, "state_dim"),
        ({"r_min": 0.9, "r_max": 0.5}, "r_min.*r_max"),
        ({"r_max": 1.0}, "r_max"),
        ({"r_min": -0.1}, "r_min"),
        ({"r_min": "0.5"}, "r_min"),
        ({"max_phase": 0.0}, "max_phase"),
        ({"max_phase": 7.0}, "max_phase"),
        ({"activation": "relu"}, "activation"),
        ({"ssm_learning_rate": 0.0}, "ssm_learning_rate"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(bad, match):
    with pytest.raises(ValueError, match=match):
        LRUMixing(**bad)


def test_mixed_precision_keeps_the_recurrence_in_float32():
    x = np.random.default_rng(0).normal(size=(2, 64, DIM)).astype("float32")
    reference = get_attention("lru", state_dim=8, r_min=0.99, r_max=0.999, seed=4)
    y32 = keras.ops.convert_to_numpy(reference(x, x))
    layer = get_attention(
        "lru", state_dim=8, r_min=0.99, r_max=0.999, seed=4, dtype="mixed_bfloat16"
    )
    layer(x, x)
    layer.set_weights(reference.get_weights())
    y = layer(x, x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert all(v.dtype == "float32" for v in layer.state_space_variables + [layer.b, layer.c])
    y = keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
    error = np.abs(y - y32).max() / np.abs(y32).max()
    assert error < 2e-2
