"""`chunked` attention: equals `full` in values and gradients (in training too, with dropout);
the backend's kernel equals a dense numpy reference; the fused path equals the exact one.

Backend-neutral: `make test` runs this file under TensorFlow and under JAX.
"""

import keras
import numpy as np
import pytest
from keras import ops

from lra_keras.layers import ChunkedAttention, FullAttention, get_attention
from lra_keras.layers.kernels import chunked_attention as kernels
from tests.backends.backend_testing import BACKEND, compiled, loss_and_grads, to_numpy
from tests.layers.reference import dense_attention, lengths_mask, padding_allowed

HEADS, KEY_DIM, DIM = 2, 4, 8
ATOL = 1e-5


def _pair(t, s, dropout=0.0, **chunk_kwargs):
    """A chunked layer and a full layer with the same projection weights and seed."""
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, t, DIM)).astype("float32")
    memory = rng.normal(size=(2, s, DIM)).astype("float32")
    common = dict(num_heads=HEADS, key_dim=KEY_DIM, value_dim=3, dropout=dropout, seed=11)
    chunked = ChunkedAttention(**common, **chunk_kwargs)
    full = FullAttention(**common)
    chunked(query, memory)
    full(query, memory)
    chunked.load_mha_weights(full)
    return chunked, full, query, memory


def _value_and_grads(layer, query, memory, query_mask, key_mask, causal, weights, training=None):
    variables = sorted(layer.trainable_variables, key=lambda w: w.path.split("/", 1)[1])

    def loss(query, memory):
        y = layer(
            query,
            memory,
            query_mask=query_mask,
            value_mask=key_mask,
            use_causal_mask=causal,
            training=training,
        )
        return ops.sum(y * weights), y

    return loss_and_grads(loss, [query, memory], variables)


