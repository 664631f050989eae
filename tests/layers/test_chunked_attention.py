"""`chunked` attention: equals `full` in values and gradients; kernels equal a dense reference."""

import numpy as np
import pytest
import tensorflow as tf

from lra_keras.layers import ChunkedAttention, FullAttention, get_attention
from lra_keras.layers.kernels import chunked_attention as kernels
from tests.layers.reference import dense_attention, lengths_mask, padding_allowed

HEADS, KEY_DIM, DIM = 2, 4, 8
ATOL = 1e-5


def _pair(t, s, **chunk_kwargs):
    """A chunked layer and a full layer with the same projection weights."""
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, t, DIM)).astype("float32")
    memory = rng.normal(size=(2, s, DIM)).astype("float32")
    chunked = ChunkedAttention(num_heads=HEADS, key_dim=KEY_DIM, value_dim=3, **chunk_kwargs)
    full = FullAttention(num_heads=HEADS, key_dim=KEY_DIM, value_dim=3, seed=1)
    chunked(query, memory)
    full(query, memory)
    chunked.load_mha_weights(full)
    return chunked, full, query, memory


def _value_and_grads(layer, query, memory, query_mask, key_mask, causal, weights):
    query, memory = tf.constant(query), tf.constant(memory)
    variables = sorted(layer.trainable_variables, key=lambda w: w.path.split("/", 1)[1])
    with tf.GradientTape() as tape:
        tape.watch([query, memory])
        y = layer(
            query,
            memory,
            query_mask=query_mask,
            value_mask=key_mask,
            use_causal_mask=causal,
        )
        loss = tf.reduce_sum(y * weights)
    grads = tape.gradient(loss, [query, memory] + variables)
    return y.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "t, s",
    [(13, 13), (9, 14), (14, 9)],
    ids=["self", "cross_longer_keys", "cross_shorter_keys"],
)
def test_matches_full_attention_values_and_gradients(t, s, causal):
    chunked, full, query, memory = _pair(t, s, query_chunk_size=4, key_chunk_size=5)
    query_mask = lengths_mask([t, t - 3], t)
    key_mask = lengths_mask([s, s // 2 + 1], s)
    weights = np.random.default_rng(2).normal(size=(2, t, DIM)).astype("float32")
    y_chunked, g_chunked = _value_and_grads(
        chunked, query, memory, query_mask, key_mask, causal, weights
    )
    y_full, g_full = _value_and_grads(full, query, memory, query_mask, key_mask, causal, weights)
    np.testing.assert_allclose(y_chunked, y_full, atol=ATOL)
    # d/d query, d/d memory, then the 8 projection kernels and biases, paired by name.
    assert len(g_chunked) == len(g_full) == 10
    for a, b in zip(g_chunked, g_full, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_matches_dense_numpy_reference_through_the_layer():
    layer = get_attention("chunked", num_heads=HEADS, key_dim=KEY_DIM, query_chunk_size=3)
    x = np.random.default_rng(3).normal(size=(2, 11, DIM)).astype("float32")
    mask = lengths_mask([11, 6], 11)
    y = layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True).numpy()
    q = layer._query_dense(x).numpy()
    k = layer._key_dense(x).numpy()
    v = layer._value_dense(x).numpy()
    attended = dense_attention(q, k, v, padding_allowed(mask, mask, causal=True))
    expected = layer._output_dense(attended.astype("float32")).numpy() * mask[..., None]
    np.testing.assert_allclose(y, expected, atol=ATOL)


# ------------------------------------------------------------------------------- the kernels


def _kernel_inputs(t, s, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, 3, t, 4)).astype("float32")
    k = rng.normal(size=(2, 3, s, 4)).astype("float32")
    v = rng.normal(size=(2, 3, s, 5)).astype("float32")
    key_mask = lengths_mask([s, s // 2 + 1], s)
    return q, k, v, key_mask


def _dense(q, k, v, key_mask, causal):
    t = q.shape[2]
    allowed = padding_allowed(np.ones((q.shape[0], t), bool), key_mask, causal)
    heads_last = (0, 2, 1, 3)
    out = dense_attention(*(x.transpose(heads_last) for x in (q, k, v)), allowed)
    return out.transpose(heads_last)


def _kernel_grad_tensors(fn, q, k, v, key_mask, causal, chunks, weights):
    q, k, v = (tf.convert_to_tensor(x) for x in (q, k, v))
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        out = fn(q, k, v, key_mask, causal, *chunks)
        loss = tf.reduce_sum(out * weights)
    return out, tape.gradient(loss, [q, k, v])


def _kernel_grads(*args):
    out, grads = _kernel_grad_tensors(*args)
    return out.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "t, s, chunks",
    [(13, 13, (4, 5)), (7, 12, (4, 5)), (12, 7, (5, 3)), (6, 6, (64, 64)), (5, 9, (1, 1))],
)
def test_kernels_match_dense_reference_and_each_other(t, s, chunks, causal):
    q, k, v, key_mask = _kernel_inputs(t, s)
    expected = _dense(q, k, v, key_mask, causal)
    weights = np.random.default_rng(1).normal(size=expected.shape).astype("float32")
    out_tf, g_tf = _kernel_grads(
        kernels.chunked_attention_tf, q, k, v, key_mask, causal, chunks, weights
    )
    out_ref, g_ref = _kernel_grads(
        kernels.chunked_attention_reference, q, k, v, key_mask, causal, chunks, weights
    )
    np.testing.assert_allclose(out_tf, expected, atol=ATOL)
    np.testing.assert_allclose(out_ref, expected, atol=ATOL)
    for a, b in zip(g_tf, g_ref, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)
    # The dispatcher picks the TensorFlow kernel on this backend.
    dispatched = kernels.chunked_attention(q, k, v, key_mask, causal, *chunks)
    np.testing.assert_array_equal(dispatched.numpy(), out_tf)


def test_kernel_gradients_match_finite_differences():
    # An independent check of the hand-written backward pass (not only against autodiff).
    q, k, v, key_mask = _kernel_inputs(5, 6, seed=4)
    q, k, v = (x.astype("float64") for x in (q, k, v))
    weights = np.random.default_rng(5).normal(size=(2, 3, 5, 5))

    def loss(q, k, v):
        return np.sum(_dense(q, k, v, key_mask, causal=True) * weights)

    _, grads = _kernel_grads(
        kernels.chunked_attention_tf,
        q.astype("float32"),
        k.astype("float32"),
        v.astype("float32"),
        key_mask,
        True,
        (2, 4),
        weights.astype("float32"),
    )
    eps = 1e-6
    for index, x in enumerate((q, k, v)):
        numeric = np.zeros_like(x)
        for pos in np.ndindex(x.shape):
            args = [q, k, v]
            plus, minus = x.copy(), x.copy()
            plus[pos] += eps
            minus[pos] -= eps
            args[index] = plus
            up = loss(*args)
            args[index] = minus
            numeric[pos] = (up - loss(*args)) / (2 * eps)
        np.testing.assert_allclose(grads[index], numeric, atol=1e-4)


def test_query_without_any_allowed_key_gives_zero_and_finite_gradients():
    q, k, v, _ = _kernel_inputs(6, 7)
    key_mask = np.ones((2, 7), bool)
    key_mask[1] = False
    key_mask[0, :3] = False  # Causal queries 0-2 of example 0 see no real key.
    weights = np.ones((2, 3, 6, 5), "float32")
    for fn in (kernels.chunked_attention_tf, kernels.chunked_attention_reference):
        out, grads = _kernel_grads(fn, q, k, v, key_mask, True, (4, 2), weights)
        np.testing.assert_array_equal(out[1], 0.0)
        np.testing.assert_array_equal(out[0, :, :3], 0.0)
        np.testing.assert_allclose(out, _dense(q, k, v, key_mask, True), atol=ATOL)
        for g in grads:
            assert np.all(np.isfinite(g))


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_compiled_gradients_match_eager(jit_compile):
    q, k, v, key_mask = _kernel_inputs(11, 9)
    weights = np.random.default_rng(6).normal(size=(2, 3, 11, 5)).astype("float32")
    args = (kernels.chunked_attention_tf, q, k, v, key_mask, True, (4, 4), weights)
    eager_out, eager_grads = _kernel_grads(*args)
    compiled = tf.function(
        lambda q, k, v, key_mask, weights: _kernel_grad_tensors(
            kernels.chunked_attention_tf, q, k, v, key_mask, True, (4, 4), weights
        ),
        jit_compile=jit_compile,
    )
    out, grads = compiled(q, k, v, key_mask, weights)
    np.testing.assert_allclose(out.numpy(), eager_out, atol=ATOL)
    for a, b in zip(grads, eager_grads, strict=True):
        np.testing.assert_allclose(a.numpy(), b, atol=ATOL)


def test_mixed_precision_output_dtype_and_float32_accuracy():
    q, k, v, key_mask = _kernel_inputs(9, 9)
    expected = _dense(q, k, v, key_mask, False)
    for dtype, atol in (("float16", 5e-3), ("bfloat16", 5e-2)):
        args = [tf.cast(x, dtype) for x in (q, k, v)]
        out = kernels.chunked_attention_tf(*args, key_mask, False, 4, 4)
        assert out.dtype == dtype
        np.testing.assert_allclose(tf.cast(out, "float32").numpy(), expected, atol=atol)


@pytest.mark.parametrize("arg", ["query_chunk_size", "key_chunk_size"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_chunk_sizes_are_refused(arg, bad):
    with pytest.raises(ValueError, match=arg):
        ChunkedAttention(num_heads=1, key_dim=2, **{arg: bad})
    q, k, v, key_mask = _kernel_inputs(4, 4)
    with pytest.raises(ValueError, match=arg):
        kernels.chunked_attention(q, k, v, key_mask, **{arg: bad})


def test_config_keeps_chunk_sizes():
    layer = ChunkedAttention(num_heads=2, key_dim=4, query_chunk_size=7, key_chunk_size=9)
    config = layer.get_config()
    assert config["query_chunk_size"] == 7 and config["key_chunk_size"] == 9
    clone = ChunkedAttention.from_config(config)
    assert (clone.query_chunk_size, clone.key_chunk_size) == (7, 9)
