"""MaskedBatchNormalization and `norm="batch"` in the encoder: statistics over real tokens."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lra_keras.layers import LRAEncoder, MaskedBatchNormalization, TransformerEncoderBlock
from tests.layers.reference import lengths_mask

EPS = 1e-5
MOMENTUM = 0.9


def masked_moments(x, mask):
    """Per-feature mean and (biased) variance over the real tokens, written out in numpy."""
    real = x[mask]  # [real tokens, dim]
    return real.mean(0), real.var(0)


def batch(seed=0, lengths=(6, 3, 1), length=6, dim=4):
    x = np.random.default_rng(seed).normal(2.0, 3.0, size=(len(lengths), length, dim))
    return x.astype("float32"), lengths_mask(list(lengths), length)


def layer():
    bn = MaskedBatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    bn.build((None, None, 4))
    return bn


def test_training_uses_masked_moments_and_updates_the_moving_statistics():
    x, mask = batch()
    bn = layer()
    y = np.asarray(bn(x, mask=mask, training=True))
    mean, var = masked_moments(x.astype("float64"), mask)
    want = (x - mean) / np.sqrt(var + EPS)
    np.testing.assert_allclose(y[mask], want[mask], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), (1 - MOMENTUM) * mean, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(bn.moving_variance), MOMENTUM + (1 - MOMENTUM) * var, rtol=1e-5
    )


def test_padding_never_changes_statistics_or_real_outputs():
    x, mask = batch()
    bn_a, bn_b = layer(), layer()
    y_a = np.asarray(bn_a(x, mask=mask, training=True))
    junk = x.copy()
    junk[~mask] = np.array([1e6, -1e6, np.inf, np.nan], "float32")
    y_b = np.asarray(bn_b(junk, mask=mask, training=True))
    np.testing.assert_allclose(y_b[mask], y_a[mask], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(bn_b.moving_mean), np.asarray(bn_a.moving_mean))
    np.testing.assert_array_equal(
        np.asarray(bn_b.moving_variance), np.asarray(bn_a.moving_variance)
    )


def test_inference_uses_the_moving_statistics():
    x, mask = batch()
    bn = layer()
    bn(x, mask=mask, training=True)
    mm, mv = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
    other, _ = batch(seed=3)
    y = np.asarray(bn(other, mask=mask, training=False))
    np.testing.assert_allclose(y, (other - mm) / np.sqrt(mv + EPS), rtol=1e-4, atol=1e-4)
    # ... and inference leaves them alone.
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), mm)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_batch_never_reaches_the_moving_statistics(bad):
    x, mask = batch()
    bn = layer()
    x[0, 0, 1] = bad  # a real token
    y = np.asarray(bn(x, mask=mask, training=True))
    assert not np.all(np.isfinite(y[..., 1][mask])), "the output propagates it"
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), 0.0)
    np.testing.assert_array_equal(np.asarray(bn.moving_variance), 1.0)


def test_a_fully_padded_batch_is_finite_and_leaves_the_statistics():
    x, _ = batch()
    bn = layer()
    y = np.asarray(bn(x, mask=np.zeros(x.shape[:2], bool), training=True))
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), 0.0)
    np.testing.assert_array_equal(np.asarray(bn.moving_variance), 1.0)


def test_keras_batch_normalization_masked_moments_agree():
    """Keras' own layer takes masked moments too (but updates from any batch): checked here
    because the encoder depends on the masked semantics."""
    x, mask = batch()
    bn = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    y = np.asarray(bn(x, mask=mask, training=True))
    mean, var = masked_moments(x.astype("float64"), mask)
    np.testing.assert_allclose(y[mask], ((x - mean) / np.sqrt(var + EPS))[mask], atol=1e-3)


def test_config_round_trip():
    bn = MaskedBatchNormalization(momentum=0.8, epsilon=1e-4)
    clone = MaskedBatchNormalization.from_config(bn.get_config())
    assert (clone.momentum, clone.epsilon) == (0.8, 1e-4)
    with pytest.raises(ValueError, match="axis"):
        MaskedBatchNormalization(axis=1)


def block(norm):
    return TransformerEncoderBlock(
        num_heads=2, key_dim=4, mlp_dim=16, norm=norm, dropout=0.0, attention_dropout=0.0
    )


def test_block_with_batch_norm_ignores_padding_in_training():
    x, mask = batch(dim=8)
    b = block("batch")
    y_a = np.asarray(b(x, padding_mask=mask, training=True))
    junk = x.copy()
    junk[~mask] = 1e4
    y_b = np.asarray(block_copy(b)(junk, padding_mask=mask, training=True))
    np.testing.assert_allclose(y_b[mask], y_a[mask], rtol=1e-4, atol=1e-4)
    assert isinstance(b.attention_norm, MaskedBatchNormalization)
    assert isinstance(b.mlp_norm, MaskedBatchNormalization)
    assert b.get_config()["norm"] == "batch"
    # The statistics moved in training; inference then uses them.
    assert not np.allclose(np.asarray(b.attention_norm.moving_mean), 0.0)


def block_copy(b):
    clone = TransformerEncoderBlock.from_config(b.get_config())
    clone.build((None, None, 8))
    clone.set_weights(b.get_weights())
    # Fresh statistics, as `b` had before its first call.
    for norm in (clone.attention_norm, clone.mlp_norm):
        norm.moving_mean.assign(np.zeros(8, "float32"))
        norm.moving_variance.assign(np.ones(8, "float32"))
    return clone


def test_encoder_norm_follows_the_norm_choice_and_is_padding_invariant():
    args = dict(
        vocab_size=30,
        max_length=8,
        embed_dim=8,
        num_layers=1,
        num_heads=2,
        key_dim=4,
        mlp_dim=16,
        dropout=0.0,
        attention_dropout=0.0,
        norm="batch",
    )
    enc = LRAEncoder(**args)
    assert isinstance(enc.final_norm, MaskedBatchNormalization)
    assert isinstance(
        LRAEncoder(**{**args, "norm": "layer"}).final_norm, keras.layers.LayerNormalization
    )
    tokens = np.random.default_rng(0).integers(1, 30, size=(3, 8)).astype("int32")
    mask = lengths_mask([8, 5, 2], 8)
    tokens = np.where(mask, tokens, 0).astype("int32")
    enc.build(tokens.shape)
    weights = enc.get_weights()
    y_a = np.asarray(enc(tokens, training=True))
    # The same rows with two fully padded rows added: more padding, the same real tokens.
    enc2 = LRAEncoder(**args)
    enc2.build(tokens.shape)
    enc2.set_weights(weights)
    more = np.concatenate([tokens, np.zeros((2, 8), "int32")])
    y_b = np.asarray(enc2(more, training=True))[:3]
    np.testing.assert_allclose(y_b[mask], y_a[mask], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="`norm`"):
        LRAEncoder(**{**args, "norm": "rms"})
    with pytest.raises(ValueError, match="`norm`"):
        block("group")
