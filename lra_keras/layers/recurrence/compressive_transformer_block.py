"""A Compressive Transformer block: memory plus a FIFO of compressed older memory."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.recurrence.transformer_xl_block import TransformerXLBlock, push_memory

COMPRESSIONS = ("conv", "mean", "max")


@keras.saving.register_keras_serializable(package="lra_keras")
class CompressiveTransformerBlock(TransformerXLBlock):
    """Transformer-XL block whose evicted memories are compressed into a second memory.

    Attention runs over `[compressed_memory, memory, x]`. Each segment pushes `x` into the
    memory; the rows it pushes out (the oldest `L`) are compressed by `compression_rate` into
    `ceil(L / rate)` slots with `compression` ("conv": a learned strided convolution, "mean" or
    "max" pooling) and appended to the compressed memory, a FIFO of `compressed_memory_length`
    slots. The attention-reconstruction loss
    `mean((attn(h, old) - attn(h, f_c(old)))^2)` is added with `add_loss`; everything but the
    compression function is stop-gradient in it, and memories are stop-gradient for the task
    loss, so the reconstruction loss alone trains `f_c`.

    Args:
        num_heads, key_dim, mlp_dim, memory_length, dropout, attention_dropout: as
            `TransformerXLBlock`.
        compressed_memory_length: int. Slots of compressed memory.
        compression_rate: int. Memory rows per compressed slot.
        compression: str. "conv", "mean" or "max".
        reconstruction_weight: float. Weight of the reconstruction loss.
        **kwargs: Base layer arguments.

    Call arguments:
        x: `[batch, L, dim]`.
        memory: optional `[batch, memory_length, dim]`.
        compressed_memory: optional `[batch, compressed_memory_length, dim]`.
        padding_mask: optional boolean `[batch, L]`.
        memory_mask: optional boolean `[batch, memory_length]`.
        compressed_memory_mask: optional boolean `[batch, compressed_memory_length]`; a slot is
            real if any row compressed into it was.
        training: bool.
        use_causal_mask: bool, default True.
        return_masks: bool. Also return the new memory's and compressed memory's masks.

    Returns:
        `(y, new_memory, new_compressed_memory)`, plus `(new_memory_mask,
        new_compressed_memory_mask)` with `return_masks=True`.

    Masking: as `TransformerXLBlock`; invalid memory rows and compressed slots are excluded.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import CompressiveTransformerBlock
    >>> block = CompressiveTransformerBlock(num_heads=2, key_dim=8, mlp_dim=32,
    ...     memory_length=4, compressed_memory_length=4, compression_rate=2)
    >>> x = np.random.rand(2, 4, 16).astype("float32")
    >>> y, memory, compressed = block(x)
    >>> y, memory, compressed = block(x, memory=memory, compressed_memory=compressed)
    >>> tuple(compressed.shape)
    (2, 4, 16)

    Reference:
        Rae et al., "Compressive Transformers for Long-Range Sequence Modelling", ICLR 2020.
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        mlp_dim: int,
        memory_length: int = 0,
        compressed_memory_length: int = 0,
        compression_rate: int = 3,
        compression: str = "conv",
        reconstruction_weight: float = 1.0,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        **kwargs,
    ):
        super().__init__(
            num_heads=num_heads,
            key_dim=key_dim,
            mlp_dim=mlp_dim,
            memory_length=memory_length,
            dropout=dropout,
            attention_dropout=attention_dropout,
            **kwargs,
        )
        if compression not in COMPRESSIONS:
            raise ValueError(f"`compression` must be one of {COMPRESSIONS}, got {compression!r}.")
        self.compressed_memory_length = attention_utils.checked_int(
            compressed_memory_length, "compressed_memory_length", "CompressiveTransformerBlock", 0
        )
        self.compression_rate = attention_utils.checked_int(
            compression_rate, "compression_rate", "CompressiveTransformerBlock"
        )
        self.compression = compression
        self.reconstruction_weight = float(reconstruction_weight)

    def build(self, x_shape, *args, **kwargs):
        super().build(x_shape)
        if self.compression == "conv":
            dim = x_shape[-1]
            self.compressor = keras.layers.Conv1D(
                dim,
                self.compression_rate,
                strides=self.compression_rate,
                dtype=self.dtype_policy,
                name="compressor",
            )
            self.compressor.build((None, None, dim))

    def compress(self, memory, mask):
        """Compresses `[B, n, D]` rows (and their mask) into `ceil(n / rate)` slots."""
        rate = self.compression_rate
        memory = attention_utils.zero_padded(memory, mask)
        memory = attention_utils.pad_axis_to_multiple(memory, 1, rate)
        mask = attention_utils.pad_axis_to_multiple(mask, 1, rate, value=False)
        slots = memory.shape[1] // rate
        grouped_mask = ops.reshape(mask, (-1, slots, rate))
        slot_mask = ops.any(grouped_mask, axis=-1)
        if self.compression == "conv":
            compressed = self.compressor(memory)
        else:
            grouped = ops.reshape(memory, (-1, slots, rate, memory.shape[-1]))
            weights = ops.cast(grouped_mask, memory.dtype)[..., None]
            if self.compression == "mean":
                count = ops.maximum(ops.sum(weights, axis=2), 1.0)
                compressed = ops.sum(grouped * weights, axis=2) / count
            else:
                lowest = ops.cast(attention_utils.NEG_INF, "float32")
                masked = ops.where(weights > 0, attention_utils.to_float32(grouped), lowest)
                compressed = ops.cast(ops.max(masked, axis=2), memory.dtype)
                compressed = attention_utils.zero_padded(compressed, slot_mask)
        return compressed, slot_mask

    def _content_attention(self, h, memory, mask):
        """Content-only attention of `h` over `memory` with the block's stopped weights."""
        attn = self.attention
        kq = ops.stop_gradient(attention_utils.to_float32(attn._query_dense.kernel))
        kk = ops.stop_gradient(attention_utils.to_float32(attn._key_dense.kernel))
        kv = ops.stop_gradient(attention_utils.to_float32(attn._value_dense.kernel))
        q = ops.einsum("btd,dhk->bthk", attention_utils.to_float32(h), kq)
        k = ops.einsum("bsd,dhk->bshk", attention_utils.to_float32(memory), kk)
        v = ops.einsum("bsd,dhk->bshk", attention_utils.to_float32(memory), kv)
        logits = ops.einsum("bthk,bshk->bhts", q, k) / math.sqrt(self.key_dim)
        probs = attention_utils.masked_softmax(logits, mask[:, None, None, :])
        return ops.einsum("bhts,bshk->bthk", probs, v)

    def call(
        self,
        x,
        memory=None,
        compressed_memory=None,
        padding_mask=None,
        memory_mask=None,
        compressed_memory_mask=None,
        training=None,
        use_causal_mask=True,
        return_masks=False,
    ):
        context, context_mask, padding_mask = self._context(
            x,
            padding_mask,
            [(compressed_memory, compressed_memory_mask), (memory, memory_mask)],
        )
        y = self._transform(x, context, context_mask, padding_mask, training, use_causal_mask)
        if self.memory_length == 0:
            return (y, None, None, None, None) if return_masks else (y, None, None)

        # Rows leaving the memory: the oldest of [memory, x] beyond memory_length.
        keep = (0 if memory is None else memory.shape[1]) + x.shape[1]
        joined = context[:, -keep:]
        joined_mask = context_mask[:, -keep:]
        new_memory = ops.stop_gradient(push_memory(None, joined, self.memory_length))
        new_memory_mask = push_memory(None, joined_mask, self.memory_length)
        new_compressed, new_compressed_mask = compressed_memory, compressed_memory_mask
        evict = keep - self.memory_length
        if evict > 0 and self.compressed_memory_length > 0:
            old = ops.stop_gradient(joined[:, :evict])
            old_mask = joined_mask[:, :evict]
            compressed, slot_mask = self.compress(old, old_mask)
            self.add_loss(
                self.reconstruction_weight
                * self._reconstruction_loss(x, padding_mask, old, old_mask, compressed, slot_mask)
            )
            if compressed_memory is not None and compressed_memory_mask is None:
                compressed_memory_mask = ops.ones_like(compressed_memory[..., 0], dtype="bool")
            new_compressed = push_memory(
                None if compressed_memory is None else ops.stop_gradient(compressed_memory),
                ops.stop_gradient(compressed),
                self.compressed_memory_length,
            )
            new_compressed_mask = push_memory(
                compressed_memory_mask, slot_mask, self.compressed_memory_length
            )
        elif self.compressed_memory_length > 0 and compressed_memory is None:
            new_compressed = ops.zeros_like(x[:, :1, :1]) * ops.zeros(
                (1, self.compressed_memory_length, x.shape[-1]), x.dtype
            )
            new_compressed_mask = ops.zeros_like(new_compressed[..., 0], dtype="bool")
        if return_masks:
            return y, new_memory, new_compressed, new_memory_mask, new_compressed_mask
        return y, new_memory, new_compressed

    def _reconstruction_loss(self, x, padding_mask, old, old_mask, compressed, slot_mask):
        """Mean squared gap between attention over the old rows and over their compression."""
        h = ops.stop_gradient(self.attention_norm(x))
        target = ops.stop_gradient(self._content_attention(h, self.attention_norm(old), old_mask))
        # Only the compressor sees a gradient: the norm's weights are stopped for this path.
        rebuilt = self._content_attention(h, self._stopped_norm(compressed), slot_mask)
        error = ops.mean(ops.square(target - rebuilt), axis=(2, 3))
        weight = ops.cast(padding_mask, error.dtype)
        return ops.sum(error * weight) / ops.maximum(ops.sum(weight), 1.0)

    def _stopped_norm(self, x):
        norm = self.attention_norm
        x = attention_utils.to_float32(x)
        mean = ops.mean(x, axis=-1, keepdims=True)
        var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        x = (x - mean) / ops.sqrt(var + norm.epsilon)
        return x * ops.stop_gradient(attention_utils.to_float32(norm.gamma)) + ops.stop_gradient(
            attention_utils.to_float32(norm.beta)
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "compressed_memory_length": self.compressed_memory_length,
                "compression_rate": self.compression_rate,
                "compression": self.compression,
                "reconstruction_weight": self.reconstruction_weight,
            }
        )
        return config
