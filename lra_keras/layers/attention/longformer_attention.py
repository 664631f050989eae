"""Longformer attention: a (dilated) sliding window plus global tokens, banded and gathered."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention


@register_attention("longformer")
@keras.saving.register_keras_serializable(package="lra_keras")
class LongformerAttention(BaseAttention):
    """Longformer attention: each token attends to a sliding window of `window_size` keys
    (optionally dilated), and global tokens attend to, and are attended to by, every token.

    Window of query i: keys `j = i + k * dilation` with `-left <= k <= right`, where, as in
    LRA, `left = window_size - window_size // 2 - 1` and `right = window_size // 2` (so
    `window_size` keys, self included); with `use_causal_mask=True` it is a left window of the
    same size, `left = window_size - 1, right = 0`. Global tokens (`global_tokens`, positions;
    negative values count from the end) attend to every key (every key `j <= g` when causal),
    and every query attends to them (when `g <= i` if causal). A global key that is also in a
    query's window is counted once. With `window_size >= 2 L` it is exactly full attention.

    Computation, never an L x L tensor: dilation d is a reshape (positions with the same
    residue mod d form d interleaved sequences, each with an undilated window); each sequence
    is cut into chunks of `max(left, right)` that attend to their previous, own and next chunks
    masked to the band, plus the gathered global keys, in one float32 softmax; global rows
    attend densely to all L keys (O(L |G|)) and replace their rows. Time and memory
    O(L (1.5 window_size + |G|) d). The projections are shared by the window and global paths
    (the paper and LRA use a second set for global attention; not here, so that weights load
    from MultiHeadAttention). Self-attention only.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        window_size: int. Keys per window, self included (default 512; LRA 512).
        dilation: int. Gap between window keys (default 1).
        global_tokens: tuple of int. Positions of the global tokens, e.g. `(0,)` for a CLS
            token (default none).
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention`. Causal is strict.

    Returns:
        `[batch, L, output_dim]`, zero at padded query positions.

    Masking: padded keys (including padded global tokens) get a -1e9 bias in the float32
    softmax; padded query rows are zero. Attention dropout applies to the probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import LongformerAttention
    >>> layer = LongformerAttention(num_heads=2, key_dim=8, window_size=4, global_tokens=(0,))
    >>> x = np.random.rand(2, 11, 16).astype("float32")
    >>> tuple(layer(x, x).shape)
    (2, 11, 16)

    Reference:
        Beltagy et al., "Longformer: The Long-Document Transformer", arXiv:2004.05150, 2020.
    """

    supports_causal = True
    strictly_causal = True
    supports_cross_attention = False
    needs_static_length = False

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        window_size: int = 512,
        dilation: int = 1,
        global_tokens=(),
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.window_size = attention_utils.checked_int(
            window_size, "window_size", "LongformerAttention"
        )
        self.dilation = attention_utils.checked_int(dilation, "dilation", "LongformerAttention")
        if isinstance(global_tokens, int) or not all(
            isinstance(g, int | np.integer) for g in global_tokens
        ):
            raise ValueError(
                "LongformerAttention: `global_tokens` must be a tuple of token positions "
                f"(ints), e.g. (0,), got {global_tokens!r}."
            )
        self.global_tokens = tuple(int(g) for g in global_tokens)

    def window_bounds(self, causal: bool) -> tuple[int, int]:
        """(left, right): the window reaches `left` keys back and `right` keys ahead."""
        w = self.window_size
        return (w - 1, 0) if causal else (w - w // 2 - 1, w // 2)

    def global_positions(self, length: int | None) -> np.ndarray:
        """The sorted, distinct global positions in [0, length).

        With an unknown length (None) they must be non-negative; any past the sequence's end
        is then ignored at call time.
        """
        if length is None:
            if any(g < 0 for g in self.global_tokens):
                raise ValueError(
                    "LongformerAttention: negative `global_tokens` "
                    f"{self.global_tokens!r} count from the end and need a static sequence "
                    "length; give the input a fixed length or use non-negative positions."
                )
            return np.unique(np.array(self.global_tokens, np.int64))
        for g in self.global_tokens:
            if not -length <= g < length:
                raise ValueError(
                    f"LongformerAttention: `global_tokens` entry {g} is outside a sequence of "
                    f"length {length}."
                )
        return np.unique(np.array([g % length for g in self.global_tokens], np.int64))

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        length = attention_utils.dim(q, 1)
        static = isinstance(length, int)
        q = ops.multiply(q, ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype))
        q, k, v = (attention_utils.heads_first(x) for x in (q, k, v))  # [B, H, L, d]
        left, right = self.window_bounds(causal)
        glob = self.global_positions(length if static else None)
        # Global positions past an unknown length are ignored (masked out) rather than raised.
        glob_real = None if static else ops.convert_to_tensor(glob, "int32") < length
        glob_index = (
            glob if static else ops.minimum(ops.convert_to_tensor(glob, "int32"), length - 1)
        )
        dil = self.dilation
        sub_length = -(-length // dil)
        chunk = max(left, right, 1)
        if static:
            chunk = min(chunk, sub_length)

        def layout(x, axis, value=0):
            # [.., L, ..] -> [.., dil, nb, chunk, ..]: position i = (n chunk + t) dil + s.
            x = attention_utils.to_blocks(x, dil, axis=axis, value=value)  # [.., L/dil, dil, ..]
            perm = list(range(len(x.shape)))
            perm[axis], perm[axis + 1] = axis + 1, axis
            x = ops.transpose(x, perm)
            return attention_utils.to_blocks(x, chunk, axis=axis + 1, value=value)

        qb, kb, vb = layout(q, 2), layout(k, 2), layout(v, 2)  # [B, H, dil, nb, chunk, d]
        mb = layout(key_mask, 1, value=False)  # [B, dil, nb, chunk]
        nb = attention_utils.dim(qb, 3)
        several = not static or nb > 1
        before = 1 if (left > 0 and several) else 0
        after = 1 if (right > 0 and several) else 0
        shifts = range(before + after + 1)
        k_band = attention_utils.band_blocks(kb, 3, before, after)
        v_band = attention_utils.band_blocks(vb, 3, before, after)
        m_band = attention_utils.band_blocks(mb, 2, before, after, value=False)
        batch, heads, _, _, _, dk = attention_utils.shape_of(qb)
        dv = attention_utils.dim(vb, -1)
        band_keys = len(shifts) * chunk
        # TensorFlow's softmax takes at most 5 dimensions: merge (residue, chunk) into one axis.
        rows = dil * nb
        target = attention_utils.reshape_target
        qb = ops.reshape(qb, target([batch, heads, rows, chunk, dk]))
        k_band = ops.reshape(k_band, target([batch, heads, rows, band_keys, dk]))
        v_band = ops.reshape(v_band, target([batch, heads, rows, band_keys, dv]))
        m_band = ops.reshape(m_band, target([batch, rows, band_keys]))
        rel = (np.arange(band_keys)[None, :] - before * chunk) - np.arange(chunk)[:, None]
        band = (rel >= -left) & (rel <= right)  # [chunk, K], in units of dil
        logits = [ops.einsum("bhnqd,bhnkd->bhnqk", qb, k_band)]
        masks = [ops.logical_and(m_band[:, None, :, None, :], band)]
        if len(glob):
            kg = ops.take(k, glob_index, axis=2)  # [B, H, G, d]
            logits.append(ops.einsum("bhnqd,bhgd->bhnqg", qb, kg))
            qpos = ops.reshape(
                (ops.arange(nb)[None, :, None] * chunk + ops.arange(chunk)[None, None, :]) * dil
                + ops.arange(dil)[:, None, None],
                target([rows, chunk, 1]),
            )
            offset = ops.convert_to_tensor(glob, "int32") - qpos
            in_window = ops.logical_and(
                ops.logical_and(offset % dil == 0, offset >= -left * dil), offset <= right * dil
            )
            allowed = ops.logical_not(in_window)
            if causal:
                allowed = ops.logical_and(allowed, offset <= 0)
            key_real = ops.take(key_mask, glob_index, axis=1)
            if glob_real is not None:
                key_real = ops.logical_and(key_real, glob_real)
            masks.append(ops.logical_and(key_real[:, None, None, None, :], allowed))
        parts = attention_utils.masked_softmax_parts(logits, masks)
        parts = [self._dropout_probs(p, training) for p in parts]
        out = ops.einsum("bhnqk,bhnkd->bhnqd", parts[0], v_band)
        if len(glob):
            vg = ops.take(v, glob_index, axis=2)
            out = out + ops.einsum("bhnqg,bhgd->bhnqd", parts[1], vg)
        out = ops.reshape(out, target([batch, heads, dil, nb, chunk, dv]))
        # Back to [B, H, L, dv]: undo the chunks, then the residue interleaving.
        out = attention_utils.from_blocks(out, sub_length, axis=3)  # [B, H, dil, L/dil, dv]
        out = ops.transpose(out, (0, 1, 3, 2, 4))
        out = attention_utils.from_blocks(out, length, axis=2)  # [B, H, L, dv]
        if len(glob):
            out = self._global_rows(q, k, v, key_mask, glob_index, glob_real, out, causal, training)
        return attention_utils.heads_last(out)

    def _global_rows(self, q, k, v, key_mask, glob, glob_real, out, causal, training):
        """Global queries attend to every key; their rows replace the windowed ones."""
        length = attention_utils.dim(q, 2)
        glob = ops.convert_to_tensor(glob, "int32")
        qg = ops.take(q, glob, axis=2)
        logits = ops.einsum("bhgd,bhkd->bhgk", qg, k)
        mask = key_mask[:, None, None, :]
        if causal:
            mask = ops.logical_and(mask, ops.arange(length)[None, :] <= glob[:, None])
        probs = self._dropout_probs(attention_utils.masked_softmax(logits, mask), training)
        out_g = ops.einsum("bhgk,bhkd->bhgd", probs, v)
        # Row i takes global row g where glob[g] == i (and g is real), else its windowed row.
        hit = ops.arange(length)[:, None] == glob[None, :]  # [L, G]
        if glob_real is not None:
            hit = ops.logical_and(hit, glob_real[None, :])
        index = ops.where(
            ops.any(hit, axis=1),
            length + ops.argmax(ops.cast(hit, "int32"), axis=1),
            ops.arange(length),
        )
        return ops.take(ops.concatenate([out, out_g], axis=2), index, axis=2)

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Chunks of w/2 score three chunks (1.5 w keys) plus the globals; globals score all."""
        globals_ = len(self.global_tokens)
        band = self._pair_flops(batch, query_length, 1.5 * self.window_size + globals_)
        return band + self._pair_flops(batch, globals_, key_length)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "window_size": self.window_size,
                "dilation": self.dilation,
                "global_tokens": self.global_tokens,
            }
        )
        return config
