"""Image Transformer local attention: 2D query blocks with a memory flange, or 1D blocks."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention


@register_attention("image_local")
@keras.saving.register_keras_serializable(package="lra_keras")
class ImageLocalAttention(BaseAttention):
    """Image Transformer local attention: a query block attends to a memory block around it.

    2D (`image_shape=(h, w)` given; the sequence is the raster order of the image, so L must
    be h * w): the image is cut into `query_shape = (qh, qw)` rectangles; each attends to its
    memory, the rectangle extended by `memory_flange = (fh, fw)`: fh rows above and below and
    fw columns left and right (`(qh + 2 fh) x (qw + 2 fw)` positions, clipped to the image).
    With `use_causal_mask=True` the memory has no rows below (`(qh + fh) x (qw + 2 fw)`) and
    key (r', c') is allowed for query (r, c) only when `r' w + c' <= r w + c` (raster order).

    1D (`image_shape=None`): blocks of `block_length` tokens; each attends to its own block
    and the previous block (the first block's "previous block" is masked padding, not a
    sliding window), plus the lower-triangular causal mask when `use_causal_mask=True`.

    Computation, never an L x L tensor: the input is placed on a zero canvas with the flanges
    as masked padding; static index tables gather each query block and its memory block, one
    float32 softmax per block, and a static inverse index puts the outputs back in raster
    order. Time and memory O(L m d) with m the memory size. A query block (or flange) larger
    than the image is clipped to it (the same pattern). With a query block covering the whole
    image (or `block_length >= L`) it is exactly full attention (causal: full causal
    attention). Self-attention only.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        image_shape: pair of int or None. The image (height, width) for 2D blocks; None for 1D
            blocks. The zoo fills it from the task.
        query_shape: pair of int. The 2D query block (default (8, 8)).
        memory_flange: pair of int. The 2D flange, rows and columns (default (8, 8)).
        block_length: int. The 1D block length (default 256).
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention`. Causal (raster order) is strict.

    Returns:
        `[batch, L, output_dim]`, zero at padded query positions.

    Masking: padded keys, the canvas border and the padding of partial blocks get a -1e9 bias
    in the float32 softmax; padded query rows are zero. Attention dropout applies to the block
    probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import ImageLocalAttention
    >>> layer = ImageLocalAttention(num_heads=2, key_dim=8, image_shape=(6, 6),
    ...                             query_shape=(2, 4), memory_flange=(1, 2))
    >>> x = np.random.rand(2, 36, 16).astype("float32")
    >>> tuple(layer(x, x, use_causal_mask=True).shape)
    (2, 36, 16)

    Reference:
        Parmar et al., "Image Transformer", ICML 2018.
    """

    supports_causal = True
    strictly_causal = True
    supports_cross_attention = False
    # True for the 2D form (L = h * w); a 1D layer (image_shape=None) sets it False.
    needs_static_length = True
    static_length_argument = (
        "`image_shape` (the length must be its height * width) or `block_length` (its "
        "static block tables)"
    )

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        image_shape=None,
        query_shape=(8, 8),
        memory_flange=(8, 8),
        block_length: int = 256,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        name = "ImageLocalAttention"
        self.image_shape = (
            None
            if image_shape is None
            else attention_utils.int_pair(image_shape, "image_shape", name)
        )
        self.query_shape = attention_utils.int_pair(query_shape, "query_shape", name)
        self.memory_flange = attention_utils.int_pair(memory_flange, "memory_flange", name, 0)
        self.block_length = attention_utils.checked_int(block_length, "block_length", name)

    def _check_length(self, length):
        attention_utils.check_grid_length(
            length, self.image_shape, "image_shape", "ImageLocalAttention"
        )

    def _build_variant(self, query_shape, value_shape):
        self._check_length(query_shape[1])

    def _geometry(self, length: int, causal: bool):
        """(image h, w), query block (qh, qw) and flanges (top, bottom, left, right)."""
        if self.image_shape is None:
            qw = min(self.block_length, length)
            return (1, length), (1, qw), (0, 0, qw, 0)
        h, w = self.image_shape
        qh, qw = min(self.query_shape[0], h), min(self.query_shape[1], w)
        fh, fw = min(self.memory_flange[0], h), min(self.memory_flange[1], w)
        return (h, w), (qh, qw), (fh, 0 if causal else fh, fw, fw)

    def index_tables(self, length: int, causal: bool) -> dict:
        """Static gather tables (numpy) on the padded canvas, raster-flattened:
        `query` [blocks, qh*qw], `memory` [blocks, m], their raster positions `query_pos`,
        `memory_pos` (L for canvas padding) and `inverse` [L] (output row of each position)."""
        (h, w), (qh, qw), (top, bottom, left, right) = self._geometry(length, causal)
        nbh, nbw = -(-h // qh), -(-w // qw)
        canvas_h, canvas_w = top + nbh * qh + bottom, left + nbw * qw + right
        rows, cols = np.arange(canvas_h) - top, np.arange(canvas_w) - left
        valid = (rows[:, None] >= 0) & (rows[:, None] < h) & (cols[None] >= 0) & (cols[None] < w)
        raster = np.where(valid, rows[:, None] * w + cols[None], length).reshape(-1)
        bi, bj = np.divmod(np.arange(nbh * nbw), nbw)

        def rect(height, width, row0, col0):
            r = row0[:, None, None] + np.arange(height)[None, :, None]
            c = col0[:, None, None] + np.arange(width)[None, None, :]
            return (r * canvas_w + c).reshape(len(row0), -1)

        query = rect(qh, qw, bi * qh + top, bj * qw + left)
        memory = rect(qh + top + bottom, qw + left + right, bi * qh, bj * qw)
        r, c = np.divmod(np.arange(length), w)
        inverse = ((r // qh) * nbw + c // qw) * (qh * qw) + (r % qh) * qw + c % qw
        return {
            "canvas": (canvas_h, canvas_w, top, left),
            "query": query,
            "memory": memory,
            "query_pos": raster[query],
            "memory_pos": raster[memory],
            "inverse": inverse,
        }

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        length = attention_utils.static_length(q, 1, "ImageLocalAttention")
        self._check_length(length)
        (h, w), _, _ = self._geometry(length, causal)
        tables = self.index_tables(length, causal)
        canvas_h, canvas_w, top, left = tables["canvas"]
        heads = q.shape[2]
        q = ops.multiply(q, ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype))

        def canvas(x, value=0):
            # [B, L, ...] -> [B, canvas_h * canvas_w, ...], the image inside masked borders.
            tail = tuple(x.shape[2:])
            x = ops.reshape(x, (-1, h, w) + tail)
            pad = [(0, 0), (top, canvas_h - top - h), (left, canvas_w - left - w)]
            x = ops.pad(x, pad + [(0, 0)] * len(tail), constant_values=value)
            return ops.reshape(x, (-1, canvas_h * canvas_w) + tail)

        qg = ops.take(canvas(q), tables["query"], axis=1)  # [B, nblk, qsz, H, d]
        kg = ops.take(canvas(k), tables["memory"], axis=1)  # [B, nblk, m, H, d]
        vg = ops.take(canvas(v), tables["memory"], axis=1)
        mg = ops.take(canvas(key_mask, False), tables["memory"], axis=1)  # [B, nblk, m]
        logits = ops.einsum("bnqhd,bnkhd->bhnqk", qg, kg)
        mask = mg[:, None, :, None, :]
        if causal:
            # Compared in the graph from two small position tables, not a stored mask.
            order = ops.less_equal(
                ops.convert_to_tensor(tables["memory_pos"])[:, None, :],
                ops.convert_to_tensor(tables["query_pos"])[:, :, None],
            )
            mask = ops.logical_and(mask, order)
        probs = self._dropout_probs(attention_utils.masked_softmax(logits, mask), training)
        out = ops.einsum("bhnqk,bnkhd->bnqhd", probs, vg)
        out = ops.reshape(out, (-1, out.shape[1] * out.shape[2], heads, out.shape[-1]))
        return ops.take(out, tables["inverse"], axis=1)

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Each query scores its block's memory: the query block plus its flanges."""
        if self.image_shape is None:
            return self._pair_flops(batch, query_length, 2 * self.block_length)
        (qh, qw), (fh, fw) = self.query_shape, self.memory_flange
        memory = (qh + (fh if causal else 2 * fh)) * (qw + 2 * fw)
        return self._pair_flops(batch, query_length, memory)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "image_shape": self.image_shape,
                "query_shape": self.query_shape,
                "memory_flange": self.memory_flange,
                "block_length": self.block_length,
            }
        )
        return config
