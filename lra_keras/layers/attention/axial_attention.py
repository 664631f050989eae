"""Axial attention: row attention, then column attention with its own projections."""

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
    so L must equal h * w): row attention, then column attention over the row attention's
    output, each a multi-head attention with its own projections (untied, as the separate row
    and column attention layers of Ho et al.).

    1. Row stage: the base's `query`, `key` and `value` projections of the input `x`; each
       position attends to the positions of its row,
       `Y_heads = softmax_row(q k^T / sqrt(key_dim)) v`, and the row stage's output projection
       `row_output` maps the heads back to the input's dimension: `Y = row_output(Y_heads)`.
    2. Column stage: its own projections `column_query`, `column_key` and `column_value` of
       `Y`; each position attends to the positions of its column, and the base's
       `attention_output` projection gives the layer's output.

    Every position receives every position's value through the two stages. With
    `axis_shape = (1, L)` the row stage is full attention (and each column holds one token).
    `load_mha_weights` fills the row stage, a whole MultiHeadAttention's worth: `query`, `key`
    and `value`, and its `attention_output` into `row_output`; the column stage keeps its own
    weights. Time and memory O(L (h + w) d). Not causal (raster-causal generation is out of
    scope); self-attention only; the length is fixed by the grid.

    Args:
        num_heads: int. Number of attention heads (both stages).
        key_dim: int. Size of each head for query and key (both stages).
        axis_shape: pair of int, required. The grid (height, width); L must be h * w.
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training: as `BaseAttention`.
        `use_causal_mask=True` raises a ValueError.

    Returns:
        `[batch, h * w, output_dim]`, zero at padded query positions.

    Masking: padded keys are excluded in both stages (-1e9 bias in a float32 softmax); the row
    output is zeroed at padded positions before the column projections, so padded positions
    reach no real output; padded query rows are zero. Attention dropout applies to both
    stages' probabilities.

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
    static_length_argument = "`axis_shape` (the grid the sequence fills, L = rows * columns)"

    def __init__(self, num_heads: int, key_dim: int, axis_shape=None, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        if axis_shape is None:
            raise ValueError(
                "AxialAttention: `axis_shape` (height, width) is required, e.g. (32, 32) for "
                "a 32x32 image; the sequence length must be height * width."
            )
        self.axis_shape = attention_utils.int_pair(axis_shape, "axis_shape", "AxialAttention")

    def _check_length(self, length):
        attention_utils.check_grid_length(length, self.axis_shape, "axis_shape", "AxialAttention")

    def _build_variant(self, query_shape, value_shape):
        self._check_length(query_shape[1])
        dim = query_shape[-1]
        bias = "de" if self.use_bias else None
        heads_shape = tuple(query_shape[:2]) + (self.num_heads, self.value_dim)
        self._row_output_dense = keras.layers.EinsumDense(
            "abcd,cde->abe",
            output_shape=(None, dim),
            bias_axes="e" if self.use_bias else None,
            name="row_output",
            **self._sublayer_kwargs(),
        )
        self._row_output_dense.build(heads_shape)
        row_shape = tuple(query_shape[:2]) + (dim,)
        for attr, name, size in (
            ("_column_query_dense", "column_query", self.key_dim),
            ("_column_key_dense", "column_key", self.key_dim),
            ("_column_value_dense", "column_value", self.value_dim),
        ):
            layer = keras.layers.EinsumDense(
                "abc,cde->abde",
                output_shape=(None, self.num_heads, size),
                bias_axes=bias,
                name=name,
                **self._sublayer_kwargs(),
            )
            layer.build(row_shape)
            setattr(self, attr, layer)

    def _grid_attention(self, q, k, v, grid_mask, axis: str, training):
        """Attention within each row (`axis="row"`) or column of the grid, all heads.

        q, k `[B, L, H, dk]`, v `[B, L, H, dv]`, grid_mask `[B, h, w]`; returns `[B, L, H, dv]`.
        """
        h, w = self.axis_shape
        q = ops.multiply(q, ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype))
        q, k, v = (ops.reshape(x, (-1, h, w) + tuple(x.shape[2:])) for x in (q, k, v))
        if axis == "row":
            logits = ops.einsum("brqhd,brkhd->bhrqk", q, k)
            mask = grid_mask[:, None, :, None, :]
            probs = attention_utils.masked_softmax(logits, mask)
            out = ops.einsum("bhrqk,brkhd->brqhd", self._dropout_probs(probs, training), v)
        else:
            logits = ops.einsum("bqchd,bkchd->bhcqk", q, k)
            mask = ops.transpose(grid_mask, (0, 2, 1))[:, None, :, None, :]
            probs = attention_utils.masked_softmax(logits, mask)
            out = ops.einsum("bhcqk,bkchd->bqchd", self._dropout_probs(probs, training), v)
        return ops.reshape(out, (-1, h * w) + tuple(out.shape[3:]))

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        length = attention_utils.static_length(q, 1, "AxialAttention")
        self._check_length(length)
        h, w = self.axis_shape
        grid_mask = ops.reshape(key_mask, (-1, h, w))
        rows = self._grid_attention(q, k, v, grid_mask, "row", training)
        y = self._row_output_dense(ops.cast(rows, self.compute_dtype))
        # The column stage's keys and values never see what padded positions hold.
        y_kv = attention_utils.zero_padded(y, key_mask)
        y_q = attention_utils.zero_padded(y, query_mask)
        q2 = self._column_query_dense(y_q)
        k2 = self._column_key_dense(y_kv)
        v2 = self._column_value_dense(y_kv)
        return self._grid_attention(q2, k2, v2, grid_mask, "column", training)

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """A row stage over `width` keys, the row output and column q/k/v projections, and a
        column stage over `height` keys."""
        height, width = self.axis_shape
        built = getattr(self, "_row_output_dense", None)
        dim = int(built.kernel.shape[-1]) if built is not None else self.num_heads * self.key_dim
        hk, hv = self.num_heads * self.key_dim, self.num_heads * self.value_dim
        projections = 2 * batch * query_length * (hv * dim + dim * (2 * hk + hv))
        return int(self._pair_flops(batch, query_length, height + width) + projections)

    def load_mha_weights(self, other) -> None:
        """Fills the row stage from a MultiHeadAttention or BaseAttention (both built).

        `query`, `key` and `value` are copied as for any variant and the other layer's
        `attention_output` goes into `row_output`; the column stage (`column_query`,
        `column_key`, `column_value` and `attention_output`) keeps its own weights.
        """
        if not self.built:
            return super().load_mha_weights(other)  # Raises its "needs both built" error.
        own_output = self._output_dense
        # The base copies the four named projections; pointing its `attention_output` slot at
        # the row stage's output projection makes it fill the row stage. object.__setattr__
        # keeps Keras's sublayer tracking out of the swap.
        object.__setattr__(self, "_output_dense", self._row_output_dense)
        try:
            super().load_mha_weights(other)
        finally:
            object.__setattr__(self, "_output_dense", own_output)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"axis_shape": self.axis_shape})
        return config
