"""Memory-compressed attention: keys and values shortened by a learned strided convolution."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention


def _fan_initializer(initializer, fan_shape: tuple):
    """Draws with `initializer` at the 2D `fan_shape` and reshapes to the weight's shape.

    A [rate, heads, d, d] kernel would otherwise get Keras' convolution fans (which count the
    heads), shrinking its scale by the number of heads; draws are i.i.d., so a reshape is safe.
    """

    def init(shape, dtype=None):
        return ops.reshape(initializer(fan_shape, dtype=dtype), shape)

    return init


@register_attention("memory_compressed")
@keras.saving.register_keras_serializable(package="lra_keras")
class MemoryCompressedAttention(BaseAttention):
    """Memory-compressed attention: softmax attention over strided-convolution-compressed K, V.

    The projected keys and values (padded positions zeroed first) are cut into blocks of
    `compression_rate` c positions, and each block becomes one slot by a learned convolution
    with kernel = stride = c, one per head: `k~_j = sum_t k[j c + t] W_k[t] + b_k`, with
    `W_k` of shape [c, heads, key_dim, key_dim] (likewise `W_v`, [c, heads, value_dim,
    value_dim]), biases when `use_bias`. Queries attend to the ceil(S / c) slots: O(T S d / c)
    time and memory. A length that is not a multiple of c is padded internally; the added
    positions count as padding.

    Causal rule (strict): slot j holds positions jc..(j+1)c-1, so query i sees slot j iff
    (j+1)c - 1 <= i (as tensor2tensor). While query i's own slot is still incomplete
    (i mod c < c - 1), it also sees the raw (uncompressed) keys and values of that slot up to
    and including itself, in the same softmax. So every query sees its whole past exactly once,
    compressed where a slot is complete and raw in its own partial slot (at most c - 1 extra
    columns): no real query has an empty row, nothing after i is read, and at c = 1 the causal
    form is exactly causal full attention. The causal form is self-attention only (T = S).

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        compression_rate: int. Kernel size and stride c of the compression (default 3).
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments; the compression
            kernels use `kernel_initializer` (with fans c*d in, heads*d out), and the
            regularizers and constraints of the projections.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention`.

    Returns:
        `[batch, T, output_dim]`, zero at padded query positions.

    Masking: keys and values are zeroed at padded positions before the convolution, so slots
    never see padded contents; a slot is a real key if any of its positions is real (a slot
    made only of padding gets a -1e9 bias in the float32 softmax). Attention dropout applies to
    the slot (and own-slot raw key) probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import MemoryCompressedAttention
    >>> layer = MemoryCompressedAttention(num_heads=2, key_dim=8, compression_rate=3)
    >>> x = np.random.rand(2, 13, 16).astype("float32")
    >>> mask = np.arange(13)[None, :] < np.array([[13], [6]])
    >>> tuple(layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True).shape)
    (2, 13, 16)

    Reference:
        Liu et al., "Generating Wikipedia by Summarizing Long Sequences", ICLR 2018.
    """

    supports_causal = True
    strictly_causal = True
    supports_cross_attention = True
    needs_static_length = False

    def __init__(self, num_heads: int, key_dim: int, compression_rate: int = 3, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.compression_rate = attention_utils.checked_int(
            compression_rate, "compression_rate", "MemoryCompressedAttention"
        )

    def _build_variant(self, query_shape, value_shape):
        c, h = self.compression_rate, self.num_heads
        for part, dim in (("key", self.key_dim), ("value", self.value_dim)):
            sub = self._sublayer_kwargs()
            kernel = self.add_weight(
                name=f"{part}_compression_kernel",
                shape=(c, h, dim, dim),
                initializer=_fan_initializer(sub["kernel_initializer"], (c * dim, h * dim)),
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            setattr(self, f"{part}_compression_kernel", kernel)
            bias = None
            if self.use_bias:
                bias = self.add_weight(
                    name=f"{part}_compression_bias",
                    shape=(h, dim),
                    initializer=sub["bias_initializer"],
                    regularizer=self.bias_regularizer,
                    constraint=self.bias_constraint,
                )
            setattr(self, f"{part}_compression_bias", bias)

    def _compress(self, x, kernel, bias):
        """[B, S, H, d] (zeroed at padding) -> [B, ceil(S/c), H, d] slots."""
        blocks = attention_utils.to_blocks(x, self.compression_rate, axis=1)  # [B, n, c, H, d]
        out = ops.einsum("bnchd,chde->bnhe", blocks, ops.cast(kernel, x.dtype))
        if bias is not None:
            out = out + ops.cast(bias, x.dtype)
        return out

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        del query, query_mask
        c = self.compression_rate
        t, s = attention_utils.dim(q, 1), attention_utils.dim(k, 1)
        if causal and isinstance(t, int) and isinstance(s, int) and t != s:
            raise ValueError(
                "MemoryCompressedAttention: causal attention is self-attention only (its causal "
                f"rule compares positions), got query length {t} and key length {s}."
            )
        # `where`, not a product, so non-finite padded contents cannot leak into the slots.
        k = ops.where(key_mask[:, :, None, None], k, ops.zeros_like(k))
        v = ops.where(key_mask[:, :, None, None], v, ops.zeros_like(v))
        k_slots = self._compress(k, self.key_compression_kernel, self.key_compression_bias)
        v_slots = self._compress(v, self.value_compression_kernel, self.value_compression_bias)
        n = attention_utils.dim(k_slots, 1)
        block_mask = attention_utils.to_blocks(key_mask, c, axis=1, value=False)  # [B, n, c]
        slot_mask = ops.any(block_mask, axis=-1)
        own = causal and c > 1
        if own:
            # Queries padded to n * c rows, so that they split into the same blocks as the keys.
            q = attention_utils.pad_axis_to_multiple(q, 1, c)
        rows = attention_utils.dim(q, 1)
        qf = attention_utils.to_float32(q) * (1.0 / math.sqrt(self.key_dim))
        logits = [ops.einsum("bthd,bnhd->bhtn", qf, attention_utils.to_float32(k_slots))]
        masks = [slot_mask[:, None, None, :]]
        if causal:
            visible = (ops.arange(n)[None, :] + 1) * c - 1 <= ops.arange(rows)[:, None]
            masks[0] = ops.logical_and(masks[0], visible)
        if own:
            q_blocks = attention_utils.to_blocks(qf, c, axis=1)
            k_blocks = attention_utils.to_float32(attention_utils.to_blocks(k, c, axis=1))
            own_logits = ops.einsum("bnihd,bnjhd->bhnij", q_blocks, k_blocks)
            logits.append(attention_utils.from_blocks(own_logits, rows, axis=2))
            # Position i in the block sees j <= i, and only while its slot is incomplete.
            pos = ops.arange(c)
            within = ops.logical_and(pos[None, :] <= pos[:, None], pos[:, None] < c - 1)
            own_mask = ops.logical_and(block_mask[:, :, None, :], within)  # [B, n, c, c]
            masks.append(attention_utils.from_blocks(own_mask, rows, axis=1)[:, None])
        probs = attention_utils.masked_softmax_parts(logits, masks)
        out = ops.einsum("bhtn,bnhd->bthd", self._dropout_probs(probs[0], training), v_slots)
        if own:
            own_probs = attention_utils.to_blocks(self._dropout_probs(probs[1], training), c, 2)
            v_blocks = attention_utils.to_blocks(v, c, axis=1)  # [B, n, c, H, dv]
            own_out = ops.einsum("bhnij,bnjhd->bnihd", own_probs, v_blocks)
            out = out + attention_utils.from_blocks(own_out, rows, axis=1)
            out = out[:, :t]
        return out

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """The compression convolutions (2 S d^2 per head for K and V), dense attention of every
        query over the ceil(S / c) slots and, causally, over the c raw keys of its own block."""
        c = self.compression_rate
        slots = -(-key_length // c)
        conv = 2 * batch * key_length * self.num_heads * (self.key_dim**2 + self.value_dim**2)
        own = self._pair_flops(batch, query_length, c) if causal and c > 1 else 0
        return int(conv + self._pair_flops(batch, query_length, slots) + own)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"compression_rate": self.compression_rate})
        return config
