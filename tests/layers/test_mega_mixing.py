"""Mega against the paper's definitions, written out in numpy (float64, Python loops)."""

import math

import keras
import numpy as np
import pytest
from scipy.special import erf

from lra_keras.layers import MegaMixing, get_attention
from lra_keras.training.optimizers import GroupedAdamW, build_optimizer
from tests.layers.reference import lengths_mask
from tests.layers.state_space_testing import (
    assert_jax_matches_tensorflow,
    assert_outputs_ignore_the_padded_length,
    assert_parallel_equals_loop,
    move_weights,
    sigmoid,
    silu,
    weights,
)

DIM, EMA, Z, HIDDEN = 6, 4, 4, 10


def make_layer(length=13, **kwargs):
    kwargs.setdefault("ema_dim", EMA)
    kwargs.setdefault("z_dim", Z)
    kwargs.setdefault("hidden_dim", HIDDEN)
    kwargs.setdefault("seed", 7)
    layer = MegaMixing(**kwargs)
    layer.build((2, length, DIM))
    # Move every weight off its initial value (the Q/K scales and the biases start at ~0 or 0,
    # which would hide a wrong term); decays stay in (0, 1) through the sigmoids.
    move_weights(layer.weights, scale=lambda var: 0.5 if "projection" in var.path else 0.8)
    return layer


# ------------------------------------------------------------------ the EMA, step by step


def ema_parameters(layer, direction):
    """alpha, delta, beta, eta `[dim, h]` of one direction, float64, as the paper names them."""
    w = weights(layer)
    return (
        sigmoid(w["alpha_logit"][direction]),
        sigmoid(w["delta_logit"][direction]),
        w["beta"][direction],
        w["eta"][direction],
    )


def ema_forward(x, alpha, delta, beta, eta):
    """u_t = beta x_t; h_t = alpha u_t + (1 - alpha delta) h_{t-1}; y_t = eta . h_t / sqrt(h)."""
    h = np.zeros(alpha.shape)
    out = np.zeros(x.shape)
    for t in range(x.shape[0]):
        u = beta * x[t][:, None]
        h = alpha * u + (1.0 - alpha * delta) * h
        out[t] = np.sum(eta * h, -1) / math.sqrt(alpha.shape[-1])
    return out


def ema_backward(x, alpha, delta, beta, eta):
    """The same EMA run from the end; position t gets the state after x_{t+1}, decayed once
    (Mega's shifted backward EMA: x_t itself enters through the forward one only)."""
    h = np.zeros(alpha.shape)
    out = np.zeros(x.shape)
    for t in reversed(range(x.shape[0])):
        out[t] = np.sum(eta * (1.0 - alpha * delta) * h, -1) / math.sqrt(alpha.shape[-1])
        h = alpha * beta * x[t][:, None] + (1.0 - alpha * delta) * h
    return out


def reference_ema(x, layer, causal):
    """EMA(X) + omega X for one sequence x [L, dim] (before Mega's SiLU)."""
    y = ema_forward(x, *ema_parameters(layer, 0))
    if layer.bidirectional and not causal:
        y = y + ema_backward(x, *ema_parameters(layer, 1))
    return y + x * weights(layer)["omega"]


def ema_of_layer(layer, x, causal):
    return keras.ops.convert_to_numpy(layer.ema(keras.ops.convert_to_tensor(x), causal))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 9, 50])
def test_ema_equals_the_recurrence(length, causal):
    layer = make_layer(length)
    label = "EMA recurrence vs FFT"
    assert_parallel_equals_loop(label, ema_of_layer, reference_ema, layer, length, causal, DIM)


def test_one_directional_ema_is_the_forward_recurrence():
    layer = make_layer(20, bidirectional=False)
    assert layer.alpha_logit.shape[0] == 1
    x = np.random.default_rng(0).normal(size=(1, 20, DIM)).astype("float32")
    got = keras.ops.convert_to_numpy(layer.ema(keras.ops.convert_to_tensor(x), False))
    np.testing.assert_allclose(
        got[0], reference_ema(x[0].astype(np.float64), layer, True), atol=2e-5, rtol=1e-4
    )


