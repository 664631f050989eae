"""The LRA Transformer block: pre-LayerNorm attention and MLP with residuals."""

from __future__ import annotations

import keras

from lra_keras.layers.attention.registry import ATTENTIONS, get_attention
from lra_keras.layers.encoder.masked_batch_normalization import MaskedBatchNormalization

NORMS = ("layer", "batch")


def make_norm(norm: str, name: str, dtype=None) -> keras.layers.Layer:
    """The pre-norm layer: LayerNormalization (LRA's) or padding-aware batch norm.

    Batch norm uses PyTorch's BatchNorm1d defaults, as S4/S5's LRA code does (momentum 0.1
    there is 0.9 in Keras' convention, epsilon 1e-5).
    """
    if norm == "layer":
        return keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype, name=name)
    if norm == "batch":
        return MaskedBatchNormalization(momentum=0.9, epsilon=1e-5, dtype=dtype, name=name)
    raise ValueError(f"`norm` must be one of {list(NORMS)}, got {norm!r}.")


def default_attention_dropout(attention: str, attention_dropout: float | None) -> float:
    """`attention_dropout`, or when None, 0.1 (LRA's) where `attention` forms probabilities
    and 0 where it forms none."""
    if attention_dropout is not None:
        return float(attention_dropout)
    cls = ATTENTIONS.get(attention)
    return 0.1 if getattr(cls, "has_attention_probabilities", True) else 0.0


@keras.saving.register_keras_serializable(package="lra_keras")
class TransformerEncoderBlock(keras.layers.Layer):
    """One pre-LayerNorm Transformer block with any registered attention.

    x = x + Dropout(Attention(LayerNorm(x))); x = x + Dropout(Dense(GELU(Dense(LayerNorm(x))))),
    with dropout after the GELU too, as in the LRA reference. All arguments are keyword-only.

    Args:
        num_heads: int. Attention heads.
        key_dim: int. Size of each head (LRA's `qkv_dim` is `num_heads * key_dim`).
        mlp_dim: int. Hidden size of the MLP.
        attention: str. A registry name (`lra_keras.layers.ATTENTIONS`).
        attention_kwargs: dict. The variant's own hyperparameters.
        dropout: float. Dropout after attention and in the MLP.
        attention_dropout: float or None. Dropout on attention probabilities; None means 0.1
            for variants that form probabilities and 0 for those that do not (linear,
            performer, fnet refuse a non-zero value).
        norm: str. The two pre-norms: "layer" (LayerNormalization, LRA's) or "batch"
            (`MaskedBatchNormalization`, as S4/S5/LRU on LRA's image tasks: statistics over
            real tokens only, moving statistics at inference).
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `[batch, length, dim]`.
        padding_mask: optional boolean `[batch, length]`, True = real token; taken from the
            Keras mask of `inputs` when not given.
        training: bool.
        use_causal_mask: bool. Causal self-attention (the variant must support it).

    Returns:
        `[batch, length, dim]`, the mask passed through.

    Masking: padded positions are excluded as keys; their rows carry the residual stream only.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import TransformerEncoderBlock
    >>> block = TransformerEncoderBlock(num_heads=2, key_dim=8, mlp_dim=32, attention="local",
    ...                                 attention_kwargs={"block_size": 4})
    >>> tuple(block(np.zeros((2, 10, 16), "float32")).shape)
    (2, 10, 16)

    Reference:
        Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", ICLR 2021.
    """

    def __init__(
        self,
        *,
        num_heads: int,
        key_dim: int,
        mlp_dim: int,
        attention: str = "full",
        attention_kwargs: dict | None = None,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
        norm: str = "layer",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if norm not in NORMS:
            raise ValueError(
                f"TransformerEncoderBlock: `norm` must be one of {list(NORMS)}, got {norm!r}."
            )
        self.norm = norm
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.mlp_dim = int(mlp_dim)
        self.attention = attention
        self.attention_kwargs = dict(attention_kwargs or {})
        self.dropout = float(dropout)
        self.attention_dropout = None if attention_dropout is None else float(attention_dropout)
        self.supports_masking = True
        self.attention_layer = get_attention(
            attention,
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            dropout=default_attention_dropout(attention, self.attention_dropout),
            dtype=self.dtype_policy,
            name="attention",
            **self.attention_kwargs,
        )
        self.attention_norm = make_norm(norm, "attention_norm", self.dtype_policy)
        self.mlp_norm = make_norm(norm, "mlp_norm", self.dtype_policy)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.mlp_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.output_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.attention_norm.build(input_shape)
        self.attention_layer.build(input_shape, input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_in = keras.layers.Dense(
            self.mlp_dim,
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            dtype=self.dtype_policy,
            name="mlp_in",
        )
        self.mlp_in.build(input_shape)
        self.mlp_out = keras.layers.Dense(
            dim,
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            dtype=self.dtype_policy,
            name="mlp_out",
        )
        self.mlp_out.build(tuple(input_shape[:-1]) + (self.mlp_dim,))

    def call(self, inputs, padding_mask=None, training=None, use_causal_mask=False, mask=None):
        if padding_mask is None:
            padding_mask = mask
        x = self._normalise(self.attention_norm, inputs, padding_mask, training)
        x = self.attention_layer(
            x,
            x,
            query_mask=padding_mask,
            value_mask=padding_mask,
            training=training,
            use_causal_mask=use_causal_mask,
        )
        x = inputs + self.dropout_layer(x, training=training)
        y = self._normalise(self.mlp_norm, x, padding_mask, training)
        y = keras.activations.gelu(self.mlp_in(y), approximate=False)
        y = self.mlp_dropout(y, training=training)
        y = self.output_dropout(self.mlp_out(y), training=training)
        return x + y

    def _normalise(self, norm, x, padding_mask, training):
        if self.norm == "layer":
            return norm(x)
        return norm(x, mask=padding_mask, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "mlp_dim": self.mlp_dim,
                "attention": self.attention,
                "attention_kwargs": self.attention_kwargs,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "norm": self.norm,
            }
        )
        return config
