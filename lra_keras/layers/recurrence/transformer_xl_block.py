"""A Transformer-XL block: relative attention over stop-gradient memory plus the segment."""

from __future__ import annotations

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.recurrence.relative_multi_head_attention import RelativeMultiHeadAttention


def push_memory(memory, x, memory_length: int):
    """The last `memory_length` rows of `[memory, x]` along axis 1 (front-padded with zeros).

    Either of `memory` and `x` may be None.

    Works for values `[B, L, D]` and for boolean masks `[B, L]` (padding is False).
    """
    if memory_length == 0:
        return None
    if x is None:
        joined = memory
    elif memory is None:
        joined = x
    else:
        joined = ops.concatenate([memory, ops.cast(x, memory.dtype)], axis=1)
    length = joined.shape[1]
    if length < memory_length:
        pad = [(0, 0), (memory_length - length, 0)] + [(0, 0)] * (len(joined.shape) - 2)
        joined = ops.pad(joined, pad)
    return joined[:, -memory_length:]


@keras.saving.register_keras_serializable(package="lra_keras")
class TransformerXLBlock(keras.layers.Layer):
    """Pre-LayerNorm Transformer block with Transformer-XL segment-level recurrence.

    Keys and values run over `[stop_gradient(memory), x]`, where `memory` holds earlier block
    inputs; queries come from `x`. The block's new memory is the last `memory_length` rows of
    `[memory, x]` (its inputs), with gradients stopped. The layout (pre-LN attention, dropout,
    residual; pre-LN GELU MLP with dropout, residual) matches `TransformerEncoderBlock`.

    Args:
        num_heads: int. Attention heads.
        key_dim: int. Size of each head.
        mlp_dim: int. MLP hidden size.
        memory_length: int. Rows of memory kept for the next segment (0: no recurrence).
        dropout: float. Dropout after attention and in the MLP.
        attention_dropout: float. Dropout on attention probabilities.
        **kwargs: Base layer arguments.

    Call arguments:
        x: `[batch, L, dim]`, the current segment.
        memory: optional `[batch, M, dim]` from the previous segment.
        padding_mask: optional boolean `[batch, L]`, True = real token.
        memory_mask: optional boolean `[batch, M]`: which memory rows hold real tokens
            (all True when omitted with a memory).
        training: bool.
        use_causal_mask: bool, default True (language modelling).
        return_masks: bool. Also return the new memory's mask `[batch, memory_length]`.

    Returns:
        `(y, new_memory)`: `y` is `[batch, L, dim]`; `new_memory` is `[batch, memory_length,
        dim]` (None when `memory_length` is 0); `(y, new_memory, new_memory_mask)` with
        `return_masks=True`.

    Masking: padded tokens and invalid memory rows are excluded as keys; padded query rows of
    the attention output are zero (their rows of `y` carry the residual stream).

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import TransformerXLBlock
    >>> block = TransformerXLBlock(num_heads=2, key_dim=8, mlp_dim=32, memory_length=4)
    >>> x = np.random.rand(2, 4, 16).astype("float32")
    >>> y, memory = block(x)
    >>> y, memory = block(x, memory=memory)
    >>> tuple(y.shape), tuple(memory.shape)
    ((2, 4, 16), (2, 4, 16))

    Reference:
        Dai et al., "Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context",
        ACL 2019.
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        mlp_dim: int,
        memory_length: int = 0,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.mlp_dim = int(mlp_dim)
        self.memory_length = attention_utils.checked_int(
            memory_length, "memory_length", type(self).__name__, 0
        )
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        policy = self.dtype_policy
        self.attention = RelativeMultiHeadAttention(
            self.num_heads,
            self.key_dim,
            dropout=self.attention_dropout,
            dtype=policy,
            name="attention",
        )
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=1e-6, dtype=policy, name="attention_norm"
        )
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name="mlp_norm")
        self.attention_dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy)
        self.mlp_dropout = keras.layers.Dropout(self.dropout, dtype=policy)
        self.output_dropout = keras.layers.Dropout(self.dropout, dtype=policy)

    def build(self, x_shape, *args, **kwargs):
        dim = x_shape[-1]
        self.attention_norm.build(x_shape)
        self.attention.build(x_shape, x_shape)
        self.mlp_norm.build(x_shape)
        self.mlp_in = keras.layers.Dense(self.mlp_dim, dtype=self.dtype_policy, name="mlp_in")
        self.mlp_in.build(x_shape)
        self.mlp_out = keras.layers.Dense(dim, dtype=self.dtype_policy, name="mlp_out")
        self.mlp_out.build(tuple(x_shape[:-1]) + (self.mlp_dim,))

    def _context(self, x, padding_mask, parts):
        """Joins stop-gradient (memory, mask) pairs in front of the segment."""
        if padding_mask is None:
            padding_mask = ops.ones_like(x[..., 0], dtype="bool")
        values, masks = [], []
        for memory, mask in parts:
            if memory is None:
                continue
            values.append(ops.stop_gradient(ops.cast(memory, x.dtype)))
            masks.append(
                ops.ones_like(memory[..., 0], dtype="bool")
                if mask is None
                else ops.cast(mask, "bool")
            )
        context = ops.concatenate(values + [x], axis=1) if values else x
        context_mask = ops.concatenate(masks + [padding_mask], axis=1) if masks else padding_mask
        return context, context_mask, padding_mask

    def _transform(self, x, context, context_mask, padding_mask, training, use_causal_mask):
        h = self.attention_norm(context)
        length = x.shape[1]
        a = self.attention(
            h[:, -length:],
            h,
            query_mask=padding_mask,
            value_mask=context_mask,
            training=training,
            use_causal_mask=use_causal_mask,
        )
        x = x + self.attention_dropout_layer(a, training=training)
        y = self.mlp_norm(x)
        y = keras.activations.gelu(self.mlp_in(y), approximate=False)
        y = self.mlp_dropout(y, training=training)
        return x + self.output_dropout(self.mlp_out(y), training=training)

    def call(
        self,
        x,
        memory=None,
        padding_mask=None,
        memory_mask=None,
        training=None,
        use_causal_mask=True,
        return_masks=False,
    ):
        context, context_mask, padding_mask = self._context(
            x, padding_mask, [(memory, memory_mask)]
        )
        y = self._transform(x, context, context_mask, padding_mask, training, use_causal_mask)
        new_memory = push_memory(context, None, self.memory_length)
        new_memory_mask = push_memory(context_mask, None, self.memory_length)
        if new_memory is not None:
            new_memory = ops.stop_gradient(new_memory)
        if return_masks:
            return y, new_memory, new_memory_mask
        return y, new_memory

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "mlp_dim": self.mlp_dim,
                "memory_length": self.memory_length,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
            }
        )
        return config