def test_truncated_kernel_keeps_the_first_lags():
    layer = make_layer(30, truncation=7)
    alpha, delta, beta, eta = ema_parameters(layer, 1)
    # K_t = sum_j eta_j alpha_j beta_j (1 - alpha_j delta_j)^t / sqrt(h), for t < 7 only.
    lags = np.arange(30)
    want = np.einsum("dh,dhl->dl", eta * alpha * beta, (1 - alpha * delta)[..., None] ** lags)
    want = np.where(lags < 7, want / math.sqrt(EMA), 0.0)
    got = keras.ops.convert_to_numpy(layer.ema_kernel(30))[1]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    # And applied: the output at t sees x_s for |t - s| < 7 only, in both directions.
    x = np.zeros((1, 30, DIM), "float32")
    x[0, 15] = 1.0
    y = keras.ops.convert_to_numpy(layer.ema(keras.ops.convert_to_tensor(x), False))[0]
    touched = np.flatnonzero(np.abs(y).max(-1) > 1e-7)
    assert touched.min() == 15 - 6 and touched.max() == 15 + 6


# ------------------------------------------------------------------ the whole layer


def reference_bias(layer, size):
    """b_rel [size, size] for positions 0..size-1 of one chunk."""
    w = weights(layer)
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    if layer.relative_position == "simple":
        span = layer.chunk_size or layer.max_positions
        return w["position_bias"][np.clip(j - i, 1 - span, span - 1) + span - 1]
    half = layer.z_dim // 2
    theta = 10000.0 ** (-np.arange(half) / half)

    def rotate(v, n):  # RoPE of the vector v at position n
        c, s = np.cos(n * theta), np.sin(n * theta)
        return np.concatenate([v[:half] * c - v[half:] * s, v[half:] * c + v[:half] * s])

    a = np.stack([rotate(w["rotary_a"], n) for n in range(size)])
    b = np.stack([rotate(w["rotary_b"], n) for n in range(size)])
    return a @ b.T


