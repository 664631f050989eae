"""ReformerAttention: LSH attention against numpy references (dense shared-QK and sorted chunks)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lra_keras.layers import ReformerAttention
from lra_keras.layers.attention import attention_utils
from tests.layers.reference import dense_attention, lengths_mask, padding_allowed
from tests.layers.variant_testing import DIM, attend, random_qkv

EPS = 1e-6


def normalised_keys(q):
    q = np.asarray(q, np.float64)
    return q / np.sqrt(np.sum(q**2, -1, keepdims=True) + EPS * q.shape[-1])


def self_rule(allowed):
    """A token attends to the allowed others; to itself only when no other key is allowed."""
    allowed = np.array(allowed, bool)
    eye = np.eye(allowed.shape[-1], dtype=bool)
    others = allowed & ~eye
    alone = ~others.any(-1, keepdims=True)
    return others | (alone & eye & allowed)


def lsh_reference(q, v, mask, rotations, bucket_size, causal):
    """Reformer LSH attention in float64 numpy, one (batch, head) at a time: buckets from the
    rotations, a (bucket, position) sort, each token's allowed keys written as a dense L x L
    pattern (same or previous sorted chunk), per-round dense softmax and lse, rounds combined.
    Returns [B, L, H, dv] (only rows with an allowed key are meaningful)."""
    q, v = np.asarray(q, np.float64), np.asarray(v, np.float64)
    batch, length, heads, d = q.shape
    hashes = rotations.shape[2]
    c = min(bucket_size, length)
    lp = -(-length // c) * c
    nb = 2 * -(-length // bucket_size)
    pad = ((0, 0), (0, lp - length), (0, 0), (0, 0))
    q, v = np.pad(q, pad), np.pad(v, pad)
    mask = np.pad(np.asarray(mask, bool), ((0, 0), (0, lp - length)))
    kn = normalised_keys(q)
    pos = np.arange(lp)
    out = np.zeros(v.shape)
    for b in range(batch):
        for h in range(heads):
            logits = q[b, :, h] @ kn[b, :, h].T
            outs, lses = [], []
            for r in range(hashes):
                rot = q[b, :, h] @ rotations[h, :, r, :]
                bucket = np.argmax(np.concatenate([rot, -rot], -1), -1)
                bucket[~mask[b]] = nb
                rank = np.empty(lp, int)
                rank[np.lexsort((pos, bucket))] = pos
                chunk = rank // c
                window = (chunk[None, :] == chunk[:, None]) | (
                    chunk[None, :] == (chunk[:, None] - 1) % (lp // c)
                )
                allowed = window & mask[b][None, :]
                if causal:
                    allowed &= pos[None, :] <= pos[:, None]
                rule = self_rule(allowed)
                penalty = np.where(np.eye(lp, dtype=bool), 1e5, 0.0)
                z = np.where(rule, logits - penalty, -np.inf)
                m = np.max(z, -1, keepdims=True)
                m = np.where(np.isfinite(m), m, 0.0)
                w = np.exp(z - m)
                # A row with no allowed key at all (a padded token) gets lse 0 and output 0.
                total = np.where(rule.any(-1), w.sum(-1), 1.0)
                lses.append(np.log(total) + m[:, 0])
                outs.append((w / total[:, None]) @ v[b, :, h])
            lse = np.stack(lses)
            weights = np.exp(lse - lse.max(0))
            weights /= weights.sum(0)
            out[b, :, h] = np.einsum("rl,rld->ld", weights, np.stack(outs))
    return out[:, :length]


def make_layer(bucket_size, num_hashes=2, seed=7, **kwargs):
    return ReformerAttention(
        num_heads=2, key_dim=4, bucket_size=bucket_size, num_hashes=num_hashes, seed=seed, **kwargs
    )


def test_num_buckets_is_even_and_follows_the_length():
    layer = make_layer(4)
    assert [layer.num_buckets(n) for n in (1, 4, 5, 13, 16)] == [2, 2, 4, 8, 8]


@pytest.mark.parametrize(
    "x_shape,index_shape,axis",
    [
        ((2, 3, 9, 5), (2, 3, 4, 1), 2),  # Fewer rows than the axis (routing's top-w).
        ((2, 3, 9, 5, 2), (2, 1, 9), 2),  # Broadcast leading axis, two trailing axes.
        ((2, 3, 9), (2, 3, 12), 2),  # No trailing axis, repeated rows.
        ((4, 7, 3), (4, 7), -2),
    ],
)
def test_gather_rows_equals_numpy_take_along_axis(x_shape, index_shape, axis):
    rng = np.random.default_rng(1)
    x = rng.normal(size=x_shape).astype("float32")
    length = x_shape[axis]
    index = rng.integers(0, length, size=index_shape)
    ax = axis % len(x_shape)
    expanded = index.reshape(index_shape[: ax + 1] + (1,) * (len(x_shape) - ax - 1))
    lead = np.broadcast_shapes(x_shape[:ax], index_shape[:ax])
    expanded = np.broadcast_to(expanded, lead + expanded.shape[ax:])
    expected = np.take_along_axis(x, expanded, axis=ax)
    got = attention_utils.gather_rows(tf.constant(x), tf.constant(index, "int32"), axis)
    np.testing.assert_array_equal(got.numpy(), expected)
    # A dynamic leading (batch) size, traced.
    spec = tf.TensorSpec((None,) + x_shape[1:], "float32")
    traced = tf.function(lambda a: attention_utils.gather_rows(a, index, axis), [spec])
    np.testing.assert_array_equal(traced(tf.constant(x)).numpy(), expected)


@pytest.mark.parametrize("jit", [False, True])
def test_gather_permutation_gradient_equals_plain_gather(jit):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 3, 9, 5)), "float32")
    weights = tf.constant(rng.normal(size=(2, 3, 9, 5)), "float32")
    perm = np.argsort(rng.normal(size=(2, 3, 9)), axis=-1)[..., None]
    perm, inverse = tf.constant(perm, "int32"), tf.constant(np.argsort(perm, axis=-2), "int32")

    def value_and_grad(x, sorted_gather):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if sorted_gather:
                y = attention_utils.gather_permutation(x, perm, inverse, axis=2)
            else:
                y = keras.ops.take_along_axis(x, perm, axis=2)
            loss = tf.reduce_sum(weights * y**2)
        return y, tape.gradient(loss, x)

    y_ref, g_ref = value_and_grad(x, False)
    fn = tf.function(value_and_grad, jit_compile=True) if jit else value_and_grad
    y, g = fn(x, True)
    np.testing.assert_array_equal(y.numpy(), y_ref.numpy())
    np.testing.assert_allclose(g.numpy(), g_ref.numpy(), atol=1e-6)


@pytest.mark.parametrize("num_hashes", [1, 2])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_one_chunk_equals_dense_shared_qk_attention(num_hashes, causal, padded):
    length = 11
    q, _, v = random_qkv(length, seed=1)
    mask = lengths_mask([length, 6 if padded else length], length)
    layer = make_layer(bucket_size=16, num_hashes=num_hashes)
    got = attend(layer, q, np.zeros_like(q), v, mask, causal=causal)
    allowed = self_rule(padding_allowed(mask, mask, causal))
    want = dense_attention(q, normalised_keys(q), v, allowed, scale=1.0)
    np.testing.assert_allclose(got[mask], want[mask], atol=1e-5)


@pytest.mark.parametrize(
    "length,bucket_size,causal,padded",
    [(13, 4, False, True), (13, 4, True, True), (7, 4, False, False), (21, 3, True, False)],
)
def test_sorted_chunks_match_numpy_lsh(length, bucket_size, causal, padded):
    q, _, v = random_qkv(length, seed=2)
    mask = lengths_mask([length, length - 5 if padded else length], length)
    layer = make_layer(bucket_size)
    got = attend(layer, q, np.zeros_like(q), v, mask, causal=causal)
    rotations = keras.ops.convert_to_numpy(layer.inference_rotations)
    want = lsh_reference(q, v, mask, rotations, bucket_size, causal)
    np.testing.assert_allclose(got[mask], want[mask], atol=1e-5)


def test_key_projection_is_unused_and_mha_weights_load():
    x = np.random.default_rng(3).normal(size=(2, 13, DIM)).astype("float32")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    mha(x, x)
    layer = make_layer(4)
    layer(x, x)
    layer.load_mha_weights(mha)
    np.testing.assert_array_equal(
        layer._query_dense.kernel.numpy(), mha._query_dense.kernel.numpy()
    )
    y = keras.ops.convert_to_numpy(layer(x, x))
    layer._key_dense.kernel.assign(np.random.default_rng(4).normal(size=(DIM, 2, 4)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, x)), y)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, x, training=True) ** 2)
    grads = tape.gradient(loss, [layer._key_dense.kernel, layer._query_dense.kernel])
    np.testing.assert_array_equal(grads[0].numpy(), 0.0)  # Zero, not None.
    assert np.abs(grads[1].numpy()).max() > 0


def test_rotations_redrawn_in_training_fixed_at_inference():
    x = np.random.default_rng(5).normal(size=(2, 29, DIM)).astype("float32")
    layer = make_layer(4, num_hashes=1)
    infer = [keras.ops.convert_to_numpy(layer(x, x)) for _ in range(2)]
    np.testing.assert_array_equal(infer[0], infer[1])
    train = [keras.ops.convert_to_numpy(layer(x, x, training=True)) for _ in range(2)]
    assert np.abs(train[0] - train[1]).max() > 1e-3
    twin = make_layer(4, num_hashes=1)
    twin(x, x)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(twin.inference_rotations),
        keras.ops.convert_to_numpy(layer.inference_rotations),
    )


def test_unseeded_layer_round_trips_through_keras_archive(tmp_path):
    x = np.random.default_rng(6).normal(size=(2, 13, DIM)).astype("float32")
    inp = keras.Input((13, DIM))
    model = keras.Model(inp, make_layer(4, seed=None)(inp, inp))
    y = keras.ops.convert_to_numpy(model(x))
    path = os.path.join(tmp_path, "reformer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), y)


def test_gradients_match_dense_shared_qk_in_one_chunk():
    length = 9
    q, _, v = (tf.constant(a) for a in random_qkv(length, seed=8))
    mask = lengths_mask([length, 5], length)
    layer = make_layer(bucket_size=16)
    layer.build((2, length, DIM), (2, length, DIM))
    allowed = tf.constant(self_rule(padding_allowed(mask, mask, causal=True)))
    weights = tf.constant(mask[:, :, None, None], "float32")

    def loss(q, v, reformer):
        if reformer:
            out = layer._attend(
                q, q, v, query=None, query_mask=mask, key_mask=mask, causal=True, training=False
            )
        else:
            k = q / tf.sqrt(tf.reduce_sum(q**2, -1, keepdims=True) + EPS * 4)
            logits = tf.einsum("bqhd,bkhd->bhqk", q, k)
            probs = tf.nn.softmax(tf.where(allowed, logits, -1e9), -1)
            out = tf.einsum("bhqk,bkhd->bqhd", probs, v)
        return tf.reduce_sum(weights * tf.sin(out))

    grads = []
    for reformer in (True, False):
        with tf.GradientTape() as tape:
            tape.watch([q, v])
            value = loss(q, v, reformer)
        grads.append(tape.gradient(value, [q, v]))
    for got, want in zip(grads[0], grads[1], strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_invalid_arguments_and_lengths():
    with pytest.raises(ValueError, match="bucket_size"):
        ReformerAttention(num_heads=2, key_dim=4, bucket_size=0)
    with pytest.raises(ValueError, match="num_hashes"):
        ReformerAttention(num_heads=2, key_dim=4, num_hashes=1.5)
    layer = make_layer(4)
    with pytest.raises(ValueError, match="static sequence length"):
        layer.build((2, None, DIM), (2, None, DIM))
    layer = make_layer(4)
    x = np.zeros((1, 13, DIM), "float32")
    layer(x, x)
    assert tuple(layer(x[:, :6], x[:, :6]).shape) == (1, 6, DIM)
    longer = np.zeros((1, 17, DIM), "float32")
    with pytest.raises(ValueError, match="built for at most 8 buckets"):
        layer(longer, longer)
