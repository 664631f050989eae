"""Linformer attention (Wang et al. 2020): keys and values projected along the length."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention


@register_attention("linformer")
@keras.saving.register_keras_serializable(package="lra_keras")
class LinformerAttention(BaseAttention):
    """Linformer attention: `softmax(Q (E K)^T / sqrt(d)) (F V)` with learned `E, F` of `k x L`.

    `E` and `F` are stored as `[max_length, projection_dim]` kernels (one per layer, shared by
    the heads, as in LRA); with `share_kv=True` one kernel serves as both. An input shorter than
    `max_length` uses the first L rows; a longer one raises a `ValueError`. With
    `max_length=None` (the default) the length is the input's static length at build, so
    `get_attention("linformer", num_heads=..., key_dim=...)` works like any other name; an
    unknown length at build then raises a `ValueError` naming `max_length`
    (`needs_static_length`). O(L k d) time and
    memory. Self-attention only and not causal (the projection mixes all positions). Attention
    dropout applies to the `[T, projection_dim]` probabilities.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        max_length: int or None. Longest sequence the layer accepts (rows of `E` and `F`);
            None (default) takes the input's static length at build.
        projection_dim: int. Projected length k.
        share_kv: bool. Use one projection for keys and values (E = F).
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments; the projection
            kernels use `kernel_initializer`, `kernel_regularizer` and `kernel_constraint`.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training: as `BaseAttention`.
        No `use_causal_mask`, no dense `attention_mask`, no attention scores.

    Returns:
        `[batch, T, output_dim]`.

    Masking: the rows of K and V at padded positions are zeroed before projecting (LRA does
    not), so padded tokens add nothing to the projected keys and values; padded query rows of the
    output are zero.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import LinformerAttention
    >>> layer = LinformerAttention(num_heads=2, key_dim=8, max_length=64, projection_dim=16)
    >>> x = np.random.rand(2, 50, 16).astype("float32")
    >>> tuple(layer(x, x).shape)
    (2, 50, 16)
    >>> from lra_keras.layers import get_attention
    >>> layer = get_attention("linformer", num_heads=2, key_dim=8)  # max_length from the input
    >>> _ = layer(x, x)
    >>> tuple(layer.key_projection.shape)
    (50, 256)

    Reference:
        Wang et al., "Linformer: Self-Attention with Linear Complexity", arXiv 2006.04768, 2020.
    """

    supports_causal = False
    strictly_causal = False
    supports_cross_attention = False
    needs_static_length = True
    static_length_argument = (
        "`max_length` (the rows of its E and F projections; None takes the input's length)"
    )

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        max_length: int | None = None,
        projection_dim: int = 256,
        share_kv: bool = True,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.max_length = attention_utils.checked_int(
            max_length, "max_length", "LinformerAttention", allow_none=True
        )
        # The rows of E and F: `max_length`, or the length the layer is built at.
        self._rows = self.max_length
        self.projection_dim = attention_utils.checked_int(
            projection_dim, "projection_dim", "LinformerAttention"
        )
        self.share_kv = bool(share_kv)

    def _check_length(self, length):
        attention_utils.check_max_length(
            length,
            self._rows,
            "LinformerAttention",
            "its E and F projections have `max_length` rows",
        )

    def _projection_weight(self, name):
        return self.add_weight(
            name=name,
            shape=(self._rows, self.projection_dim),
            # A distinct seed per kernel: E and F are independent when not shared.
            initializer=self._fresh_initializer(),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def _build_variant(self, query_shape, value_shape):
        if self._rows is None:
            # Known here: `build` refuses an unknown length first (`needs_static_length`).
            self._rows = int(value_shape[1])
        self._check_length(value_shape[1])
        self.key_projection = self._projection_weight("key_projection")
        # With share_kv the one kernel is used for both (a second attribute would track it twice).
        self.value_projection = (
            None if self.share_kv else self._projection_weight("value_projection")
        )

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        length = k.shape[1]
        self._check_length(length)
        value_projection = self.key_projection if self.share_kv else self.value_projection
        # The length-wise sums run in float32: they add up to max_length terms.
        e = attention_utils.to_float32(self.key_projection[:length])
        f = attention_utils.to_float32(value_projection[:length])
        k = attention_utils.zero_padded(attention_utils.to_float32(k), key_mask)
        v = attention_utils.zero_padded(attention_utils.to_float32(v), key_mask)
        k_low = ops.einsum("bshd,sp->bphd", k, e)
        v_low = ops.einsum("bshd,sp->bphd", v, f)
        q = attention_utils.to_float32(q) * (1.0 / math.sqrt(self.key_dim))
        logits = ops.einsum("bthd,bphd->bhtp", q, k_low)
        probs = self._dropout_probs(attention_utils.masked_softmax(logits), training)
        return ops.einsum("bhtp,bphd->bthd", probs, ops.cast(v_low, probs.dtype))

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Projecting K and V to `projection_dim` rows, then attention over those rows."""
        k = min(self.projection_dim, self._rows or int(key_length))
        return 2 * self._pair_flops(batch, query_length, k)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "max_length": self.max_length,
                "projection_dim": self.projection_dim,
                "share_kv": self.share_kv,
            }
        )
        return config
