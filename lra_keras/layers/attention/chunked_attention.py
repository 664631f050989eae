"""Exact softmax attention in O(L) memory (Rabe & Staats 2021), chunk by chunk."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_dropout, attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention
from lra_keras.layers.kernels import chunked_attention as kernel


@register_attention("chunked")
@keras.saving.register_keras_serializable(package="lra_keras")
class ChunkedAttention(BaseAttention):
    """Exact softmax attention computed over query and key chunks, in O(L) memory.

    The result is full softmax attention (to float32 round-off), but no `T x S` matrix is ever
    formed: an online softmax streams over key chunks of each query chunk, keeping a running
    row maximum, normaliser and output accumulator in float32, so the working set is one
    `query_chunk_size x key_chunk_size` tile for every (batch, head) at once, and memory grows
    linearly with the length. By default the tiles are chosen so that the tile of the WHOLE
    call, `batch x heads x query_chunk_size x key_chunk_size` scores, holds at most 2**20
    float32 entries (4 MiB; `kernels.chunked_attention.TILE_BUDGET_ENTRIES`): 512 x 512 for one
    example of 4 heads, 89 x 89 for the LRA text model's batch of 32 x 4 heads at 4K. Only a
    call whose entire `[batch, heads, T, S]` score tensor fits that budget runs as one dense
    tile. Set the chunk sizes to trade memory for speed. On the TensorFlow backend the backward
    pass is FlashAttention-style (`tf.custom_gradient`): the forward keeps only the output and
    the row log-sum-exp, and the backward recomputes each tile's probabilities, in sequential
    `tf.while_loop`s (`lra_keras.layers.kernels.chunked_attention_tf`). On JAX the same
    algorithm is a `jax.custom_vjp` over `lax.scan`s of tiles (`chunked_attention_jax`); other
    backends run a `keras.ops` version unrolled over the chunks, differentiated by their
    autodiff. Where the backend has a fused exact kernel for the call (cuDNN flash attention on
    JAX on a GPU, float16/bfloat16, prefix padding), it is used instead, with the same result.

    Attention dropout (`dropout`, in training) drops each tile's probabilities with a stateless
    mask of (per-call seed, batch, head, query, key), regenerated in the backward pass
    (`lra_keras.layers.attention.attention_dropout`): `full` draws the same mask, so with the
    same `seed` the two layers are equal in training too. Lengths may be unknown when the
    layer is traced (`keras.Input((None, dim))`); they need not be multiples of the chunk sizes
    (internal padding), and chunks larger than a static length shrink to it.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key; logits are scaled by
            `1/sqrt(key_dim)`.
        query_chunk_size: int or None. Queries per chunk. None (default): chosen from the
            batch size, heads and lengths, as `key_chunk_size`.
        key_chunk_size: int or None. Keys per chunk. None (default): one tile only when the
            whole call's scores (`batch * heads * T * S`) fit the 2**20-entry budget, else
            near-square tiles of at most 512 whose scores for all (batch, head) pairs fit it,
            the lengths split into equal chunks (`chunked_attention.default_chunk_sizes`; an
            unknown batch size counts as 32). Larger chunks are faster on some machines and
            take proportionally more memory (measured by `benchmarks.chunked_memory`).
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention`. Cross-attention (query length != key length) is supported; causality
        aligns the first query with the first key. No `attention_mask`, no attention scores.

    Returns:
        `[batch, T, output_dim]`.

    Masking: padded keys are excluded from every chunk's softmax (the internal chunk padding
    too); with `use_causal_mask` key chunks entirely after a query chunk are skipped, and the
    output at t does not depend on inputs after t (strictly causal). Padded query rows of the
    output are zero. A query with no allowed key at all gives a zero row, never NaN (`full`
    gives such a row the uniform average of the values).

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import ChunkedAttention
    >>> layer = ChunkedAttention(num_heads=2, key_dim=8, query_chunk_size=4, key_chunk_size=8)
    >>> x = np.random.rand(2, 13, 16).astype("float32")
    >>> mask = np.arange(13)[None, :] < np.array([[13], [7]])
    >>> tuple(layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True).shape)
    (2, 13, 16)

    Reference:
        Rabe & Staats, "Self-attention Does Not Need O(n^2) Memory", arXiv:2112.05682, 2021.
        Dao et al., "FlashAttention: Fast and Memory-Efficient Exact Attention with
        IO-Awareness", NeurIPS 2022.
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        query_chunk_size: int | None = None,
        key_chunk_size: int | None = None,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.query_chunk_size = attention_utils.checked_int(
            query_chunk_size, "query_chunk_size", "ChunkedAttention", allow_none=True
        )
        self.key_chunk_size = attention_utils.checked_int(
            key_chunk_size, "key_chunk_size", "ChunkedAttention", allow_none=True
        )

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        rate = self.dropout if training and self.dropout > 0.0 else 0.0
        seed = attention_dropout.draw_dropout_seed(self.seed_generator) if rate else None
        scale = 1.0 / math.sqrt(self.key_dim)

        def exact():
            # Heads-last here: [B, T, H, d].
            b, t, h, s = q.shape[0], q.shape[1], q.shape[2], k.shape[1]
            cq, ck = kernel.default_chunk_sizes(
                b, h, t, s, self.query_chunk_size, self.key_chunk_size
            )
            if t is not None and s is not None and t <= cq and s <= ck:
                # One tile: computed in the layer's heads-last layout, as `full` does.
                out = kernel.one_tile_attention(
                    q, k, v, key_mask, causal, scale, rate, seed, heads_last=True
                )
                return ops.cast(out, q.dtype)
            out = kernel.chunked_attention(
                attention_utils.heads_first(q),
                attention_utils.heads_first(k),
                attention_utils.heads_first(v),
                key_mask,
                causal=causal,
                query_chunk_size=self.query_chunk_size,
                key_chunk_size=self.key_chunk_size,
                scale=scale,
                dropout_rate=rate,
                dropout_seed=seed,
            )
            return attention_utils.heads_last(out)

        if kernel.fused_attention_supported(q, k, v, causal=causal, dropout_active=bool(rate)):
            return kernel.fused_attention(q, k, v, key_mask, causal, scale, exact)
        return exact()

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "query_chunk_size": self.query_chunk_size,
                "key_chunk_size": self.key_chunk_size,
            }
        )
        return config