def _assert_layers_agree(t, s, causal, dropout=0.0, training=None, chunks=(4, 5)):
    chunked, full, query, memory = _pair(
        t, s, dropout=dropout, query_chunk_size=chunks[0], key_chunk_size=chunks[1]
    )
    query_mask = lengths_mask([t, t - 3], t)
    key_mask = lengths_mask([s, s // 2 + 1], s)
    weights = np.random.default_rng(2).normal(size=(2, t, DIM)).astype("float32")
    args = (query, memory, query_mask, key_mask, causal, weights, training)
    y_chunked, g_chunked = _value_and_grads(chunked, *args)
    y_full, g_full = _value_and_grads(full, *args)
    np.testing.assert_allclose(y_chunked, y_full, atol=ATOL)
    # d/d query, d/d memory, then the 8 projection kernels and biases, paired by name.
    assert len(g_chunked) == len(g_full) == 10
    for a, b in zip(g_chunked, g_full, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)
    return y_chunked


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "t, s",
    [(13, 13), (9, 14), (14, 9)],
    ids=["self", "cross_longer_keys", "cross_shorter_keys"],
)
def test_matches_full_attention_values_and_gradients(t, s, causal):
    _assert_layers_agree(t, s, causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t, s", [(13, 13), (9, 14)], ids=["self", "cross"])
def test_matches_full_attention_in_training_with_dropout(t, s, causal):
    # Both layers draw the per-call seed from the same `seed` and the mask from one stateless
    # function of (seed, b, h, i, j); chunked regenerates each tile's mask in its backward pass.
    y_train = _assert_layers_agree(t, s, causal, dropout=0.4, training=True)
    y_eval = _assert_layers_agree(t, s, causal, dropout=0.4, training=False)
    assert np.abs(y_train - y_eval).max() > 1e-2  # dropout was applied in training only


@pytest.mark.parametrize("dropout", [0.0, 0.4], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t, s", [(13, 13), (9, 14), (14, 9)], ids=["self", "longer", "shorter"])
def test_default_chunks_one_tile_path_matches_full(t, s, causal, dropout):
    # Default chunk sizes at these lengths (2 examples x 2 heads): one tile, in the layer's
    # heads-last layout.
    assert kernels.default_chunk_sizes(2, HEADS, t, s) == (t, s)
    _assert_layers_agree(t, s, causal, dropout, training=bool(dropout), chunks=(None, None))


# ------------------------------------------------------------------- the default tiling's memory

BUDGET = kernels.TILE_BUDGET_ENTRIES
FLOOR = kernels.MIN_CHUNK_SIZE


@pytest.mark.parametrize("batch", [1, 2, 32, None, 4096], ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("heads", [1, 4, 8], ids=lambda h: f"heads{h}")
@pytest.mark.parametrize(
    "t, s",
    [
        (1, 1),
        (13, 9),
        (256, 256),
        (512, 512),
        (1024, 1024),
        (4097, 4097),
        (8193, 8193),
        (65536, 65536),
        (1, 100_000),
        (100_000, 3),
        (700, 90_000),
        (None, 4097),
        (4097, None),
        (None, None),
    ],
)
def test_default_tiles_bound_the_whole_calls_working_set(batch, heads, t, s):
    cq, ck = kernels.default_chunk_sizes(batch, heads, t, s)
    # An unknown batch is assumed to be LRA's 32, so it never lifts the bound.
    pairs = (32 if batch is None else batch) * heads
    tile_q = cq if t is None else min(cq, t)
    tile_k = ck if s is None else min(ck, s)
    # One tile of ALL (batch, head) pairs fits the budget; only when the pairs alone exceed it
    # (over BUDGET / FLOOR**2 of them) do the tiles stop shrinking, at FLOOR x FLOOR per pair.
    assert pairs * tile_q * tile_k <= max(BUDGET, pairs * FLOOR * FLOOR)
    one_tile = t is not None and s is not None and cq >= t and ck >= s
    if t is not None and s is not None and pairs * t * s <= BUDGET:
        assert (cq, ck) == (t, s)  # the whole score tensor fits: the dense fast path
    elif one_tile:
        assert t * s <= FLOOR * FLOOR
    # Tiles are no smaller than needed: not below the floor (or the length), and the lengths
    # split into equal chunks, so padding adds less than one row per chunk.
    for length, chunk in ((t, cq), (s, ck)):
        assert chunk >= min(FLOOR, length or FLOOR)
        if length is not None:
            chunks = -(-length // chunk)
            assert chunks * chunk - length < chunks


def test_default_tiles_at_lra_shapes():
    # One example, 4 heads: 512 x 512 tiles (4 MiB of float32 scores for the call) from the
    # point where [1, 4, T, S] no longer fits the budget.
    assert kernels.default_chunk_sizes(1, 4, 512, 512) == (512, 512)
    assert kernels.default_chunk_sizes(1, 4, 1024, 1024) == (512, 512)
    assert kernels.default_chunk_sizes(1, 4, 4096, 4096) == (512, 512)
    assert kernels.default_chunk_sizes(1, 4, 8193, 8193) == (482, 482)  # 17 equal chunks
    # The LRA text model: batch 32 x 4 heads at 4000 tokens + CLS: tiles of 128 pairs x 89^2.
    cq, ck = kernels.default_chunk_sizes(32, 4, 4001, 4001)
    assert (cq, ck) == (89, 89) and 32 * 4 * cq * ck <= BUDGET
    # A chunk size the user gives is kept; the other one fills the budget.
    assert kernels.default_chunk_sizes(8, 8, 8, 8, 3, None) == (3, 8)
    assert kernels.default_chunk_sizes(1, 4, 4096, 4096, 1024, 1024) == (1024, 1024)
    assert kernels.default_chunk_sizes(1, 4, 4096, 4096, 128, None) == (128, 2048)


@pytest.mark.skipif(BACKEND != "jax", reason="XLA's compiled memory analysis (JAX backend)")
def test_jax_compiled_memory_grows_linearly_with_the_length():
    # The default tiling's forward+backward, compiled (not run) at L and 2L: XLA's temporary
    # memory must grow about linearly. A dense score tensor per call grows 4x per doubling.
    import jax

    def temp_bytes(length):
        shape = jax.ShapeDtypeStruct((1, 4, length, 64), "float32")
        mask = jax.ShapeDtypeStruct((1, length), "bool")

        def loss(q, k, v, key_mask):
            return ops.sum(kernels.chunked_attention(q, k, v, key_mask) ** 2)

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return grad.lower(shape, shape, shape, mask).compile().memory_analysis().temp_size_in_bytes

    short, long = temp_bytes(1024), temp_bytes(2048)
    assert long <= 2.5 * short, (short, long)
    assert long < 4 * 2048 * 2048 * 4  # below ONE [1, 4, 2L, 2L] float32 score tensor


def test_matches_dense_numpy_reference_through_the_layer():
    layer = get_attention("chunked", num_heads=HEADS, key_dim=KEY_DIM, query_chunk_size=3)
    x = np.random.default_rng(3).normal(size=(2, 11, DIM)).astype("float32")
    mask = lengths_mask([11, 6], 11)
    y = to_numpy(layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True))
    q, k, v = (to_numpy(d(x)) for d in (layer._query_dense, layer._key_dense, layer._value_dense))
    attended = dense_attention(q, k, v, padding_allowed(mask, mask, causal=True))
    expected = to_numpy(layer._output_dense(attended.astype("float32"))) * mask[..., None]
    np.testing.assert_allclose(y, expected, atol=ATOL)


def test_unknown_length_functional_model():
    # needs_static_length is False: the chunk counts follow the traced length.
    assert not ChunkedAttention.needs_static_length
    layer = ChunkedAttention(num_heads=HEADS, key_dim=KEY_DIM, query_chunk_size=4, key_chunk_size=3)
    seq = keras.Input((None, DIM))
    model = keras.Model(seq, layer(seq, seq, use_causal_mask=True))
    for length in (5, 11):
        x = np.random.default_rng(length).normal(size=(2, length, DIM)).astype("float32")
        np.testing.assert_allclose(
            to_numpy(model(x)), to_numpy(layer(x, x, use_causal_mask=True)), atol=ATOL
        )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a tf.function traced with None lengths")
def test_unknown_length_tf_function_with_gradients():
    import tensorflow as tf

    layer = ChunkedAttention(num_heads=HEADS, key_dim=KEY_DIM, query_chunk_size=4, key_chunk_size=3)
    x = np.random.default_rng(4).normal(size=(2, 10, DIM)).astype("float32")
    mask = lengths_mask([10, 6], 10)
    expected = to_numpy(layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True))
    traced = tf.function(
        lambda x, m: layer(x, x, query_mask=m, value_mask=m, use_causal_mask=True),
        input_signature=[tf.TensorSpec([None, None, DIM]), tf.TensorSpec([None, None], tf.bool)],
    )
    np.testing.assert_allclose(traced(x, mask).numpy(), expected, atol=ATOL)

    # The kernel's recomputing gradient, traced with unknown lengths, equals the eager one.
    q, k, v, key_mask = _kernel_inputs(11, 9)

    def grads(q, k, v, key_mask):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = kernels.chunked_attention(q, k, v, key_mask, True, 4, 3, None, 0.2, 5)
            loss = tf.reduce_sum(out**2)
        return tape.gradient(loss, [q, k, v])

    specs = [tf.TensorSpec([None, 3, None, d]) for d in (4, 4, 5)]
    traced_grads = tf.function(
        grads, input_signature=specs + [tf.TensorSpec([None, None], tf.bool)]
    )
    tensors = [tf.constant(a) for a in (q, k, v)]
    for a, b in zip(traced_grads(*tensors, key_mask), grads(*tensors, key_mask), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=ATOL)


# ------------------------------------------------------------------------------- the kernels


def _kernel_inputs(t, s, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, 3, t, 4)).astype("float32")
    k = rng.normal(size=(2, 3, s, 4)).astype("float32")
    v = rng.normal(size=(2, 3, s, 5)).astype("float32")
    key_mask = lengths_mask([s, s // 2 + 1], s)
    return q, k, v, key_mask


def _numpy_hash(x):
    """lowbias32 (Wellons), written again in numpy from its definition."""
    x = np.asarray(x, np.uint64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def _numpy_keep_mask(seed, rate, b, h, t, s):
    """The documented keep rule: hash chained over (seed, b * H + h, i, j) >= rate * 2**32."""
    u64 = np.uint64
    bh = (np.arange(b, dtype=u64)[:, None] * u64(h) + np.arange(h, dtype=u64)).reshape(b, h, 1, 1)
    i = np.arange(t, dtype=u64).reshape(1, 1, t, 1)
    j = np.arange(s, dtype=u64).reshape(1, 1, 1, s)
    mask32 = u64(0xFFFFFFFF)
    stream = _numpy_hash(u64(seed) + u64(0x632BE5AB))
    stream = _numpy_hash(stream ^ ((bh * u64(0x9E3779B9)) & mask32))
    stream = _numpy_hash(stream ^ ((i * u64(0x85EBCA6B)) & mask32))
    bits = _numpy_hash(stream ^ ((j * u64(0xC2B2AE35)) & mask32))
    return bits >= round(rate * 2.0**32)


def _dense(q, k, v, key_mask, causal, rate=0.0, seed=0):
    """Dense float64 attention (heads first), dropout applied to the normalised probabilities."""
    b, h, t = q.shape[:3]
    s = k.shape[2]
    allowed = np.broadcast_to(
        padding_allowed(np.ones((b, t), bool), key_mask, causal), (b, h, t, s)
    )
    logits = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed, logits, -np.inf)
    row_max = np.max(np.where(allowed, logits, -1e300), axis=-1, keepdims=True)
    weights = np.where(allowed, np.exp(logits - row_max), 0.0)
    denom = weights.sum(-1, keepdims=True)
    probs = np.divide(weights, denom, out=np.zeros_like(weights), where=denom > 0)
    if rate:
        probs = probs * _numpy_keep_mask(seed, rate, b, h, t, s) / (1.0 - rate)
    return np.einsum("bhqk,bhkd->bhqd", probs, v)


def _kernel_grads(fn, q, k, v, key_mask, causal, chunks, weights, rate=0.0, seed=0):
    def loss(q, k, v):
        out = fn(q, k, v, key_mask, causal, *chunks, dropout_rate=rate, dropout_seed=seed)
        return ops.sum(out * weights), out

    return loss_and_grads(loss, [q, k, v])


@pytest.mark.parametrize("rate", [0.0, 0.3], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "t, s, chunks",
    [(13, 13, (4, 5)), (7, 12, (4, 5)), (12, 7, (5, 3)), (6, 6, (64, 64)), (5, 9, (1, 1))],
)
def test_kernels_match_dense_reference_and_each_other(t, s, chunks, causal, rate):
    q, k, v, key_mask = _kernel_inputs(t, s)
    expected = _dense(q, k, v, key_mask, causal, rate, seed=5)
    weights = np.random.default_rng(1).normal(size=expected.shape).astype("float32")
    # The dispatcher runs this backend's kernel (TF custom gradient, JAX custom_vjp).
    args = (q, k, v, key_mask, causal, chunks, weights, rate, 5)
    out_kernel, g_kernel = _kernel_grads(kernels.chunked_attention, *args)
    out_ref, g_ref = _kernel_grads(kernels.chunked_attention_reference, *args)
    np.testing.assert_allclose(out_kernel, expected, atol=ATOL)
    np.testing.assert_allclose(out_ref, expected, atol=ATOL)
    for a, b in zip(g_kernel, g_ref, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_dropout_mask_drops_the_rate_and_depends_on_the_seed():
    from lra_keras.layers.attention import attention_dropout

    keep = to_numpy(attention_dropout.keep_mask(3, 0.3, 2, 4, np.arange(64), np.arange(64)))
    assert abs(1.0 - keep.mean() - 0.3) < 0.01
    np.testing.assert_array_equal(keep, _numpy_keep_mask(3, 0.3, 2, 4, 64, 64))
    other = to_numpy(attention_dropout.keep_mask(4, 0.3, 2, 4, np.arange(64), np.arange(64)))
    assert (keep != other).mean() > 0.3


@pytest.mark.parametrize("rate", [0.0, 0.5], ids=["no_dropout", "dropout"])
def test_kernel_gradients_match_finite_differences(rate):
    # An independent check of the hand-written backward pass (not only against autodiff).
    q, k, v, key_mask = _kernel_inputs(5, 6, seed=4)
    q, k, v = (x.astype("float64") for x in (q, k, v))
    weights = np.random.default_rng(5).normal(size=(2, 3, 5, 5))

    def loss(q, k, v):
        return np.sum(_dense(q, k, v, key_mask, True, rate, seed=9) * weights)

    _, grads = _kernel_grads(
        kernels.chunked_attention,
        q.astype("float32"),
        k.astype("float32"),
        v.astype("float32"),
        key_mask,
        True,
        (2, 4),
        weights.astype("float32"),
        rate,
        9,
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
    for fn, chunks in (
        (kernels.chunked_attention, (4, 2)),
        (kernels.chunked_attention, (None, None)),  # the one-tile path
        (kernels.chunked_attention_reference, (4, 2)),
    ):
        out, grads = _kernel_grads(fn, q, k, v, key_mask, True, chunks, weights)
        np.testing.assert_array_equal(out[1], 0.0)
        np.testing.assert_array_equal(out[0, :, :3], 0.0)
        np.testing.assert_allclose(out, _dense(q, k, v, key_mask, True), atol=ATOL)
        for g in grads:
            assert np.all(np.isfinite(g))


def test_compiled_equals_eager():
    q, k, v, key_mask = _kernel_inputs(11, 9)
    weights = np.random.default_rng(6).normal(size=(2, 3, 11, 5)).astype("float32")
    args = (kernels.chunked_attention, q, k, v, key_mask, True, (4, 4), weights, 0.2, 3)
    eager_out, _ = _kernel_grads(*args)
    step = compiled(
        lambda q, k, v: kernels.chunked_attention(
            q, k, v, key_mask, True, 4, 4, dropout_rate=0.2, dropout_seed=3
        )
    )
    np.testing.assert_allclose(to_numpy(step(q, k, v)), eager_out, atol=ATOL)


def test_mixed_precision_output_dtype_and_float32_accuracy():
    q, k, v, key_mask = _kernel_inputs(9, 9)
    expected = _dense(q, k, v, key_mask, False)
    for dtype, atol in (("float16", 5e-3), ("bfloat16", 5e-2)):
        args = [ops.cast(x, dtype) for x in (q, k, v)]
        out = kernels.chunked_attention(*args, key_mask, False, 4, 4)
        assert keras.backend.standardize_dtype(out.dtype) == dtype
        np.testing.assert_allclose(to_numpy(ops.cast(out, "float32")), expected, atol=atol)


@pytest.mark.parametrize("arg", ["query_chunk_size", "key_chunk_size"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_chunk_sizes_are_refused(arg, bad):
    with pytest.raises(ValueError, match=arg):
        ChunkedAttention(num_heads=1, key_dim=2, **{arg: bad})
    q, k, v, key_mask = _kernel_inputs(4, 4)
    with pytest.raises(ValueError, match=arg):
        kernels.chunked_attention(q, k, v, key_mask, **{arg: bad})


def test_dropout_without_seed_is_refused():
    q, k, v, key_mask = _kernel_inputs(4, 4)
    with pytest.raises(ValueError, match="seed"):
        kernels.chunked_attention(q, k, v, key_mask, dropout_rate=0.1)


def test_config_keeps_chunk_sizes():
    layer = ChunkedAttention(num_heads=2, key_dim=4, query_chunk_size=7, key_chunk_size=9)
    config = layer.get_config()
    assert config["query_chunk_size"] == 7 and config["key_chunk_size"] == 9
    clone = ChunkedAttention.from_config(config)
    assert (clone.query_chunk_size, clone.key_chunk_size) == (7, 9)


# --------------------------------------------------------------------------- the fused path


@pytest.mark.skipif(
    BACKEND != "jax", reason="the fused path is keras.ops.dot_product_attention on JAX"
)
@pytest.mark.parametrize("rolled", [False, True], ids=["prefix_mask", "non_prefix_mask"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [(9, 9), (9, 5), (9, 0)], ids=["full", "padded", "empty_row"])
def test_fused_path_matches_exact_paths(causal, lengths, rolled):
    # On CPU the fused path runs JAX's unfused `dot_product_attention` (the cuDNN call's
    # reference); a mask that is not a prefix (or leaves a row empty) must take the fallback.
    import jax.numpy as jnp

    q, k, v, _ = _kernel_inputs(9, 9, seed=7)
    v = v[..., :4]  # cuDNN needs equal head sizes
    mask = lengths_mask(list(lengths), 9)
    if rolled:
        mask = np.roll(mask, 2, axis=1)
    heads_last = [x.transpose(0, 2, 1, 3) for x in (q, k, v)]
    weights = np.random.default_rng(8).normal(size=heads_last[0].shape).astype("float32")

    def exact(q, k, v):
        out = kernels.chunked_attention(
            *(jnp.transpose(x, (0, 2, 1, 3)) for x in (q, k, v)), mask, causal, 4, 4
        )
        return jnp.transpose(out, (0, 2, 1, 3))

    def fused(q, k, v):
        return kernels.fused_attention(
            q, k, v, mask, causal, 0.5, lambda: exact(q, k, v), implementation="xla"
        )

    def loss(fn):
        return lambda *a: (ops.sum(fn(*a) * weights), fn(*a))

    out_exact, g_exact = loss_and_grads(loss(exact), heads_last)
    out_fused, g_fused = loss_and_grads(loss(fused), heads_last)
    expected = _dense(q, k, v, mask, causal).transpose(0, 2, 1, 3)
    rows = np.broadcast_to(mask.any(-1)[:, None, None, None], expected.shape)
    np.testing.assert_allclose(out_fused[rows], expected[rows], atol=ATOL)
    np.testing.assert_allclose(out_exact, out_fused, atol=ATOL)
    for a, b in zip(g_exact, g_fused, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)


@pytest.mark.skipif(BACKEND != "jax", reason="the fused path exists on JAX only")
@pytest.mark.parametrize("name", ["full", "chunked"])
def test_layers_fused_path_matches_their_exact_path(name, monkeypatch):
    # The layers' fused branch, forced on a CPU with JAX's unfused reference of the cuDNN call.
    from lra_keras.layers.kernels import chunked_attention_jax

    layer = get_attention(name, num_heads=HEADS, key_dim=KEY_DIM, seed=2)
    x = np.random.default_rng(9).normal(size=(2, 10, DIM)).astype("float32")
    mask = lengths_mask([10, 6], 10)
    weights = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    layer(x, x)  # built eagerly, so its weights are made outside the compiled gradient

    def loss(x):
        y = layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True)
        return ops.sum(y * weights), y

    exact = loss_and_grads(loss, [x], layer.trainable_variables)
    monkeypatch.setattr(kernels, "fused_attention_supported", lambda *a, **k: True)
    monkeypatch.setattr(chunked_attention_jax, "FUSED_IMPLEMENTATION", "xla")
    calls, original = [], kernels.fused_attention
    monkeypatch.setattr(
        kernels, "fused_attention", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    fused = loss_and_grads(loss, [x], layer.trainable_variables)
    assert calls, "the fused path was not taken"
    np.testing.assert_allclose(fused[0], exact[0], atol=ATOL)
    for a, b in zip(fused[1], exact[1], strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_fused_path_is_not_taken_on_cpu():
    q = np.zeros((1, 8, 2, 8), "float16")
    assert not kernels.fused_attention_supported(q, q, q, causal=False, dropout_active=False)
