"""Softmax attention, the Transformer baseline."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_dropout, attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention
from lra_keras.layers.kernels import chunked_attention as kernels


@register_attention("full")
@keras.saving.register_keras_serializable(package="lra_keras")
class FullAttention(BaseAttention):
    """Full softmax attention, O(L^2) time and memory: the baseline every variant is measured by.

    With weights loaded from a `keras.layers.MultiHeadAttention` (`load_mha_weights`) it gives
    that layer's outputs at real positions. It is one of the two variants that accept a dense
    `attention_mask` and the only one that returns attention scores.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, attention_mask,
        return_attention_scores, training, use_causal_mask: as `BaseAttention`.

    Returns:
        `[batch, T, output_dim]`, and `[batch, heads, T, S]` probabilities when
        `return_attention_scores=True`.

    Masking: padded keys get a -1e9 bias in a float32 softmax; padded query rows of the output
    are zero (MultiHeadAttention leaves them non-zero; only real positions are comparable).

    Attention dropout (`dropout`, in training) uses the stateless mask of
    `lra_keras.layers.attention.attention_dropout`, the one `chunked` regenerates tile by
    tile, so the two are equal in training for the same `seed`. Where the backend has a fused
    exact kernel for the call (cuDNN flash attention on JAX on a GPU, float16/bfloat16, no
    dense `attention_mask`, no scores returned, no dropout, prefix padding), it is used, with
    the same values and gradients.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import FullAttention
    >>> layer = FullAttention(num_heads=2, key_dim=8)
    >>> x = np.random.rand(1, 10, 16).astype("float32")
    >>> out, scores = layer(x, x, return_attention_scores=True, use_causal_mask=True)
    >>> tuple(out.shape), tuple(scores.shape)
    ((1, 10, 16), (1, 2, 10, 10))

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
    """

    supports_attention_scores = True
    supports_attention_mask = True

    def _attend(
        self,
        q,
        k,
        v,
        *,
        query,
        query_mask,
        key_mask,
        causal,
        training,
        attention_mask=None,
        return_attention_scores=False,
    ):
        scale = 1.0 / math.sqrt(self.key_dim)
        rate = self.dropout if training and self.dropout > 0.0 else 0.0

        def dense():
            scaled = ops.multiply(q, ops.cast(scale, q.dtype))
            logits = ops.einsum("bqhd,bkhd->bhqk", scaled, k)
            mask = key_mask[:, None, None, :]
            if causal:
                mask = ops.logical_and(
                    mask,
                    attention_utils.causal_mask(
                        attention_utils.dim(q, 1), attention_utils.dim(k, 1)
                    ),
                )
            if attention_mask is not None:
                mask = ops.logical_and(mask, attention_mask[:, None, :, :])
            probs = attention_utils.masked_softmax(logits, mask)
            if rate:
                seed = attention_dropout.draw_dropout_seed(self.seed_generator)
                dropped = attention_dropout.apply_attention_dropout(probs, seed, rate)
                dropped = ops.cast(dropped, self.compute_dtype)
            else:
                dropped = ops.cast(probs, self.compute_dtype)
            return ops.einsum("bhqk,bkhd->bqhd", dropped, v), probs

        if (
            attention_mask is None
            and not return_attention_scores
            and kernels.fused_attention_supported(q, k, v, causal=causal, dropout_active=bool(rate))
        ):
            return kernels.fused_attention(q, k, v, key_mask, causal, scale, lambda: dense()[0])
        out, probs = dense()
        if return_attention_scores:
            return out, probs
        return out