def reference_layer(x, mask, layer, causal=False):
    """Mega's equations (6)-(15) for one sequence x [L, dim] with its padding mask [L].

    Attention over the whole sequence with a block-diagonal allowed pattern (query and key in
    the same chunk of `chunk_size`), written without reshaping into chunks.
    """
    w = weights(layer)
    length = x.shape[0]
    x = np.where(mask[:, None], x, 0.0)
    xp = silu(reference_ema(x, layer, causal))  # X'
    d, z_dim, hidden = DIM, layer.z_dim, layer.hidden_dim
    shared = xp @ w["shared_projection/kernel"] + w["shared_projection/bias"]
    phi = sigmoid(shared[:, :d])
    z = silu(shared[:, d : d + z_dim])
    gamma = silu(shared[:, d + z_dim : d + z_dim + hidden])
    hx = shared[:, d + z_dim + hidden :]
    q = z * w["qk_scale"][0] + w["qk_offset"][0]
    k = z * w["qk_scale"][1] + w["qk_offset"][1]
    v = silu(x @ w["value_projection/kernel"] + w["value_projection/bias"])
    chunk = layer.chunk_size or length
    pos = np.arange(length)
    allowed = (pos[:, None] // chunk == pos[None, :] // chunk) & mask[None, :]
    if causal:
        allowed &= pos[None, :] <= pos[:, None]
    # Positions within a chunk: the bias depends on j - i only (both "simple" and "rotary").
    bias = reference_bias(layer, length)
    out = np.zeros((length, hidden))
    for i in range(length):
        keys = np.flatnonzero(allowed[i])
        if not len(keys):
            continue  # a padded query in a chunk of padding: its row is zeroed below
        scores = q[i] @ k[keys].T
        if layer.attention_activation == "softmax":
            logits = scores / math.sqrt(z_dim) + bias[i, keys]
            p = np.exp(logits - logits.max())
            p = p / p.sum()
        else:
            logits = scores / max(len(keys), 1) + bias[i, keys]
            if layer.attention_activation == "laplace":
                mu, sigma = math.sqrt(0.5), math.sqrt(1.0 / (4.0 * math.pi))
                p = 0.5 * (1.0 + erf((logits - mu) / (sigma * math.sqrt(2.0))))
            else:
                p = np.maximum(logits, 0.0) ** 2
        out[i] = p @ v[keys]
    h = silu(hx + (gamma * out) @ w["output_projection/kernel"] + w["output_projection/bias"])
    y = phi * h + (1.0 - phi) * x
    return np.where(mask[:, None], y, 0.0)


LAYER_CASES = [
    {},
    {"chunk_size": 4},
    {"chunk_size": 5, "attention_activation": "laplace"},
    {"attention_activation": "relu2"},
    {"chunk_size": 3, "relative_position": "rotary"},
    {"max_positions": 4},  # offsets beyond +-3 share the outermost bias
    {"bidirectional": False},
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kwargs", LAYER_CASES, ids=lambda kw: str(kw) or "default")
def test_layer_equals_reference(kwargs, causal):
    length = 13
    layer = make_layer(length, **kwargs)
    x = np.random.default_rng(1).normal(size=(3, length, DIM)).astype("float32")
    # Full, padded to 8, and padded to 2 (a last chunk that holds padding only).
    mask = lengths_mask([13, 8, 2], length)
    got = keras.ops.convert_to_numpy(
        layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=causal)
    )
    want = np.stack(
        [
            reference_layer(s.astype(np.float64), m, layer, causal)
            for s, m in zip(x, mask, strict=True)
        ]
    )
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("length", [13, 16])
@pytest.mark.parametrize("activation", ["softmax", "laplace"])
def test_chunk_at_least_the_length_is_unchunked_mega(length, activation):
    # The "simple" bias has 2P - 1 entries with P = chunk_size, or max_positions unchunked.
    unchunked = make_layer(length, max_positions=16, attention_activation=activation)
    chunked = make_layer(length, chunk_size=16, attention_activation=activation)
    chunked.set_weights(unchunked.get_weights())
    x = np.random.default_rng(2).normal(size=(2, length, DIM)).astype("float32")
    mask = lengths_mask([length, 9], length)
    for causal in (False, True):
        a, b = (
            keras.ops.convert_to_numpy(
                m(x, x, query_mask=mask, value_mask=mask, use_causal_mask=causal)
            )
            for m in (unchunked, chunked)
        )
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_small_chunks_differ_from_unchunked():
    # The block-diagonal attention is a real restriction (the reference test above would not
    # notice a chunked layer that attends across chunks only if this is false).
    unchunked = make_layer(12, max_positions=4)
    chunked = make_layer(12, chunk_size=4)
    chunked.set_weights(unchunked.get_weights())
    x = np.random.default_rng(2).normal(size=(1, 12, DIM)).astype("float32")
    a, b = (keras.ops.convert_to_numpy(m(x, x)) for m in (unchunked, chunked))
    assert np.abs(a - b).max() > 1e-3


def test_ema_spans_chunks_and_attention_does_not():
    # A change in the last chunk reaches the first one through the EMA only: with the EMA's
    # weights zeroed, the first chunk's outputs no longer move.
    layer = make_layer(12, chunk_size=4)
    x = np.random.default_rng(4).normal(size=(1, 12, DIM)).astype("float32")
    changed = x.copy()
    changed[:, 8:] += 1.0

    def first_chunk_moves():
        a, b = (keras.ops.convert_to_numpy(layer(t, t))[:, :4] for t in (x, changed))
        return np.abs(a - b).max()

    assert first_chunk_moves() > 1e-3
    layer.eta.assign(np.zeros(layer.eta.shape, "float32"))
    assert first_chunk_moves() == 0.0


def test_real_outputs_do_not_depend_on_the_padded_length():
    assert_outputs_ignore_the_padded_length(make_layer(20, chunk_size=4), DIM)


def test_non_finite_real_input_propagates():
    layer = make_layer(9, chunk_size=4)
    x = np.random.default_rng(0).normal(size=(1, 9, DIM)).astype("float32")
    x[0, 2, 0] = np.nan
    y = keras.ops.convert_to_numpy(layer(x, x))
    assert np.isnan(y[0, 2]).any()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"chunk_size": 4, "attention_activation": "laplace", "relative_position": "rotary"}],
)
@pytest.mark.parametrize("causal", [False, True])
def test_unknown_length_in_a_graph(kwargs, causal):
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("drives tf.function")
    layer = make_layer(13, **kwargs)
    fn = tf.function(
        lambda a, m: layer(a, a, query_mask=m, value_mask=m, use_causal_mask=causal),
        input_signature=[tf.TensorSpec((None, None, DIM)), tf.TensorSpec((None, None), "bool")],
    )
    for length in (5, 13):
        x = np.random.default_rng(length).normal(size=(2, length, DIM)).astype("float32")
        mask = lengths_mask([length, length // 2 + 1], length)
        eager = layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=causal)
        np.testing.assert_allclose(
            fn(x, mask).numpy(), keras.ops.convert_to_numpy(eager), atol=1e-5
        )


# ------------------------------------------------------------------ parameters and errors


def test_initialisation_follows_the_reference_code():
    layer = MegaMixing(ema_dim=16, z_dim=8, seed=2)
    layer.build((1, 4, 32))
    beta = layer.beta.numpy()
    signs = np.where(np.arange(16) % 2 == 0, 1.0, -1.0)
    assert np.abs(beta - signs).max() < 0.15 and 0.01 < np.std(beta - signs) < 0.03
    for logits in (layer.alpha_logit.numpy(), layer.delta_logit.numpy()):
        assert 0.15 < np.std(logits) < 0.25
    assert not np.allclose(layer.alpha_logit.numpy(), layer.delta_logit.numpy())
    assert layer.alpha_logit.shape == (2, 32, 16) and layer.omega.shape == (32,)
    assert layer.position_bias.shape == (2 * 1024 - 1,)
    assert layer._value_dense.kernel.shape == (32, 64)  # hidden_dim None: twice the width


def test_state_space_variables_and_the_optimizer():
    layer = make_layer(4)
    names = sorted(v.path.split("/")[-1] for v in layer.state_space_variables)
    assert names == ["alpha_logit", "beta", "delta_logit", "eta"]
    for ssm_learning_rate, expected in ((None, keras.optimizers.AdamW), (1e-3, GroupedAdamW)):
        inputs = keras.Input((5, DIM))
        mixer = MegaMixing(ema_dim=2, z_dim=4, ssm_learning_rate=ssm_learning_rate)
        model = keras.Model(inputs, mixer(inputs, inputs))
        optimizer = build_optimizer(model, 1e-2, learning_rate=1e-2, weight_decay=0.1)
        assert type(optimizer) is expected


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"ema_dim": 0}, "`ema_dim` must be an integer >= 1"),
        ({"z_dim": 0}, "`z_dim` must be an integer >= 1"),
        ({"hidden_dim": 0}, "`hidden_dim` must be an integer >= 1 or None"),
        ({"chunk_size": 0}, "`chunk_size` must be an integer >= 1 or None"),
        ({"chunk_size": 2.5}, "`chunk_size` must be an integer"),
        ({"max_positions": 0}, "`max_positions` must be an integer >= 1"),
        ({"truncation": 0}, "`truncation` must be an integer >= 1 or None"),
        ({"attention_activation": "tanh"}, "attention_activation.*softmax.*laplace.*relu2"),
        ({"relative_position": "alibi"}, "relative_position.*simple.*rotary"),
        ({"relative_position": "rotary", "z_dim": 5}, "rotary.*even `z_dim`"),
        ({"ssm_learning_rate": 0.0}, "ssm_learning_rate"),
        ({"dropout": 1.0}, "dropout"),
        ({"rotary": True}, "'mega'.*rotary.*relative_position='rotary'"),
    ],
)
def test_bad_arguments_are_refused_by_name(bad, match):
    with pytest.raises(ValueError, match=match):
        MegaMixing(**bad)


def test_registry_and_config_round_trip():
    layer = get_attention("mega", num_heads=2, key_dim=4, ema_dim=3, z_dim=4, chunk_size=8)
    assert isinstance(layer, MegaMixing)
    config = layer.get_config()
    assert config["ema_dim"] == 3 and config["chunk_size"] == 8 and config["hidden_dim"] is None
    assert MegaMixing.from_config(config).get_config() == config
    assert layer.attention_flops(1, 4096, 4096) < 1.2 * layer.attention_flops(1, 2048, 2048) * 2


@pytest.mark.slow
def test_jax_backend_matches_tensorflow(tmp_path):
    """The layer on the JAX backend (fresh process) gives the TensorFlow backend's outputs.

    The weights are set from numpy: Keras' seeded initializers draw differently per backend.
    """
    base = {"ema_dim": 4, "z_dim": 6, "hidden_dim": 10, "seed": 5}
    chunked = dict(base, chunk_size=4, attention_activation="laplace")
    assert_jax_matches_tensorflow("mega", [base, chunked], tmp_path)
