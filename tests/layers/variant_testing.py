"""Helpers for the block-sparse variant tests: run `_attend` directly and compare to full."""

from __future__ import annotations

import keras
import numpy as np

from lra_keras.layers import FullAttention
from tests.layers.reference import lengths_mask

DIM = 8


def random_qkv(length, heads=2, key_dim=4, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        rng.normal(size=(batch, length, heads, key_dim)).astype("float32") for _ in range(3)
    )


def padding_mask(length, batch=2):
    """One full row and one with its last 4 positions padded."""
    return lengths_mask([length, length - 4][:batch], length)


def attend(layer, q, k, v, mask, causal=False):
    """The variant's `_attend` on projected tensors (the layer is built for this length)."""
    if not layer.built:
        layer.build((q.shape[0], q.shape[1], DIM), (k.shape[0], k.shape[1], DIM))
    out = layer._attend(
        keras.ops.convert_to_tensor(q),
        keras.ops.convert_to_tensor(k),
        keras.ops.convert_to_tensor(v),
        query=None,
        query_mask=keras.ops.convert_to_tensor(mask),
        key_mask=keras.ops.convert_to_tensor(mask),
        causal=causal,
        training=False,
    )
    return keras.ops.convert_to_numpy(out)


def assert_layer_equals_full(layer, length, causal=False, seed=0):
    """The whole layer (projections included) equals FullAttention with the same weights."""
    x = np.random.default_rng(seed).normal(size=(2, length, DIM)).astype("float32")
    mask = padding_mask(length)
    full = FullAttention(num_heads=layer.num_heads, key_dim=layer.key_dim)
    y_full = full(x, x, query_mask=mask, value_mask=mask, use_causal_mask=causal)
    layer(x, x, query_mask=mask, value_mask=mask)
    layer.load_mha_weights(full)
    y = layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=causal)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(y_full), atol=1e-5
    )
