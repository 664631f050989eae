"""Sinkhorn attention: each block attends to [its Sinkhorn-sorted block, its own block]."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention


@register_attention("sinkhorn")
@keras.saving.register_keras_serializable(package="lra_keras")
class SinkhornAttention(BaseAttention):
    """Sparse Sinkhorn attention: blocks of keys are softly sorted by a Sinkhorn-balanced
    matrix that a learned sort network (SortNet) makes from block summaries, and each query
    block attends with one softmax over the keys of its sorted block and of its own block.

    The sequence is cut into `nb = ceil(L / block_size)` contiguous blocks (the last one padded
    internally); nb is fixed at build, so the length must be static (`needs_static_length`).
    For each head:

    1. Block summaries `e_i`: the mean of the keys of block i over its real tokens (their
       masked sum divided by their count; padded keys and values are zeroed before anything
       mixes blocks). The paper sums; the mean keeps the summary's scale independent of the
       block size and of the padding.
    2. SortNet (the paper's `P(psi(X))`): a two-layer network per head,
       `R_i = W_B relu(W_P e_i + b_P) + b_B`, maps each block's summary to `nb` sort logits,
       one per block: row i says which blocks sorted block i gathers. The weights are the
       `sort_hidden` (`[heads, key_dim, key_dim]`) and `sort_logits` (`[heads, key_dim, nb]`)
       sublayers, computed in float32. Only pairs of real blocks (blocks with at least one
       real token) are allowed; a fully padded block is mapped to itself, so `P` is doubly
       stochastic over all blocks and over the real blocks alone.
    3. In training, Gumbel noise (from `seed_generator`) is added to `R`; then `R / temperature`
       is balanced in log space by `sinkhorn_iterations` rounds of row then column
       log-sum-exp normalisation, and `P = exp(R)`. Columns then sum to 1 exactly and rows
       approximately: the larger the spread of the logits (small temperature), the more rounds
       rows need.
    4. Sorted blocks `K_s = P . K_blocks`, `V_s = P . V_blocks`; a sorted key position counts as
       real when `P . key_mask_blocks > 0.5` (more than half of its mass comes from real
       tokens).
    5. Each query block attends with ONE float32 softmax over `[sorted block i, own block i]`
       (2 * block_size keys). With `sortcut_blocks=n` (SortCut), every query attends to
       `[sorted blocks 0..n-1 (concatenated, n * block_size keys), own block]` instead of its own
       sorted block; `n` is capped at the number of blocks.

    How it differs from the LRA code (`sinkhorn_attention.py`): LRA sums the keys of each
    block and maps them with ONE dense layer (shared by the heads) to `max_num_blocks = 25`
    logits sliced to nb; by default it normalises `R` with a row softmax only (no Sinkhorn
    rounds, no Gumbel noise; its "sinkhorn" option runs one round at temperature 1, clipped),
    and it sums two separate softmaxes over the sorted and the own block. This layer follows
    the paper: a two-layer ReLU SortNet per head, Gumbel-Sinkhorn balancing, one joint softmax.

    Time is O(L * b * d + nb^2 * b * d): the sorted-block mixing `P . K_blocks` grows as
    L^2 / b at a fixed block size. Not causal, and `use_causal_mask=True` raises the capability
    error: in the paper's causal Sinkhorn balancing (masked rounds over a triangular `R`) each
    column normalisation still sums over the rows of later blocks, whose logits come from
    later tokens, so the balanced matrix would carry the future into earlier blocks (LRA's
    causal path has the same coupling and was never tested). Self-attention only.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        block_size: int. Tokens per block (default 64; LRA text 50, image 64).
        temperature: float. Sinkhorn temperature tau (> 0; default 0.75). A small tau makes
            the logits large and the sort hard.
        sinkhorn_iterations: int. Row/column normalisation rounds (default 7).
        sortcut_blocks: int or None. SortCut: attend to the first n sorted blocks (plus the
            own block) instead of the own sorted block. None (default) disables it.
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training: as `BaseAttention`.
        `use_causal_mask=True` is refused. `training=True` adds the Gumbel noise. The length
        must give the block count the layer was built with.

    Returns:
        `[batch, L, output_dim]`, zero at padded query positions.

    Masking: padded keys and values are zeroed before the block summaries and the sorting,
    padded blocks take no part in the sort, padded own-block keys and sorted keys with less
    than half real mass get a -1e9 bias in the float32 softmax; padded query rows are zero.
    Attention dropout applies to the [sorted, own] probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import SinkhornAttention
    >>> layer = SinkhornAttention(num_heads=2, key_dim=8, block_size=4)
    >>> x = np.random.rand(2, 10, 16).astype("float32")
    >>> tuple(layer(x, x).shape)
    (2, 10, 16)

    Reference:
        Tay et al., "Sparse Sinkhorn Attention", ICML 2020.
    """

    supports_causal = False
    strictly_causal = False
    supports_cross_attention = False
    needs_static_length = True
    static_length_argument = (
        "`block_size` (its SortNet maps each block to one logit per block, "
        "nb = ceil(L / block_size))"
    )

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        block_size: int = 64,
        temperature: float = 0.75,
        sinkhorn_iterations: int = 7,
        sortcut_blocks: int | None = None,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.block_size = attention_utils.checked_int(block_size, "block_size", "SinkhornAttention")
        if not float(temperature) > 0.0:
            raise ValueError(
                f"SinkhornAttention: `temperature` must be positive, got {temperature!r}."
            )
        self.sinkhorn_iterations = attention_utils.checked_int(
            sinkhorn_iterations, "sinkhorn_iterations", "SinkhornAttention"
        )
        self.sortcut_blocks = attention_utils.checked_int(
            sortcut_blocks, "sortcut_blocks", "SinkhornAttention", allow_none=True
        )
        self.temperature = float(temperature)

    def _build_variant(self, query_shape, value_shape):
        length = query_shape[1]
        if length is None:
            raise ValueError(
                "SinkhornAttention needs a static sequence length at build: its SortNet maps "
                "each block to one logit per block, nb = ceil(L / block_size) (block_size="
                f"{self.block_size}); got query shape {tuple(query_shape)}. Give the input a "
                "fixed length, e.g. keras.Input((L, dim))."
            )
        if int(length) == 0:
            raise ValueError(
                "SinkhornAttention: the SortNet's block count nb = ceil(L / block_size) "
                f"(block_size={self.block_size}) needs at least one position, got length 0."
            )
        self.num_blocks = self._num_blocks_for(int(length))
        kwargs = self._sublayer_kwargs()
        kwargs["dtype"] = "float32"  # Sort logits feed exp and log-sum-exp: float32.
        self._sort_hidden = keras.layers.EinsumDense(
            "bhnd,hde->bhne",
            output_shape=(self.num_heads, None, self.key_dim),
            bias_axes="he",
            activation="relu",
            name="sort_hidden",
            **kwargs,
        )
        summary_shape = (query_shape[0], self.num_heads, self.num_blocks, self.key_dim)
        self._sort_hidden.build(summary_shape)
        kwargs = self._sublayer_kwargs()
        kwargs["dtype"] = "float32"
        self._sort_logits = keras.layers.EinsumDense(
            "bhne,hej->bhnj",
            output_shape=(self.num_heads, None, self.num_blocks),
            bias_axes="hj",
            name="sort_logits",
            **kwargs,
        )
        self._sort_logits.build(summary_shape)

    # ----------------------------------------------------------------- pieces

    def _block_size(self, length: int) -> int:
        return min(self.block_size, length)

    def _num_blocks_for(self, length: int) -> int:
        return -(-length // self._block_size(length))

    def _blocks(self, k, v, key_mask, length: int):
        """Keys and values zeroed at padded positions, in blocks `[B, H, nb, b, d]`."""
        b = self._block_size(length)
        k = attention_utils.zero_padded(k, key_mask)
        v = attention_utils.zero_padded(v, key_mask)
        kb = attention_utils.to_blocks(attention_utils.heads_first(k), b, axis=2)
        vb = attention_utils.to_blocks(attention_utils.heads_first(v), b, axis=2)
        mb = attention_utils.to_blocks(key_mask, b, axis=1, value=False)  # [B, nb, b]
        return kb, vb, mb

    def _check_num_blocks(self, length: int):
        if self._num_blocks_for(length) != self.num_blocks:
            raise ValueError(
                f"SinkhornAttention was built for {self.num_blocks} blocks of block_size="
                f"{self.block_size} (its SortNet has one logit per block), but a length of "
                f"{length} gives {self._num_blocks_for(length)}; call it at the length it was "
                "built for."
            )

    def _sorting_matrix(self, k, key_mask, training=False):
        """The Sinkhorn-balanced sorting matrix `P`, float32 `[B, H, nb, nb]`.

        Row i of `P` says how sorted block i mixes the original blocks. Over the real blocks
        `P` is doubly stochastic (to the precision of `sinkhorn_iterations`); a fully padded
        block maps to itself.
        """
        length = attention_utils.static_length(k, 1, "SinkhornAttention")
        self._check_num_blocks(length)
        kb, _, mb = self._blocks(k, k, key_mask, length)
        count = ops.maximum(ops.sum(ops.cast(mb, "float32"), axis=-1), 1.0)  # [B, nb]
        emb = ops.sum(attention_utils.to_float32(kb), axis=3) / count[:, None, :, None]
        logits = self._sort_logits(self._sort_hidden(emb))  # [B, H, nb, nb], float32
        real = ops.any(mb, axis=-1)  # [B, nb]
        nb = int(real.shape[1])
        allowed = ops.logical_or(
            ops.logical_and(real[:, :, None], real[:, None, :]),
            ops.logical_and(ops.logical_not(real)[:, :, None], ops.eye(nb, dtype="bool")),
        )[:, None]
        if training:
            uniform = keras.random.uniform(
                ops.shape(logits), minval=1e-6, maxval=1.0 - 1e-6, seed=self.seed_generator
            )
            logits = logits - ops.log(-ops.log(uniform))
        logits = ops.where(allowed, logits / self.temperature, attention_utils.NEG_INF)
        for _ in range(self.sinkhorn_iterations):
            logits = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
            logits = logits - ops.logsumexp(logits, axis=-2, keepdims=True)
        return ops.exp(logits)

    def _attend_sorted(self, q, k, v, key_mask, permutation, training=False):
        """Attention given the sorting matrix `permutation` (`[B, H, nb, nb]`, float32).

        `_attend` passes the Sinkhorn matrix; the tests pass the identity (then each query
        attends to its own block twice, which is exactly local attention).
        """
        length = attention_utils.static_length(q, 1, "SinkhornAttention")
        b = self._block_size(length)
        kb, vb, mb = self._blocks(k, v, key_mask, length)
        q = ops.multiply(q, ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype))
        qb = attention_utils.to_blocks(attention_utils.heads_first(q), b, axis=2)
        nb = int(kb.shape[2])
        p32 = attention_utils.to_float32(permutation)
        p = ops.cast(p32, kb.dtype)
        sorted_k = ops.einsum("bhij,bhjtd->bhitd", p, kb)
        sorted_v = ops.einsum("bhij,bhjtd->bhitd", p, vb)
        sorted_real = ops.einsum("bhij,bjt->bhit", p32, ops.cast(mb, "float32")) > 0.5
        own_mask = mb[:, None, :, None, :]  # [B, 1, nb, 1, b]
        own_logits = ops.einsum("bhnqd,bhnkd->bhnqk", qb, kb)
        if self.sortcut_blocks is None:
            sorted_logits = ops.einsum("bhnqd,bhnkd->bhnqk", qb, sorted_k)
            sorted_mask = sorted_real[:, :, :, None, :]  # [B, H, nb, 1, b]
        else:
            n = min(self.sortcut_blocks, nb)
            shape = [-1 if d is None else d for d in sorted_k.shape]
            cut_k = ops.reshape(sorted_k[:, :, :n], shape[:2] + [n * b, shape[-1]])
            cut_v = ops.reshape(sorted_v[:, :, :n], shape[:2] + [n * b, int(sorted_v.shape[-1])])
            sorted_logits = ops.einsum("bhnqd,bhkd->bhnqk", qb, cut_k)
            sorted_mask = ops.reshape(sorted_real[:, :, :n], (-1, self.num_heads, 1, 1, n * b))
        probs_sorted, probs_own = attention_utils.masked_softmax_parts(
            [sorted_logits, own_logits], [sorted_mask, own_mask]
        )
        probs_sorted = self._dropout_probs(probs_sorted, training)
        probs_own = self._dropout_probs(probs_own, training)
        out = ops.einsum("bhnqk,bhnkd->bhnqd", probs_own, vb)
        if self.sortcut_blocks is None:
            out = out + ops.einsum("bhnqk,bhnkd->bhnqd", probs_sorted, sorted_v)
        else:
            out = out + ops.einsum("bhnqk,bhkd->bhnqd", probs_sorted, cut_v)
        return attention_utils.heads_last(attention_utils.from_blocks(out, length, axis=2))

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        del query, query_mask, causal  # Padded query rows are zeroed by the base.
        permutation = self._sorting_matrix(k, key_mask, training=bool(training))
        return self._attend_sorted(q, k, v, key_mask, permutation, training=training)

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """[sorted, own] attention, the SortNet and the sorted-block mixing `P . K, P . V`.

        The mixing costs nb^2 * b * (dk + dv) per head, i.e. L^2 / b: quadratic at a fixed
        block size (it dominates once nb > ~2b). Sinkhorn's element-wise rounds are not counted.
        """
        b = self._block_size(query_length)
        nb = -(-query_length // b)
        h, dk, dv = self.num_heads, self.key_dim, self.value_dim
        keys = b + (b if self.sortcut_blocks is None else min(self.sortcut_blocks, nb) * b)
        attend = self._pair_flops(batch, nb * b, keys)
        sort_net = 2 * batch * h * (nb * dk * dk + nb * dk * nb)
        mixing = 2 * batch * h * nb * nb * b * (dk + dv)
        return int(attend + sort_net + mixing)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "block_size": self.block_size,
                "temperature": self.temperature,
                "sinkhorn_iterations": self.sinkhorn_iterations,
                "sortcut_blocks": self.sortcut_blocks,
            }
        )
        return config
