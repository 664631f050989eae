"""PerformerAttention: FAVOR+ features against explicit forms, softmax error vs features."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lra_keras.layers import PerformerAttention
from tests.layers.reference import dense_attention, lengths_mask, padding_allowed

B, H, D, DV = 2, 2, 8, 3


def attend(layer, q, k, v, key_mask, causal, training=False):
    mask = np.ones(q.shape[:2], bool)
    out = layer._attend(
        q, k, v, query=None, query_mask=mask, key_mask=key_mask, causal=causal, training=training
    )
    return keras.ops.convert_to_numpy(out)


def built(**kwargs):
    layer = PerformerAttention(num_heads=H, key_dim=D, value_dim=DV, seed=1, **kwargs)
    layer.build((B, 5, 6), (B, 5, 6))
    return layer


def random_qkv(t, s, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    q = (scale * rng.normal(size=(B, t, H, D))).astype("float32")
    k = (scale * rng.normal(size=(B, s, H, D))).astype("float32")
    v = rng.normal(size=(B, s, H, DV)).astype("float32")
    return q, k, v


def explicit(phi_q, phi_k, v, allowed):
    """(phi(Q) phi(K)^T masked) V / row sums, float64, from given features."""
    scores = np.einsum("bthm,bshm->bhts", phi_q, phi_k) * allowed
    den = scores.sum(-1)[..., None]
    out = np.einsum("bhts,bshd->bhtd", scores, v) / np.where(den > 0, den, 1.0)
    return np.transpose(out, (0, 2, 1, 3))


def softmax_features(x, w):
    """FAVOR+ positive features in float64, without any stabiliser.

    `m^-1/2 (exp(a) + 1e-6 max_r exp(a_r))` with `a = W x' - |x'|^2 / 2`: the layer's features
    `m^-1/2 (exp(a - max a) + 1e-6)` times the row's `exp(max a)`, which the layer's stabilisers
    divide out again.
    """
    x = np.asarray(x, np.float64) / D**0.25
    a = np.einsum("blhd,md->blhm", x, np.asarray(w, np.float64))
    a = a - 0.5 * (x**2).sum(-1, keepdims=True)
    return (np.exp(a) + 1e-6 * np.exp(a.max(-1, keepdims=True))) / np.sqrt(w.shape[0])


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_kernel_equals_explicit_normalised_form(causal):
    layer = built(num_random_features=32, chunk_size=4)
    q, k, v = random_qkv(13, 13, scale=0.7)
    key_mask = lengths_mask([13, 6], 13)
    allowed = padding_allowed(np.ones((B, 13), bool), key_mask, causal)
    w = keras.ops.convert_to_numpy(layer.projection)
    want = explicit(softmax_features(q, w), softmax_features(k, w), v, allowed)
    np.testing.assert_allclose(attend(layer, q, k, v, key_mask, causal), want, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_stabilised_features_give_the_explicit_form_with_large_norms(causal):
    # Norms large enough that exp(W x') overflows float32 without the stabilisers.
    layer = built(num_random_features=16, chunk_size=3)
    q, k, v = random_qkv(11, 11, seed=2, scale=12.0)
    key_mask = lengths_mask([11, 7], 11)
    phi_q, phi_k, log_scale = (
        keras.ops.convert_to_numpy(a) for a in layer.feature_maps(q, k, key_mask)
    )
    log_scale = np.asarray(log_scale, np.float64)
    allowed = padding_allowed(np.ones((B, 11), bool), key_mask, causal)
    # Reference c_i: the largest log-scale over the keys query i may see.
    visible = np.where(allowed, np.transpose(log_scale, (0, 2, 1))[:, :, None, :], -np.inf)
    ref = visible.max(-1, keepdims=True)
    weights = np.exp(np.transpose(log_scale, (0, 2, 1))[:, :, None, :] - ref)
    scores = np.einsum("bthm,bshm->bhts", phi_q, phi_k) * allowed * weights
    want = np.einsum("bhts,bshd->bthd", scores / scores.sum(-1, keepdims=True), v)
    got = attend(layer, q, k, v, key_mask, causal)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_relu_kernel_equals_explicit_normalised_form(causal):
    layer = built(kernel="relu", num_random_features=24, chunk_size=4)
    q, k, v = random_qkv(10, 10, seed=4)
    key_mask = lengths_mask([10, 4], 10)
    w = keras.ops.convert_to_numpy(layer.projection).astype(np.float64)

    def phi(x):
        return np.maximum(np.einsum("blhd,md->blhm", x, w) / np.sqrt(24), 0.0) + 1e-3

    want = explicit(phi(q), phi(k), v, padding_allowed(np.ones((B, 10), bool), key_mask, causal))
    np.testing.assert_allclose(attend(layer, q, k, v, key_mask, causal), want, atol=1e-5)


def test_causal_form_never_looks_ahead_even_at_a_huge_future_key():
    layer = built(num_random_features=16, chunk_size=4)
    q, k, v = random_qkv(13, 13, seed=5)
    mask = np.ones((B, 13), bool)
    y = attend(layer, q, k, v, mask, causal=True)
    k2, v2 = k.copy(), v.copy()
    k2[:, 6:] *= 40.0  # a future key whose own stabiliser dwarfs every past one
    v2[:, 6:] = 1e3
    y2 = attend(layer, q, k2, v2, mask, causal=True)
    np.testing.assert_allclose(y2[:, :6], y[:, :6], atol=1e-6, rtol=1e-6)
    # A huge PADDED key does not set the scale either (non-causal).
    key_mask = lengths_mask([13, 8], 13)
    y = attend(layer, q, k, v, key_mask, causal=False)
    k3 = np.where(key_mask[..., None, None], k, 50.0 * k).astype("float32")
    np.testing.assert_allclose(attend(layer, q, k3, v, key_mask, False), y, atol=1e-6)


def test_orthogonal_features_and_seeded_draw():
    layer = built(num_random_features=20)
    w = keras.ops.convert_to_numpy(layer.projection)
    assert w.shape == (20, D) and not layer.projection.trainable
    unit = w / np.linalg.norm(w, axis=-1, keepdims=True)
    for start in (0, 8):  # full blocks of D orthogonal rows
        block = unit[start : start + D]
        np.testing.assert_allclose(block @ block.T, np.eye(D), atol=1e-5)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(built(num_random_features=20).projection), w
    )


def test_redraw_only_in_training():
    q, k, v = random_qkv(9, 9, seed=6)
    mask = np.ones((B, 9), bool)
    fixed = built(num_random_features=16)
    redraw = built(num_random_features=16, redraw=True)
    inference = attend(redraw, q, k, v, mask, False)
    np.testing.assert_array_equal(inference, attend(fixed, q, k, v, mask, False))
    np.testing.assert_array_equal(attend(fixed, q, k, v, mask, False, training=True), inference)
    first = attend(redraw, q, k, v, mask, False, training=True)
    second = attend(redraw, q, k, v, mask, False, training=True)
    assert np.abs(first - inference).max() > 1e-4 and np.abs(first - second).max() > 1e-4
    drawn = keras.ops.convert_to_numpy(redraw._redrawn_projection())
    unit = drawn / np.linalg.norm(drawn, axis=-1, keepdims=True)
    np.testing.assert_allclose(unit[:D] @ unit[:D].T, np.eye(D), atol=1e-5)
    compiled = tf.function(
        lambda a, b, c: redraw._attend(
            a, b, c, query=None, query_mask=mask, key_mask=mask, causal=True, training=True
        ),
        jit_compile=True,
    )
    assert np.all(np.isfinite(compiled(q, k, v).numpy()))


def softmax_error(num_features, seeds=range(6), dim=16, length=32):
    """Mean abs error of the softmax kernel against exact attention (same q, k, v)."""
    errors = []
    for seed in seeds:
        layer = PerformerAttention(
            num_heads=H, key_dim=dim, num_random_features=num_features, seed=100 + seed
        )
        layer.build((B, 5, 6), (B, 5, 6))
        rng = np.random.default_rng(seed)
        # Moderate norms: |q|^2 / sqrt(d) about 1, logits of order 1.
        q, k = (0.5 * rng.normal(size=(B, length, H, dim)).astype("float32") for _ in "qk")
        v = rng.normal(size=(B, length, H, DV)).astype("float32")
        mask = lengths_mask([length, 20], length)
        exact = dense_attention(q, k, v, padding_allowed(mask, mask))
        got = attend(layer, q, k, v, mask, False)
        errors.append(np.abs(got - exact)[mask].mean())
    return float(np.mean(errors))


def test_softmax_error_falls_with_the_number_of_features():
    errors = {m: softmax_error(m) for m in (64, 128, 256, 512, 1024)}
    print("performer mean abs error vs full:", errors)
    assert errors[1024] * 2.5 <= errors[64], errors
    assert errors[256] < errors[64], errors


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kernel"):
        PerformerAttention(num_heads=1, key_dim=2, kernel="cosine")
    with pytest.raises(ValueError, match="num_random_features"):
        PerformerAttention(num_heads=1, key_dim=2, num_random_features=0)


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_bidirectional_path_equals_the_feature_map_form(kernel):
    # The non-causal path is laid out heads-first for speed; it must be the same numbers as
    # `feature_maps` + the generic kernelised routine, in values and gradients, with padding,
    # a fully padded row and keys far apart in scale.
    from lra_keras.layers.attention.linear_attention_utils import linear_attention

    layer = built(kernel=kernel)
    q, k, v = random_qkv(7, 9, seed=3, scale=2.0)
    key_mask = lengths_mask([9, 0], 9)
    q, k, v = (tf.constant(x) for x in (q, k, v))
    mask = tf.constant(key_mask)

    def generic(q, k, v):
        phi_q, phi_k, scale = layer.feature_maps(q, k, mask)
        return linear_attention(phi_q, phi_k, v, causal=False, key_log_scale=scale, eps=0.0)

    def fast(q, k, v):
        return layer._bidirectional(q, k, v, mask, layer.projection)

    results = []
    for fn in (generic, fast):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = fn(q, k, v)
            loss = tf.reduce_sum(out * tf.range(out.shape[-1], dtype=out.dtype))
        results.append([out] + tape.gradient(loss, [q, k, v]))
    for a, b in zip(*results, strict=True):
        assert np.all(np.isfinite(b.numpy()))
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(results[1][0].numpy()[1], 0.0)
