"""Local attention: softmax attention inside contiguous, non-overlapping blocks."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention


@register_attention("local")
@keras.saving.register_keras_serializable(package="lra_keras")
class LocalAttention(BaseAttention):
    """Block-local attention: the sequence is cut into contiguous blocks of `block_size`
    tokens and each token attends only to the tokens of its own block (LRA's "Local").

    Time and memory are O(L * block_size). The LRA reference reshapes to
    `(batch, block_size, num_blocks)` and so attends over strided groups
    `{j, j + nb, j + 2 nb, ...}`; this layer uses contiguous blocks `[n b, (n + 1) b)`, as the
    model intends. The last block is padded internally (never a whole extra block). With
    `block_size >= L` it is exactly full attention. Self-attention only.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        block_size: int. Tokens per block (default 64; LRA text 50, image 64).
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention`. `use_causal_mask=True` makes each block lower-triangular (strictly
        causal).

    Returns:
        `[batch, L, output_dim]`, zero at padded query positions.

    Masking: padded keys (and the internal padding of the last block) get a -1e9 bias in a
    float32 softmax inside each block; padded query rows are zero. Attention dropout applies to
    the block probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import LocalAttention
    >>> layer = LocalAttention(num_heads=2, key_dim=8, block_size=4)
    >>> x = np.random.rand(2, 10, 16).astype("float32")
    >>> tuple(layer(x, x, use_causal_mask=True).shape)
    (2, 10, 16)

    Reference:
        Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", ICLR 2021;
        Parmar et al., "Image Transformer", ICML 2018 (local attention).
    """

    supports_causal = True
    strictly_causal = True
    supports_cross_attention = False
    needs_static_length = False

    def __init__(self, num_heads: int, key_dim: int, block_size: int = 64, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.block_size = attention_utils.checked_int(block_size, "block_size", "LocalAttention")

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        length = attention_utils.dim(q, 1)
        # A block larger than the sequence is the same pattern as one block of length L (with
        # an unknown length, blocks of block_size: the same outputs).
        b = min(self.block_size, length) if isinstance(length, int) else self.block_size
        q = ops.multiply(q, ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype))
        qb = attention_utils.to_blocks(attention_utils.heads_first(q), b, axis=2)
        kb = attention_utils.to_blocks(attention_utils.heads_first(k), b, axis=2)
        vb = attention_utils.to_blocks(attention_utils.heads_first(v), b, axis=2)
        mb = attention_utils.to_blocks(key_mask, b, axis=1, value=False)  # [B, nb, b]
        logits = ops.einsum("bhnqd,bhnkd->bhnqk", qb, kb)
        mask = mb[:, None, :, None, :]
        if causal:
            mask = ops.logical_and(mask, attention_utils.causal_mask(b, b))
        probs = self._dropout_probs(attention_utils.masked_softmax(logits, mask), training)
        out = ops.einsum("bhnqk,bhnkd->bhnqd", probs, vb)
        return attention_utils.heads_last(attention_utils.from_blocks(out, length, axis=2))

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Each query scores the `block_size` keys of its block (padded to whole blocks)."""
        b = min(self.block_size, query_length)
        return self._pair_flops(batch, -(-query_length // b) * b, b)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"block_size": self.block_size})
        return config
