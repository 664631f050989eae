"""Axial attention: attention along the rows, then along the columns, of a 2D grid."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention


@register_attention("axial")
@keras.saving.register_keras_serializable(package="lra_keras")
class AxialAttention(BaseAttention):
    """Axial attention over an `axis_shape = (h, w)` grid (the sequence is its raster order,
    so L must equal h * w): attention along each row, then along each column.

    One set of projections (the base's q, k, v) serves both stages. Stage 1 (rows): with q, k,
    v at each position, `Y = softmax_row(q k^T / sqrt(d)) v` inside each row. Stage 2
    (columns): `O = softmax_col(q k^T / sqrt(d)) Y` inside each column, with the same q and k
    and the row output Y as the values. So `O[r, c] = sum_r' P_col[(r, c), (r', c)]
    sum_c' P_row[(r', c), (r', c')] v[r', c']`: every position receives every position's
    value through two sparse steps, with no extra weights (so weights load from
    MultiHeadAttention). With `axis_shape = (1, L)` it is full attention (each column holds one
    token). Time and memory O(L (h + w) d). Not causal (raster-causal generation is out of
    scope); self-attention only; the length is fixed by the grid.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        axis_shape: pair of int, required. The grid (height, width); L must be h * w.
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training: as `BaseAttention`.
        `use_causal_mask=True` raises a ValueError.

    Returns:
        `[batch, h * w, output_dim]`, zero at padded query positions.

    Masking: padded keys are excluded in both stages (-1e9 bias in a float32 softmax), so the
    stage-1 rows of padded positions never reach stage 2; padded query rows are zero.
    Attention dropout applies to both stages' probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import AxialAttention
    >>> layer = AxialAttention(num_heads=2, key_dim=8, axis_shape=(3, 4))
    >>> x = np.random.rand(2, 12, 16).astype("float32")
    >>> tuple(layer(x, x).shape)
    (2, 12, 16)

    Reference:
        Ho et al., "Axial Attention in Multidimensional Transformers", arXiv:1912.12180, 2019.
    """

    supports_causal = False
    strictly_causal = False
    supports_cross_attention = False
    needs_static_length = True

    def __init__(self, num_heads: int, key_dim: int, axis_shape=None, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        if axis_shape is None:
            raise ValueError(
                "AxialAttention: `axis_shape` (height, width) is required, e.g. (32, 32) for "
                "a 32x32 image; the sequence length must be height * width."
            )
        self.axis_shape = attention_utils.int_pair(axis_shape, "axis_shape", "AxialAttention")

    def _check_length(self, length):
        h, w = self.axis_shape
        if length is not None and length != h * w:
            raise ValueError(
                f"AxialAttention: the sequence length must equal axis_shape[0] * axis_shape[1] "
                f"= {h} * {w} = {h * w}, got length {length}."
            )

    def _build_variant(self, query_shape, value_shape):
        self._check_length(query_shape[1])

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        length = attention_utils.static_length(q, 1, "AxialAttention")
        self._check_length(length)
        h, w = self.axis_shape
        heads, dk, dv = q.shape[2], q.shape[3], v.shape[3]
        q = ops.multiply(q, ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype))
        q = ops.reshape(attention_utils.heads_first(q), (-1, heads, h, w, dk))
        k = ops.reshape(attention_utils.heads_first(k), (-1, heads, h, w, dk))
        v = ops.reshape(attention_utils.heads_first(v), (-1, heads, h, w, dv))
        grid_mask = ops.reshape(key_mask, (-1, h, w))
        # Stage 1: within each row.
        logits = ops.einsum("bhrqd,bhrkd->bhrqk", q, k)
        probs = attention_utils.masked_softmax(logits, grid_mask[:, None, :, None, :])
        y = ops.einsum("bhrqk,bhrkd->bhrqd", self._dropout_probs(probs, training), v)
        # Stage 2: within each column, the row outputs as values.
        logits = ops.einsum("bhqcd,bhkcd->bhcqk", q, k)
        col_mask = ops.transpose(grid_mask, (0, 2, 1))[:, None, :, None, :]
        probs = attention_utils.masked_softmax(logits, col_mask)
        out = ops.einsum("bhcqk,bhkcd->bhqcd", self._dropout_probs(probs, training), y)
        return attention_utils.heads_last(ops.reshape(out, (-1, heads, h * w, dv)))

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """A row stage over `width` keys and a column stage over `height` keys."""
        height, width = self.axis_shape
        return self._pair_flops(batch, query_length, height + width)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"axis_shape": self.axis_shape})
        return config
