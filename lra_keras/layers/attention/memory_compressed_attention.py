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
    (j+1)c - 1 <= i (as tensor2tensor). Queries i < c - 1, which have no complete slot yet, see
    their own uncompressed key and value instead (one extra column), so no real query has an
    empty row; from i = c - 1 on only slots are seen, so at c = 1 the causal form is exactly
    causal full attention. The causal form is self-attention only (T = S).

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
    the slot probabilities.

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
        if int(compression_rate) <= 0:
            raise ValueError(
                "MemoryCompressedAttention: `compression_rate` must be a positive integer, "
                f"got {compression_rate!r}."
            )
        self.compression_rate = int(compression_rate)

    def _build_variant(self, query_shape, value_shape):
        c, h = self.compression_rate, self.num_heads
        sub = self._sublayer_kwargs()
        for part, dim in (("key", self.key_dim), ("value", self.value_dim)):
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
        t = attention_utils.static_length(q, 1, "MemoryCompressedAttention")
        s = attention_utils.static_length(k, 1, "MemoryCompressedAttention")
        if causal and t != s:
            raise ValueError(
                "MemoryCompressedAttention: causal attention is self-attention only (its causal "
                f"rule compares positions), got query length {t} and key length {s}."
            )
        # `where`, not a product, so non-finite padded contents cannot leak into the slots.
        k = ops.where(key_mask[:, :, None, None], k, ops.zeros_like(k))
        v = ops.where(key_mask[:, :, None, None], v, ops.zeros_like(v))
        k_slots = self._compress(k, self.key_compression_kernel, self.key_compression_bias)
        v_slots = self._compress(v, self.value_compression_kernel, self.value_compression_bias)
        n = k_slots.shape[1]
        slot_mask = ops.any(attention_utils.to_blocks(key_mask, c, axis=1, value=False), axis=-1)
        qf = attention_utils.to_float32(q) * (1.0 / math.sqrt(self.key_dim))
        logits = [ops.einsum("bthd,bnhd->bhtn", qf, attention_utils.to_float32(k_slots))]
        masks = [slot_mask[:, None, None, :]]
        own = causal and c > 1
        if causal:
            visible = (ops.arange(n)[None, :] + 1) * c - 1 <= ops.arange(t)[:, None]
            masks[0] = ops.logical_and(masks[0], visible)
        if own:
            own_logits = ops.einsum("bthd,bthd->bht", qf, attention_utils.to_float32(k))
            logits.append(own_logits[..., None])
            early = ops.arange(t)[:, None] < c - 1  # [T, 1]: no complete slot yet
            masks.append(ops.logical_and(key_mask[:, None, :, None], early))
        probs = attention_utils.masked_softmax_parts(logits, masks)
        out = ops.einsum("bhtn,bnhd->bthd", self._dropout_probs(probs[0], training), v_slots)
        if own:
            own_probs = self._dropout_probs(probs[1], training)  # [B, H, T, 1]
            out = out + attention_utils.heads_last(own_probs) * v
        return out

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """The compression convolutions (2 S d^2 per head for K and V) and dense attention of
        every query over the ceil(S / c) slots."""
        del causal
        slots = -(-key_length // self.compression_rate)
        conv = 2 * batch * key_length * self.num_heads * (self.key_dim**2 + self.value_dim**2)
        return int(conv + self._pair_flops(batch, query_length, slots))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"compression_rate": self.compression_rate})
        return config
