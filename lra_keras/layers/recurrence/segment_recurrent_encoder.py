"""A stack of Transformer-XL or Compressive blocks run over a long sequence segment by segment."""

from __future__ import annotations

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.recurrence.compressive_transformer_block import (
    CompressiveTransformerBlock,
)
from lra_keras.layers.recurrence.transformer_xl_block import TransformerXLBlock

BLOCKS = ("transformer_xl", "compressive")


@keras.saving.register_keras_serializable(package="lra_keras")
class SegmentRecurrentEncoder(keras.layers.Layer):
    """Runs recurrent blocks over `[batch, L, dim]` in segments, carrying memory between them.

    The sequence is cut into `ceil(L / segment_length)` segments (the last may be shorter);
    the loop over segments is unrolled in Python over that static count, since
    `keras.ops.fori_loop`/`scan` cannot be differentiated under XLA on the TensorFlow backend and
    `add_loss` (the compressive reconstruction loss) fails inside them. Each block keeps its own
    memory of its inputs. A state (the memories) can be passed in and returned, so a language
    model can continue from where it stopped.

    Args:
        block: str. "transformer_xl" or "compressive".
        num_layers: int. Number of blocks.
        num_heads: int. Attention heads.
        key_dim: int. Size of each head.
        mlp_dim: int. MLP hidden size.
        segment_length: int. Tokens per segment.
        memory_length: int. Memory rows per block.
        compressed_memory_length: int. Compressed slots per block ("compressive" only).
        compression_rate: int. Rows per compressed slot ("compressive" only).
        compression: str. "conv", "mean" or "max" ("compressive" only).
        dropout: float. Dropout in the blocks.
        attention_dropout: float. Dropout on attention probabilities.
        causal: bool. Causal attention (language modelling); False lets a segment attend to all
            of itself and to its memory.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `[batch, L, dim]` embedded tokens.
        padding_mask: optional boolean `[batch, L]`, True = real token.
        state: optional list (one entry per block) of the memories returned by an earlier call.
        return_state: bool. Also return the state after the last segment.
        training: bool.

    Returns:
        `[batch, L, dim]` (and the state when `return_state=True`).

    Masking: padded tokens are excluded as keys in their segment and in every memory.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import SegmentRecurrentEncoder
    >>> enc = SegmentRecurrentEncoder(num_layers=2, num_heads=2, key_dim=8, mlp_dim=32,
    ...                               segment_length=4, memory_length=4)
    >>> tuple(enc(np.random.rand(2, 10, 16).astype("float32")).shape)
    (2, 10, 16)

    Reference:
        Dai et al., "Transformer-XL", ACL 2019; Rae et al., "Compressive Transformers for
        Long-Range Sequence Modelling", ICLR 2020.
    """

    def __init__(
        self,
        block: str = "transformer_xl",
        num_layers: int = 1,
        num_heads: int = 1,
        key_dim: int = 32,
        mlp_dim: int = 64,
        segment_length: int = 128,
        memory_length: int = 128,
        compressed_memory_length: int = 0,
        compression_rate: int = 3,
        compression: str = "conv",
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        causal: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if block not in BLOCKS:
            raise ValueError(f"`block` must be one of {BLOCKS}, got {block!r}.")
        self.segment_length = attention_utils.checked_int(
            segment_length, "segment_length", "SegmentRecurrentEncoder"
        )
        self.memory_length = attention_utils.checked_int(
            memory_length, "memory_length", "SegmentRecurrentEncoder", 0
        )
        self.block = block
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.mlp_dim = int(mlp_dim)
        self.compressed_memory_length = int(compressed_memory_length)
        self.compression_rate = int(compression_rate)
        self.compression = compression
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.causal = bool(causal)
        self.supports_masking = True
        common = dict(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            mlp_dim=self.mlp_dim,
            memory_length=self.memory_length,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            dtype=self.dtype_policy,
        )
        if block == "compressive":
            self.blocks = [
                CompressiveTransformerBlock(
                    compressed_memory_length=self.compressed_memory_length,
                    compression_rate=self.compression_rate,
                    compression=self.compression,
                    name=f"block_{i}",
                    **common,
                )
                for i in range(self.num_layers)
            ]
        else:
            self.blocks = [
                TransformerXLBlock(name=f"block_{i}", **common) for i in range(self.num_layers)
            ]

    def build(self, inputs_shape):
        segment_shape = (inputs_shape[0], self.segment_length, inputs_shape[-1])
        for block in self.blocks:
            block.build(segment_shape)

    def call(self, inputs, padding_mask=None, state=None, return_state=False, training=None):
        length = inputs.shape[1]
        if length is None:
            raise ValueError("SegmentRecurrentEncoder needs a static sequence length.")
        if padding_mask is None:
            padding_mask = ops.ones_like(inputs[..., 0], dtype="bool")
        padding_mask = ops.cast(padding_mask, "bool")
        # The last segment may be shorter; nothing is padded, so no padding row ever enters a
        # memory (one-byte generation steps rely on this).
        x, mask = inputs, padding_mask
        if state is None:
            state = [{} for _ in self.blocks]
        state = [dict(s) for s in state]
        outputs = []
        for start in range(0, x.shape[1], self.segment_length):
            h = x[:, start : start + self.segment_length]
            m = mask[:, start : start + self.segment_length]
            for i, block in enumerate(self.blocks):
                h, state[i] = self._run_block(block, h, m, state[i], training)
            outputs.append(h)
        y = ops.concatenate(outputs, axis=1) if len(outputs) > 1 else outputs[0]
        if return_state:
            return y, state
        return y

    def _run_block(self, block, h, mask, layer_state, training):
        if self.block == "compressive":
            y, memory, compressed, memory_mask, compressed_mask = block(
                h,
                memory=layer_state.get("memory"),
                compressed_memory=layer_state.get("compressed_memory"),
                padding_mask=mask,
                memory_mask=layer_state.get("memory_mask"),
                compressed_memory_mask=layer_state.get("compressed_memory_mask"),
                training=training,
                use_causal_mask=self.causal,
                return_masks=True,
            )
            return y, {
                "memory": memory,
                "memory_mask": memory_mask,
                "compressed_memory": compressed,
                "compressed_memory_mask": compressed_mask,
            }
        y, memory, memory_mask = block(
            h,
            memory=layer_state.get("memory"),
            padding_mask=mask,
            memory_mask=layer_state.get("memory_mask"),
            training=training,
            use_causal_mask=self.causal,
            return_masks=True,
        )
        return y, {"memory": memory, "memory_mask": memory_mask}

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "block": self.block,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "mlp_dim": self.mlp_dim,
                "segment_length": self.segment_length,
                "memory_length": self.memory_length,
                "compressed_memory_length": self.compressed_memory_length,
                "compression_rate": self.compression_rate,
                "compression": self.compression,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "causal": self.causal,
            }
        )
        return config
