"""LRAEncoder, TransformerEncoderBlock, position embeddings and SequencePooling."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lra_keras.layers import (
    LRAEncoder,
    PositionEmbedding,
    SequencePooling,
    SinusoidalPositionEmbedding,
    TransformerEncoderBlock,
)
from lra_keras.layers.encoder.sinusoidal_position_embedding import sinusoid_table
from tests.layers.reference import lengths_mask


def numpy_sinusoids(length, dim, max_wavelength=10000.0):
    """Flax/LRA's `sinusoidal_init`: sines in the first half, cosines in the second."""
    pe = np.zeros((length, dim))
    position = np.arange(length)[:, None]
    scale = -np.log(max_wavelength) / (dim // 2 - 1)
    div = np.exp(np.arange(dim // 2) * scale)
    pe[:, : dim // 2] = np.sin(position * div)
    pe[:, dim // 2 : 2 * (dim // 2)] = np.cos(position * div)
    return pe


def layer_norm(x, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def encoder(**kwargs):
    args = dict(
        vocab_size=30,
        max_length=12,
        embed_dim=16,
        num_layers=1,
        num_heads=2,
        key_dim=8,
        mlp_dim=32,
        dropout=0.0,
        attention_dropout=0.0,
    )
    args.update(kwargs)
    return LRAEncoder(**args)


def padded_tokens(lengths, length, seed=0):
    ids = np.random.default_rng(seed).integers(1, 30, size=(len(lengths), length))
    return np.where(lengths_mask(lengths, length), ids, 0).astype("int32")


@pytest.mark.parametrize("dim", [8, 9, 32])
def test_sinusoid_table_matches_numpy(dim):
    table = keras.ops.convert_to_numpy(sinusoid_table(50, dim))
    np.testing.assert_allclose(table, numpy_sinusoids(50, dim), atol=2e-5)
    x = np.random.default_rng(0).normal(size=(2, 50, dim)).astype("float32")
    y = keras.ops.convert_to_numpy(SinusoidalPositionEmbedding()(x))
    np.testing.assert_allclose(y - x, np.broadcast_to(numpy_sinusoids(50, dim), x.shape), atol=2e-5)


def test_learned_position_embedding_uses_table_prefix():
    layer = PositionEmbedding(max_length=10)
    x = np.zeros((2, 6, 4), "float32")
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y[0], keras.ops.convert_to_numpy(layer.table)[:6])
    with pytest.raises(ValueError, match="exceeds max_length 10"):
        layer(np.zeros((2, 11, 4), "float32"))


@pytest.mark.parametrize("use_cls_token", [False, True])
def test_shapes_and_mask(use_cls_token):
    enc = encoder(use_cls_token=use_cls_token)
    tokens = padded_tokens([12, 5], 12)
    y = enc(tokens)
    assert y.shape == (2, 12 + use_cls_token, 16)
    mask = keras.ops.convert_to_numpy(enc.compute_mask(tokens))
    expected = tokens > 0
    if use_cls_token:
        expected = np.concatenate([np.ones((2, 1), bool), expected], axis=1)
    np.testing.assert_array_equal(mask, expected)
    image = encoder(use_cls_token=use_cls_token, mask_padding=False)
    assert keras.ops.convert_to_numpy(image.compute_mask(np.zeros((2, 12), "int32"))).all()


@pytest.mark.parametrize("learned_positions", [False, True])
@pytest.mark.parametrize("use_cls_token", [False, True])
def test_embedding_stage_matches_numpy(use_cls_token, learned_positions):
    """With no blocks the encoder is LayerNorm(embedding [+ zero CLS first] + positions)."""
    enc = encoder(num_layers=0, use_cls_token=use_cls_token, learned_positions=learned_positions)
    tokens = padded_tokens([12, 7], 12)
    y = keras.ops.convert_to_numpy(enc(tokens))
    emb = keras.ops.convert_to_numpy(enc.token_embedding.embeddings)[tokens]
    if use_cls_token:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(enc.cls_token), 0.0)
        emb = np.concatenate([np.zeros((2, 1, 16)), emb], axis=1)
    if learned_positions:
        positions = keras.ops.convert_to_numpy(enc.position_embedding.table)
        assert positions.shape == (12 + use_cls_token, 16)
    else:
        positions = numpy_sinusoids(12 + use_cls_token, 16)
    np.testing.assert_allclose(y, layer_norm(emb + positions[None]), atol=1e-4)


def test_cls_output_depends_on_the_tokens():
    enc = encoder(use_cls_token=True)
    a = padded_tokens([12, 12], 12, seed=0)
    b = a.copy()
    b[:, 4] = (b[:, 4] % 29) + 1
    ya, yb = (keras.ops.convert_to_numpy(enc(t)) for t in (a, b))
    assert np.abs(ya[:, 0] - yb[:, 0]).max() > 1e-4


def test_real_positions_ignore_extra_padding():
    short = encoder(max_length=9)
    long = encoder(max_length=15)
    tokens = padded_tokens([9, 4], 9)
    y_short = keras.ops.convert_to_numpy(short(tokens))
    long(np.pad(tokens, [(0, 0), (0, 6)]))
    long.set_weights(short.get_weights())
    y_long = keras.ops.convert_to_numpy(long(np.pad(tokens, [(0, 0), (0, 6)])))
    mask = tokens > 0
    np.testing.assert_allclose(y_long[:, :9][mask], y_short[mask], atol=1e-5)


def test_mask_propagates_to_pooling_in_a_functional_model():
    enc = encoder()
    inputs = keras.Input((12,), dtype="int32")
    model = keras.Model(inputs, SequencePooling("mean")(enc(inputs)))
    tokens = padded_tokens([12, 3], 12)
    encoded = keras.ops.convert_to_numpy(enc(tokens))
    mask = tokens > 0
    expected = (encoded * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(tokens)), expected, atol=1e-5)


def test_sequence_pooling():
    x = np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")
    mask = lengths_mask([5, 2, 0], 5)
    mean = keras.ops.convert_to_numpy(SequencePooling("mean")(x, mask=mask))
    np.testing.assert_allclose(mean[0], x[0].mean(0), atol=1e-6)
    np.testing.assert_allclose(mean[1], x[1, :2].mean(0), atol=1e-6)
    np.testing.assert_array_equal(mean[2], 0.0)  # fully padded: zero, not NaN
    cls = keras.ops.convert_to_numpy(SequencePooling("cls")(x, mask=mask))
    np.testing.assert_array_equal(cls, x[:, 0])
    with pytest.raises(ValueError, match="`mode` must be one of"):
        SequencePooling("median")


def test_block_matches_its_formula():
    """x + Attn(LN x); then + Dense(GELU(Dense(LN .))), dropout off, against numpy."""
    block = TransformerEncoderBlock(
        num_heads=2, key_dim=4, mlp_dim=12, dropout=0.0, attention_dropout=0.0
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    mask = lengths_mask([7, 4], 7)
    y = keras.ops.convert_to_numpy(block(x, padding_mask=mask))
    attn = keras.ops.convert_to_numpy(
        block.attention_layer(
            layer_norm(x).astype("float32"),
            layer_norm(x).astype("float32"),
            query_mask=mask,
            value_mask=mask,
        )
    )
    h = x + attn
    w1, b1 = block.mlp_in.get_weights()
    w2, b2 = block.mlp_out.get_weights()
    from math import erf

    z = layer_norm(h) @ w1 + b1
    gelu = z * 0.5 * (1 + np.vectorize(erf)(z / np.sqrt(2)))
    np.testing.assert_allclose(y, h + gelu @ w2 + b2, atol=1e-4)


def test_block_takes_the_keras_mask():
    block = TransformerEncoderBlock(num_heads=2, key_dim=4, mlp_dim=12, dropout=0.0)
    x = np.random.default_rng(2).normal(size=(2, 6, 8)).astype("float32")
    mask = lengths_mask([6, 3], 6)
    explicit = keras.ops.convert_to_numpy(block(x, padding_mask=mask))
    implicit = keras.ops.convert_to_numpy(block(x, mask=mask))
    np.testing.assert_allclose(implicit, explicit)


def test_config_round_trip_and_keras_file(tmp_path):
    enc = encoder(use_cls_token=True, learned_positions=True, attention="full")
    same = LRAEncoder.from_config(enc.get_config())
    assert same.get_config() == enc.get_config()
    block = TransformerEncoderBlock(num_heads=2, key_dim=4, mlp_dim=12)
    assert TransformerEncoderBlock.from_config(block.get_config()).get_config() == (
        block.get_config()
    )
    pool = SequencePooling("mean")
    assert SequencePooling.from_config(pool.get_config()).mode == "mean"

    inputs = keras.Input((12,), dtype="int32")
    model = keras.Model(inputs, SequencePooling("cls")(enc(inputs)))
    tokens = padded_tokens([12, 6], 12)
    path = str(tmp_path / "encoder.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(tokens)),
        keras.ops.convert_to_numpy(model(tokens)),
        atol=1e-6,
    )


def test_encoder_input_errors():
    enc = encoder()
    with pytest.raises(ValueError, match="exceeds max_length 12"):
        enc(np.ones((1, 13), "int32"))
    with pytest.raises(ValueError, match="integer token ids"):
        encoder()(np.ones((1, 12), "float32"))


def test_max_and_last_pooling_use_real_tokens_only():
    x = np.random.default_rng(1).normal(size=(4, 6, 3)).astype("float32")
    mask = lengths_mask([6, 3, 1, 0], 6)
    # Padded positions hold values that would win a max and sit at position L - 1.
    x[~mask] = 1e6
    got_max = keras.ops.convert_to_numpy(SequencePooling("max")(x, mask=mask))
    got_last = keras.ops.convert_to_numpy(SequencePooling("last")(x, mask=mask))
    for row, n in enumerate([6, 3, 1]):
        np.testing.assert_array_equal(got_max[row], x[row, :n].max(0))
        np.testing.assert_array_equal(got_last[row], x[row, n - 1])
    # A fully padded row: zeros, not -inf or the padded values.
    np.testing.assert_array_equal(got_max[3], 0.0)
    np.testing.assert_array_equal(got_last[3], 0.0)
    # Real tokens need not be a prefix: `last` is the last True of the mask.
    holes = np.array([[True, False, True, False, False, False]] * 4)
    got = keras.ops.convert_to_numpy(SequencePooling("last")(x, mask=holes))
    np.testing.assert_array_equal(got, x[:, 2])
    # Without a mask every position is real.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(SequencePooling("max")(x)), x.max(1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(SequencePooling("last")(x)), x[:, -1])


def test_linear_input_encoding_feeds_normalised_pixels_to_a_dense():
    enc = encoder(
        vocab_size=256,
        input_encoding="linear",
        pixel_stats=(0.4, 0.2),
        mask_padding=False,
    )
    tokens = np.random.default_rng(2).integers(0, 256, size=(2, 12)).astype("int32")
    enc.build(tokens.shape)
    assert isinstance(enc.token_embedding, keras.layers.Dense)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in enc.token_embedding.weights)
    got = keras.ops.convert_to_numpy(enc._encode_tokens(tokens))
    values = (tokens / 255.0 - 0.4) / 0.2
    np.testing.assert_allclose(got, values[..., None] * kernel[0] + bias, rtol=1e-5, atol=1e-5)
    assert tuple(enc(tokens).shape) == (2, 12, 16)
    clone = LRAEncoder.from_config(enc.get_config())
    assert clone.input_encoding == "linear" and clone.pixel_stats == (0.4, 0.2)
    with pytest.raises(ValueError, match="input_encoding"):
        encoder(input_encoding="onehot")
