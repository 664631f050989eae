"""Sparse Transformer attention: the "fixed" and "strided" factorised patterns, block-sparse."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention

_PATTERNS = ("fixed", "strided")


@register_attention("sparse")
@keras.saving.register_keras_serializable(package="lra_keras")
class SparseAttention(BaseAttention):
    """Sparse Transformer attention with the "fixed" or "strided" pattern, merged into one
    softmax per query (the union of the two factorised sets), computed block-sparse.

    With `l = block_size` and `c = num_summary`, query i may attend to key j when:

    - "fixed": j is in i's block (`j // l == i // l`) or j is a summary column
      (`j % l >= l - c`);
    - "strided": `|i - j| < l` (the band) or `(i - j) % l == 0` (the stride).

    Causal (`use_causal_mask=True`) adds `j <= i`: this is the paper's pattern. Without it the
    pattern is the symmetric (two-sided) form: the same sets without `j <= i` (blocks see every
    block's summary columns; the band and the stride reach both ways). The diagonal is always
    allowed, so no real row is empty. LRA's Fixed2 also admits `j % l == 0`; this layer follows
    the paper and does not.

    Computation, never an L x L tensor: queries are cut into blocks of `l`. "fixed": each block
    attends to its own block plus the gathered summary columns of the other blocks
    (O(L (l + L c / l) d)). "strided": each block attends to its neighbouring blocks masked to
    the band, plus, for offset r in the block, the keys at offset r of the other blocks
    (attention along the block axis), O(L (3 l + L / l) d). One float32 softmax covers both
    parts, and a key is never counted twice. With "strided" and `block_size >= L` it is
    exactly causal full attention. Self-attention only.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        pattern: str. "fixed" (default) or "strided".
        block_size: int. The block (stride) length l (default 128; LRA 50).
        num_summary: int. Summary columns c per block for "fixed", 1 <= c <= l (default 32;
            LRA 10). Unused by "strided".
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention`. Causal is strict.

    Returns:
        `[batch, L, output_dim]`, zero at padded query positions.

    Masking: padded keys, including summary columns and strided keys that fall on padding or
    on the internal padding of the last block, get a -1e9 bias in the float32 softmax; padded
    query rows are zero. Attention dropout applies to the probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import SparseAttention
    >>> layer = SparseAttention(num_heads=2, key_dim=8, block_size=4, num_summary=1)
    >>> x = np.random.rand(2, 11, 16).astype("float32")
    >>> tuple(layer(x, x, use_causal_mask=True).shape)
    (2, 11, 16)

    Reference:
        Child et al., "Generating Long Sequences with Sparse Transformers", arXiv:1904.10509,
        2019.
    """

    supports_causal = True
    strictly_causal = True
    supports_cross_attention = False
    needs_static_length = False

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        pattern: str = "fixed",
        block_size: int = 128,
        num_summary: int = 32,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        if pattern not in _PATTERNS:
            raise ValueError(
                f"SparseAttention: `pattern` must be one of {_PATTERNS}, got {pattern!r}."
            )
        self.block_size = attention_utils.checked_int(block_size, "block_size", "SparseAttention")
        self.num_summary = attention_utils.checked_int(
            num_summary, "num_summary", "SparseAttention"
        )
        if pattern == "fixed" and self.num_summary > self.block_size:
            raise ValueError(
                "SparseAttention: with pattern='fixed', `num_summary` must be in [1, block_size] = "
                f"[1, {self.block_size}], got {num_summary!r}."
            )
        self.pattern = pattern

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        length = attention_utils.dim(q, 1)
        q = ops.multiply(q, ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype))
        b = self.block_size
        qb = attention_utils.to_blocks(attention_utils.heads_first(q), b, axis=2)
        kb = attention_utils.to_blocks(attention_utils.heads_first(k), b, axis=2)
        vb = attention_utils.to_blocks(attention_utils.heads_first(v), b, axis=2)
        mb = attention_utils.to_blocks(key_mask, b, axis=1, value=False)  # [B, nb, b]
        if self.pattern == "fixed":
            out = self._fixed(qb, kb, vb, mb, causal, training)
        else:
            out = self._strided(qb, kb, vb, mb, causal, training)
        return attention_utils.heads_last(attention_utils.from_blocks(out, length, axis=2))

    def _softmax_parts(self, logits, masks, training):
        """One float32 softmax over the parts (concatenated keys), with attention dropout."""
        parts = attention_utils.masked_softmax_parts(logits, masks)
        return [self._dropout_probs(p, training) for p in parts]

    def _fixed(self, qb, kb, vb, mb, causal, training):
        b, c = self.block_size, self.num_summary
        nb = attention_utils.dim(qb, 2)
        own_logits = ops.einsum("bhnqd,bhnkd->bhnqk", qb, kb)
        own_mask = mb[:, None, :, None, :]
        if causal:
            own_mask = ops.logical_and(own_mask, attention_utils.causal_mask(b, b))
        if isinstance(nb, int) and nb == 1:
            probs = self._dropout_probs(
                attention_utils.masked_softmax(own_logits, own_mask), training
            )
            return ops.einsum("bhnqk,bhnkd->bhnqd", probs, vb)
        batch, heads, _, _, dk = attention_utils.shape_of(kb)
        dv = attention_utils.dim(vb, -1)
        # The summary columns of every block, gathered once and shared by all query blocks;
        # a block's own summary columns are masked here (they are in its own block already).
        target = attention_utils.reshape_target
        ks = ops.reshape(kb[:, :, :, b - c :, :], target([batch, heads, nb * c, dk]))
        vs = ops.reshape(vb[:, :, :, b - c :, :], target([batch, heads, nb * c, dv]))
        ms = ops.reshape(mb[:, :, b - c :], target([batch, nb * c]))
        sum_logits = ops.einsum("bhnqd,bhsd->bhnqs", qb, ks)
        block_of = ops.repeat(ops.arange(nb), c)[None, :]
        query_block = ops.arange(nb)[:, None]
        allowed = block_of < query_block if causal else block_of != query_block  # [nb, nb*c]
        sum_mask = ops.logical_and(ms[:, None, None, None, :], allowed[None, None, :, None, :])
        p_own, p_sum = self._softmax_parts([own_logits, sum_logits], [own_mask, sum_mask], training)
        return ops.einsum("bhnqk,bhnkd->bhnqd", p_own, vb) + ops.einsum(
            "bhnqs,bhsd->bhnqd", p_sum, vs
        )

    def _strided(self, qb, kb, vb, mb, causal, training):
        b = self.block_size
        nb = attention_utils.dim(qb, 2)
        after = 0 if causal else 1
        # The band |i - j| < b (or -b < j - i <= 0) lies in the previous, own and next blocks.
        k_band = attention_utils.band_blocks(kb, 2, 1, after)
        v_band = attention_utils.band_blocks(vb, 2, 1, after)
        m_band = attention_utils.band_blocks(mb, 1, 1, after, value=False)  # [B, nb, K]
        rel = (np.arange((2 + after) * b)[None, :] - b) - np.arange(b)[:, None]  # j - i
        band = (rel > -b) & (rel <= 0) if causal else np.abs(rel) < b
        band_logits = ops.einsum("bhnqd,bhnkd->bhnqk", qb, k_band)
        band_mask = ops.logical_and(m_band[:, None, :, None, :], band[None, None, None])
        if isinstance(nb, int) and nb == 1:
            probs = self._dropout_probs(
                attention_utils.masked_softmax(band_logits, band_mask), training
            )
            return ops.einsum("bhnqk,bhnkd->bhnqd", probs, v_band)
        # The stride: query (block n, offset r) sees key (block m, offset r) for m != n (m < n
        # when causal); m = n is i itself, already in the band, and m = n +- 1 are not in it.
        col_logits = ops.einsum("bhnrd,bhmrd->bhnrm", qb, kb)
        key_real = ops.transpose(mb, (0, 2, 1))[:, None, None, :, :]  # [B, 1, 1, b, nb]
        blocks = ops.arange(nb)
        allowed = (
            (blocks[None, :] < blocks[:, None]) if causal else blocks[None, :] != blocks[:, None]
        )
        col_mask = ops.logical_and(key_real, allowed[None, None, :, None, :])
        p_band, p_col = self._softmax_parts(
            [band_logits, col_logits], [band_mask, col_mask], training
        )
        return ops.einsum("bhnqk,bhnkd->bhnqd", p_band, v_band) + ops.einsum(
            "bhnrm,bhmrd->bhnrd", p_col, vb
        )

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Own block plus summary columns ("fixed"), or two blocks plus strides ("strided")."""
        b = min(self.block_size, query_length)
        blocks = -(-query_length // b)
        if self.pattern == "fixed":
            keys = b + blocks * min(self.num_summary, b)
        else:
            keys = 2 * b + blocks
        return self._pair_flops(batch, blocks * b, keys)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "pattern": self.pattern,
                "block_size": self.block_size,
                "num_summary": self.num_summary,
            }
        )
        return config
