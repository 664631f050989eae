"""LinearAttention and the shared chunked prefix-sum kernel against the explicit quadratic form."""

import numpy as np
import pytest
import tensorflow as tf

from lra_keras.layers import LinearAttention, get_attention
from lra_keras.layers.attention.linear_attention_utils import linear_attention
from tests.layers.reference import lengths_mask

B, H, D, DV = 2, 2, 4, 3


def _elu1(x):
    return tf.where(x > 0, x + 1.0, tf.exp(x))


def explicit_linear(q, k, v, query_mask, key_mask, causal, eps=1e-6):
    """(phi(Q) phi(K)^T masked) V, row-normalised: the quadratic form, written in TensorFlow."""
    t, s = q.shape[1], k.shape[1]
    allowed = np.asarray(key_mask, bool)[:, None, None, :] & np.ones((1, 1, t, 1), bool)
    if causal:
        allowed = allowed & (np.arange(s)[None, :] <= np.arange(t)[:, None])
    scores = tf.einsum("bthm,bshm->bhts", _elu1(q), _elu1(k)) * allowed.astype("float32")
    out = tf.einsum("bhts,bshd->bthd", scores, v)
    return out / (tf.transpose(tf.reduce_sum(scores, -1), (0, 2, 1))[..., None] + eps)


def random_qkv(t, s, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, t, H, D)).astype("float32")
    k = rng.normal(size=(B, s, H, D)).astype("float32")
    v = rng.normal(size=(B, s, H, DV)).astype("float32")
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("t", "s", "chunk"), [(13, 13, 4), (13, 13, 64), (7, 11, 3), (11, 7, 4)])
def test_layer_equals_explicit_quadratic_form_values_and_gradients(causal, t, s, chunk):
    layer = LinearAttention(num_heads=H, key_dim=D, value_dim=DV, chunk_size=chunk)
    q, k, v = random_qkv(t, s)
    query_mask = lengths_mask([t, t // 2 + 1], t)
    key_mask = lengths_mask([s, s // 2], s)
    q, k, v = (tf.constant(a) for a in (q, k, v))
    weights = tf.constant(np.random.default_rng(1).normal(size=(B, t, H, DV)).astype("float32"))
    outs, grads = [], []
    for fn in (
        lambda a, b, c: layer._attend(
            a,
            b,
            c,
            query=None,
            query_mask=query_mask,
            key_mask=key_mask,
            causal=causal,
            training=False,
        ),
        lambda a, b, c: explicit_linear(a, b, c, query_mask, key_mask, causal),
    ):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = fn(q, k, v)
            loss = tf.reduce_sum(out * weights)
        outs.append(out.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, [q, k, v])])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for got, want in zip(grads[0], grads[1], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_padded_keys_have_no_effect_and_empty_rows_are_zero():
    q, k, v = random_qkv(9, 9)
    key_mask = lengths_mask([9, 0], 9)
    phi = tf.nn.elu(q) + 1.0
    phi_k = (tf.nn.elu(k) + 1.0) * key_mask[..., None, None]
    out = linear_attention(phi, phi_k, v, causal=True, chunk_size=4).numpy()
    k2 = np.where(key_mask[..., None, None], k, 100.0).astype("float32")
    phi_k2 = (tf.nn.elu(k2) + 1.0) * key_mask[..., None, None]
    v2 = np.where(key_mask[..., None, None], v, -50.0).astype("float32")
    out2 = linear_attention(phi, phi_k2, v2, causal=True, chunk_size=4).numpy()
    np.testing.assert_allclose(out2, out, atol=1e-6)
    np.testing.assert_array_equal(out[1], 0.0)


def test_chunk_size_does_not_change_the_result():
    q, k, v = random_qkv(29, 29, seed=3)
    layers = [LinearAttention(num_heads=H, key_dim=D, chunk_size=c) for c in (1, 5, 29, 100)]
    mask = np.ones((B, 29), bool)
    outs = [
        layer._attend(
            q, k, v, query=None, query_mask=mask, key_mask=mask, causal=True, training=False
        ).numpy()
        for layer in layers
    ]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["linear", "performer"])
def test_causal_jit_compile_equals_eager_with_gradients(name):
    kwargs = {"num_random_features": 16} if name == "performer" else {}
    layer = get_attention(name, num_heads=H, key_dim=D, chunk_size=4, seed=0, **kwargs)
    x = tf.constant(np.random.default_rng(2).normal(size=(B, 11, 8)).astype("float32"))
    mask = lengths_mask([11, 6], 11)

    def value_and_grad(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, inputs, query_mask=mask, value_mask=mask, use_causal_mask=True)
            loss = tf.reduce_sum(y**2)
        return y, tape.gradient(loss, inputs)

    y, g = value_and_grad(x)
    y_jit, g_jit = tf.function(value_and_grad, jit_compile=True)(x)
    np.testing.assert_allclose(y_jit.numpy(), y.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(g_jit.numpy(), g.numpy(), atol=1e-4, rtol=1e-4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="feature_map"):
        LinearAttention(num_heads=1, key_dim=2, feature_map="relu")
    with pytest.raises(ValueError, match="chunk_size"):
        LinearAttention(num_heads=1, key_dim=2, chunk_size=0)
