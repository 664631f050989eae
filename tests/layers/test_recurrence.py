"""Transformer-XL and Compressive Transformer layers against explicit references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lra_keras.layers import (
    CompressiveTransformerBlock,
    RelativeMultiHeadAttention,
    SegmentRecurrentEncoder,
    TransformerXLBlock,
)
from lra_keras.layers.recurrence.relative_multi_head_attention import rel_shift, two_sided_shift

DIM = 16


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def encoder(**kwargs):
    args = dict(num_layers=2, num_heads=2, key_dim=8, mlp_dim=32, dropout=0.0)
    args["attention_dropout"] = 0.0
    args.update(kwargs)
    return SegmentRecurrentEncoder(**args)


def test_rel_shift_equals_explicit_gather():
    length, memory = 5, 3
    keys = length + memory
    raw = rand(2, 3, length, keys)
    shifted = keras.ops.convert_to_numpy(rel_shift(raw))
    for i in range(length):
        for j in range(memory + i + 1):  # the valid (non-future) region
            # Column p of raw is distance keys-1-p; (i, j) is distance memory + i - j.
            p = keys - 1 - (memory + i - j)
            np.testing.assert_array_equal(shifted[:, :, i, j], raw[:, :, i, p])


@pytest.mark.parametrize("length,memory", [(1, 0), (1, 4), (5, 0), (5, 3), (4, 9)])
def test_two_sided_shift_equals_explicit_gather(length, memory):
    keys = length + memory
    raw = rand(2, 3, length, length + keys - 1)
    shifted = keras.ops.convert_to_numpy(two_sided_shift(raw, keys))
    assert shifted.shape == (2, 3, length, keys)
    for i in range(length):
        for j in range(keys):
            np.testing.assert_array_equal(shifted[:, :, i, j], raw[:, :, i, j + length - 1 - i])


def test_two_sided_shift_refuses_wrong_position_count():
    with pytest.raises(ValueError, match="expected 7 relative positions"):
        two_sided_shift(rand(1, 1, 3, 6), 5)


def test_relative_attention_is_causal_and_zero_on_padding():
    attn = RelativeMultiHeadAttention(2, 8)
    x = rand(2, 6, DIM)
    mask = np.arange(6)[None] < np.array([[6], [4]])
    y = keras.ops.convert_to_numpy(attn(x, x, query_mask=mask, value_mask=mask))
    np.testing.assert_array_equal(y[1, 4:], 0.0)
    changed = x.copy()
    changed[:, 3:] = rand(2, 3, DIM, seed=1)
    y2 = keras.ops.convert_to_numpy(attn(changed, changed, query_mask=mask, value_mask=mask))
    np.testing.assert_allclose(y2[:, :3], y[:, :3], atol=1e-5)


def test_non_causal_relative_positions_match_two_sided_distances():
    # Without causality the positional term is an explicit gather over two-sided distances;
    # check it against scoring every (i, j) pair directly.
    attn = RelativeMultiHeadAttention(1, 4, use_bias=False)
    x, memory = rand(1, 3, DIM), rand(1, 2, DIM, seed=2)
    value = np.concatenate([memory, x], axis=1)
    attn(x, value, use_causal_mask=False)
    q = np.einsum("btd,dhk->bthk", x, attn._query_dense.kernel.numpy()) / 2.0
    k = np.einsum("bsd,dhk->bshk", value, attn._key_dense.kernel.numpy())
    v = np.einsum("bsd,dhk->bshk", value, attn._value_dense.kernel.numpy())
    u, w = attn.content_bias.numpy(), attn.position_bias.numpy()
    logits = np.zeros((3, 5))
    for i in range(3):
        for j in range(5):
            r = keras.ops.convert_to_numpy(attn._encode(np.array([2 + i - j]), DIM))[0]
            logits[i, j] = (q[0, i, 0] + u[0] / 2) @ k[0, j, 0] + (q[0, i, 0] + w[0] / 2) @ r[0]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    heads = np.einsum("ts,sk->tk", probs, v[0, :, 0])
    expected = heads @ attn._output_dense.kernel.numpy()[0]
    got = keras.ops.convert_to_numpy(attn(x, value, use_causal_mask=False))[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_two_segments_equal_one_causal_pass():
    length = 4
    x = rand(2, 2 * length, DIM)
    recurrent = encoder(segment_length=length, memory_length=length)
    single = encoder(segment_length=2 * length, memory_length=length)
    recurrent(x)
    single(x)
    single.set_weights(recurrent.get_weights())
    a = keras.ops.convert_to_numpy(recurrent(x))
    b = keras.ops.convert_to_numpy(single(x))
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_padding_in_memory_is_ignored():
    length = 4
    x = rand(1, 2 * length, DIM)
    mask = np.ones((1, 2 * length), bool)
    mask[0, 1] = False
    enc = encoder(segment_length=length, memory_length=length)
    y = keras.ops.convert_to_numpy(enc(x, padding_mask=mask))
    changed = x.copy()
    changed[0, 1] = 100.0
    y2 = keras.ops.convert_to_numpy(enc(changed, padding_mask=mask))
    np.testing.assert_allclose(y2[0, length:], y[0, length:], atol=1e-5)


def test_causality_across_segments():
    enc = encoder(segment_length=3, memory_length=3)
    x = rand(2, 10, DIM)
    y = keras.ops.convert_to_numpy(enc(x))
    changed = x.copy()
    changed[:, 5:] = rand(2, 5, DIM, seed=3)
    y2 = keras.ops.convert_to_numpy(enc(changed))
    np.testing.assert_allclose(y2[:, :5], y[:, :5], atol=1e-5)


def test_no_gradient_flows_into_memory():
    block = TransformerXLBlock(num_heads=2, key_dim=8, mlp_dim=32, memory_length=4)
    x = tf.constant(rand(2, 4, DIM))
    memory = tf.constant(rand(2, 4, DIM, seed=1))
    with tf.GradientTape() as tape:
        tape.watch(memory)
        y, new_memory = block(x, memory=memory)
        loss = tf.reduce_sum(y) + tf.reduce_sum(new_memory)
    grad = tape.gradient(loss, memory)
    assert grad is None or np.all(grad.numpy() == 0)


def test_compressed_memory_fifo_lengths():
    segment, memory, compressed, rate = 4, 4, 6, 2
    enc = encoder(
        block="compressive",
        segment_length=segment,
        memory_length=memory,
        compressed_memory_length=compressed,
        compression_rate=rate,
    )
    for segments in (1, 2, 3, 9):
        _, state = enc(rand(2, segments * segment, DIM), return_state=True)
        for layer in state:
            assert layer["memory"].shape == (2, memory, DIM)
            assert layer["compressed_memory"].shape == (2, compressed, DIM)
            evicted = max(segments * segment - memory, 0)
            valid = min(evicted // rate, compressed)
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(layer["compressed_memory_mask"]).sum(-1), valid
            )


def test_mean_compression_of_constant_memory_has_zero_loss():
    block = CompressiveTransformerBlock(
        num_heads=2,
        key_dim=8,
        mlp_dim=32,
        memory_length=4,
        compressed_memory_length=4,
        compression_rate=2,
        compression="mean",
    )
    x = rand(2, 4, DIM)
    constant = np.broadcast_to(rand(2, 1, DIM, seed=4), (2, 4, DIM)).copy()
    block(x, memory=constant)
    assert len(block.losses) == 1
    assert float(block.losses[0]) < 1e-10


def test_reconstruction_loss_trains_only_the_compressor():
    block = CompressiveTransformerBlock(
        num_heads=2,
        key_dim=8,
        mlp_dim=32,
        memory_length=4,
        compressed_memory_length=4,
        compression_rate=2,
        compression="conv",
    )
    x = rand(2, 4, DIM)
    memory = tf.constant(rand(2, 4, DIM, seed=5))
    block(x, memory=memory)
    with tf.GradientTape() as tape:
        block(x, memory=memory)
        loss = tf.add_n(block.losses)
    grads = tape.gradient(loss, block.trainable_variables)
    for var, grad in zip(block.trainable_variables, grads, strict=True):
        nonzero = grad is not None and np.any(tf.convert_to_tensor(grad).numpy() != 0)
        assert nonzero == ("compressor" in var.path), var.path


@pytest.mark.parametrize("block", ["transformer_xl", "compressive"])
def test_encoder_config_round_trip(block):
    enc = encoder(block=block, segment_length=3, memory_length=3, compressed_memory_length=2)
    x = rand(2, 7, DIM)
    y = keras.ops.convert_to_numpy(enc(x))
    clone = SegmentRecurrentEncoder.from_config(enc.get_config())
    clone(x)
    clone.set_weights(enc.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), y, atol=1e-6)
    assert clone.get_config() == enc.get_config()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="block"):
        SegmentRecurrentEncoder(block="lstm")
    with pytest.raises(ValueError, match="compression"):
        CompressiveTransformerBlock(num_heads=1, key_dim=4, mlp_dim=8, compression="zip")


def _relative_attention(policy="float32", **kwargs):
    return RelativeMultiHeadAttention(2, 8, dtype=policy, **kwargs)


def _xl_block(policy="float32"):
    return TransformerXLBlock(
        num_heads=2, key_dim=8, mlp_dim=16, memory_length=4, dropout=0.0, dtype=policy
    )


def _compressive_block(policy="float32"):
    return CompressiveTransformerBlock(
        num_heads=2,
        key_dim=8,
        mlp_dim=16,
        memory_length=4,
        compressed_memory_length=2,
        dropout=0.0,
        dtype=policy,
    )


def _compressive_encoder(policy="float32"):
    return encoder(block="compressive", segment_length=4, compressed_memory_length=2, dtype=policy)


RECURRENCE_CASES = {
    # Each: (factory, call on (layer, x, memory) -> the first output).
    "relative": (_relative_attention, lambda m, x, mem: m(x, np.concatenate([mem, x], 1))),
    "transformer_xl": (_xl_block, lambda m, x, mem: m(x, mem)[0]),
    "compressive": (_compressive_block, lambda m, x, mem: m(x, mem, mem[:, :2])[0]),
    "encoder": (_compressive_encoder, lambda m, x, mem: m(np.concatenate([mem, x], 1))),
}


# Relative error against float32 with the same weights: measured <= 1.0e-3 (float16) and
# <= 7e-3 (bfloat16) for all four; the bounds are the attention contract's.
@pytest.mark.parametrize("policy,bound", [("mixed_float16", 2e-3), ("mixed_bfloat16", 2e-2)])
@pytest.mark.parametrize("kind", sorted(RECURRENCE_CASES))
def test_mixed_precision_close_to_float32_and_trains(kind, policy, bound):
    make, run = RECURRENCE_CASES[kind]
    x, memory = rand(2, 6, DIM), rand(2, 4, DIM, seed=1)
    reference = make()
    y32 = keras.ops.convert_to_numpy(run(reference, x, memory))
    layer = make(policy)
    run(layer, x, memory)
    layer.set_weights(reference.get_weights())
    x_var = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = run(layer, x_var, memory)
        loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    y = np.asarray(y, np.float64)
    assert np.abs(y - y32).max() / np.abs(y32).max() <= bound
    grads = tape.gradient(loss, [x_var] + layer.trainable_variables)
    assert all(
        np.all(np.isfinite(np.asarray(tf.convert_to_tensor(g), np.float32)))
        for g in grads
        if g is not None
    )


def test_seeded_initializer_gives_distinct_weights():
    attn = _relative_attention(kernel_initializer=keras.initializers.GlorotUniform(seed=1))
    attn(rand(2, 3, DIM), rand(2, 5, DIM))
    kernels = [w.numpy() for w in attn.weights if w.path.endswith("kernel")]
    assert len(kernels) == 5
    flat = [k.ravel() for k in kernels]
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            n = min(flat[i].size, flat[j].size)
            assert not np.allclose(flat[i][:n], flat[j][:n]), (i, j)
