"""The LRA encoder: token embedding, optional CLS, positions, Transformer blocks, LayerNorm."""

from __future__ import annotations

import keras
from keras import ops

from lra_keras.layers.attention.registry import ATTENTIONS
from lra_keras.layers.encoder.position_embedding import PositionEmbedding
from lra_keras.layers.encoder.sinusoidal_position_embedding import SinusoidalPositionEmbedding
from lra_keras.layers.encoder.transformer_encoder_block import (
    NORMS,
    TransformerEncoderBlock,
    make_norm,
)
from lra_keras.layers.recurrence.segment_recurrent_encoder import (
    BLOCKS as RECURRENT_BLOCKS,
)
from lra_keras.layers.recurrence.segment_recurrent_encoder import SegmentRecurrentEncoder

# How positions enter the encoder: added to the embeddings (a learned table or sinusoids), or
# rotated into every block's queries and keys (RoFormer).
POSITION_MODES = ("learned", "sinusoidal", "rotary")
# How token ids enter: a learned table per id, or (pixels) a normalised value through a Dense.
INPUT_ENCODINGS = ("embedding", "linear")


@keras.saving.register_keras_serializable(package="lra_keras")
class LRAEncoder(keras.layers.Layer):
    """Token ids to contextual vectors, as the LRA reference's encoder (any attention).

    Embedding (normal init, stddev 1) -> [learned zero-initialised CLS vector prepended] ->
    position embedding (learned or sinusoidal; none for rotary) -> dropout -> `num_layers` pre-LN
    `TransformerEncoderBlock`s -> final LayerNorm.

    Args:
        vocab_size: int. Number of token ids (id 0 is padding when `mask_padding`).
        max_length: int. Longest token sequence (without the CLS token).
        embed_dim: int. Model width.
        num_layers: int. Number of blocks.
        num_heads: int. Attention heads per block.
        key_dim: int. Size of each head.
        mlp_dim: int. MLP hidden size.
        attention: str. A registry name, or "transformer_xl" / "compressive" for a
            `SegmentRecurrentEncoder` stack (then `attention_kwargs` are its segment and
            memory arguments).
        attention_kwargs: dict. The variant's own hyperparameters.
        dropout: float. Dropout on embeddings and in the blocks.
        attention_dropout: float or None. Dropout on attention probabilities; None: as
            `TransformerEncoderBlock` (0.1, or 0 for variants without probabilities).
        use_cls_token: bool. Prepend a learned CLS vector (its mask is True).
        learned_positions: bool. Learned position table instead of sinusoids (the same as
            `positions="learned"`; kept for older configs).
        mask_padding: bool. Treat id 0 as padding (False for image tasks, where 0 is a pixel).
        causal: bool. Causal self-attention in every block.
        positions: str. "learned", "sinusoidal" or "rotary" (RoFormer rotations of each
            block's queries and keys, `rotary=True` on the attention; variants without a
            query-key dot product refuse it); None follows `learned_positions`.
        norm: str. "layer" (LayerNormalization, LRA's) or "batch" (padding-aware
            `MaskedBatchNormalization`) for every block's pre-norms and the final norm.
        input_encoding: str. "embedding" (a table row per id) or "linear": ids are pixel
            values 0..255, fed as `(id / 255 - mean) / std` to a Dense(embed_dim), as S4/S5
            feed LRA's images.
        pixel_stats: (mean, std) of `linear`'s normalisation, on the [0, 1] scale.
        **kwargs: Base layer arguments.

    Call arguments:
        tokens: int `[batch, length]`.
        training: bool.

    Returns:
        `[batch, length (+1 with CLS), embed_dim]`; its Keras mask (`compute_mask`) is the
        padding mask, True at real tokens and at CLS.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import LRAEncoder
    >>> enc = LRAEncoder(vocab_size=20, max_length=12, embed_dim=16, num_layers=1,
    ...                  num_heads=2, key_dim=8, mlp_dim=32, use_cls_token=True)
    >>> tuple(enc(np.ones((2, 12), "int32")).shape)
    (2, 13, 16)

    Reference:
        Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", ICLR 2021.
    """

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        embed_dim: int,
        num_layers: int,
        num_heads: int,
        key_dim: int,
        mlp_dim: int,
        attention: str = "full",
        attention_kwargs: dict | None = None,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
        use_cls_token: bool = False,
        learned_positions: bool = False,
        mask_padding: bool = True,
        causal: bool = False,
        positions: str | None = None,
        norm: str = "layer",
        input_encoding: str = "embedding",
        pixel_stats: tuple[float, float] = (0.5, 0.5),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if norm not in NORMS:
            raise ValueError(f"LRAEncoder: `norm` must be one of {list(NORMS)}, got {norm!r}.")
        if input_encoding not in INPUT_ENCODINGS:
            raise ValueError(
                f"LRAEncoder: `input_encoding` must be one of {list(INPUT_ENCODINGS)}, got "
                f"{input_encoding!r}."
            )
        pixel_stats = tuple(float(v) for v in pixel_stats)
        if len(pixel_stats) != 2 or not pixel_stats[1] > 0:
            raise ValueError(
                f"LRAEncoder: `pixel_stats` must be (mean, std > 0), got {pixel_stats!r}."
            )
        if norm != "layer" and attention in RECURRENT_BLOCKS:
            raise ValueError(
                f"LRAEncoder: `norm` must be 'layer' for the segment-recurrent "
                f"'{attention}' encoder (its blocks carry LayerNorms of their own)."
            )
        self.norm = norm
        self.input_encoding = input_encoding
        self.pixel_stats = pixel_stats
        self.vocab_size = int(vocab_size)
        self.max_length = int(max_length)
        self.embed_dim = int(embed_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.mlp_dim = int(mlp_dim)
        self.attention = attention
        self.attention_kwargs = dict(attention_kwargs or {})
        self.dropout = float(dropout)
        self.attention_dropout = None if attention_dropout is None else float(attention_dropout)
        self.use_cls_token = bool(use_cls_token)
        self.learned_positions = bool(learned_positions)
        self.mask_padding = bool(mask_padding)
        self.causal = bool(causal)
        if positions is None:
            positions = "learned" if self.learned_positions else "sinusoidal"
        if positions not in POSITION_MODES:
            raise ValueError(
                f"LRAEncoder: `positions` must be one of {POSITION_MODES}, got {positions!r}."
            )
        self.positions = positions
        self.learned_positions = positions == "learned"
        if positions == "rotary":
            self._check_rotary()
        if input_encoding == "linear":
            self.token_embedding = keras.layers.Dense(
                self.embed_dim, dtype=self.dtype_policy, name="pixel_encoder"
            )
        else:
            self.token_embedding = keras.layers.Embedding(
                self.vocab_size,
                self.embed_dim,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
                dtype=self.dtype_policy,
                name="token_embedding",
            )
        seq_length = self.max_length + int(self.use_cls_token)
        block_attention_kwargs = dict(self.attention_kwargs)
        if self.positions == "rotary":
            # Rotary positions live in every block's queries and keys, not in the embedding.
            self.position_embedding = None
            block_attention_kwargs["rotary"] = True
        elif self.learned_positions:
            self.position_embedding = PositionEmbedding(
                seq_length, dtype=self.dtype_policy, name="position_embedding"
            )
        else:
            self.position_embedding = SinusoidalPositionEmbedding(
                dtype=self.dtype_policy, name="position_embedding"
            )
        self.embedding_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.recurrent = None
        self.blocks = []
        if self.attention in RECURRENT_BLOCKS:
            self.recurrent = SegmentRecurrentEncoder(
                block=self.attention,
                num_layers=self.num_layers,
                num_heads=self.num_heads,
                key_dim=self.key_dim,
                mlp_dim=self.mlp_dim,
                dropout=self.dropout,
                attention_dropout=0.1 if self.attention_dropout is None else self.attention_dropout,
                causal=self.causal,
                dtype=self.dtype_policy,
                name="recurrent",
                **self.attention_kwargs,
            )
        else:
            self.blocks = [
                TransformerEncoderBlock(
                    num_heads=self.num_heads,
                    key_dim=self.key_dim,
                    mlp_dim=self.mlp_dim,
                    attention=self.attention,
                    attention_kwargs=block_attention_kwargs,
                    dropout=self.dropout,
                    attention_dropout=self.attention_dropout,
                    norm=self.norm,
                    dtype=self.dtype_policy,
                    name=f"block_{i}",
                )
                for i in range(self.num_layers)
            ]
        self.final_norm = make_norm(self.norm, "encoder_norm", self.dtype_policy)

    def _check_rotary(self) -> None:
        if self.attention in RECURRENT_BLOCKS:
            raise ValueError(
                f"LRAEncoder: positions='rotary' does not apply to the segment-recurrent "
                f"'{self.attention}' encoder, which has relative positions of its own."
            )
        cls = ATTENTIONS.get(self.attention)
        if cls is not None and not getattr(cls, "supports_rotary", False):
            raise ValueError(
                f"LRAEncoder: attention '{self.attention}' does not support positions='rotary' "
                "(it has no query-key dot product to rotate); use 'learned' or 'sinusoidal'."
            )

    def build(self, tokens_shape):
        if tokens_shape[1] is not None and tokens_shape[1] > self.max_length:
            raise ValueError(
                f"LRAEncoder: token length {tokens_shape[1]} exceeds max_length {self.max_length}."
            )
        if self.input_encoding == "linear":
            self.token_embedding.build(tuple(tokens_shape) + (1,))
        else:
            self.token_embedding.build(tokens_shape)
        if self.use_cls_token:
            self.cls_token = self.add_weight(
                name="cls_token", shape=(1, 1, self.embed_dim), initializer="zeros"
            )
        seq_shape = (tokens_shape[0], self._seq_length(tokens_shape[1]), self.embed_dim)
        if self.position_embedding is not None:
            self.position_embedding.build(seq_shape)
        for block in self.blocks:
            block.build(seq_shape)
        if self.recurrent is not None:
            self.recurrent.build(seq_shape)
        self.final_norm.build(seq_shape)

    def _seq_length(self, length):
        return None if length is None else length + int(self.use_cls_token)

    def padding_mask(self, tokens):
        """Boolean `[batch, length (+1)]`, True at real tokens (and at CLS)."""
        if self.mask_padding:
            mask = ops.not_equal(tokens, 0)
        else:
            mask = ops.ones_like(tokens, dtype="bool")
        if self.use_cls_token:
            mask = ops.concatenate([ops.ones_like(tokens[:, :1], dtype="bool"), mask], axis=1)
        return mask

    def call(self, tokens, training=None):
        if not keras.backend.is_int_dtype(keras.backend.standardize_dtype(tokens.dtype)):
            raise ValueError(
                f"LRAEncoder: `tokens` must be integer token ids, got dtype {tokens.dtype}."
            )
        mask = self.padding_mask(tokens)
        x = self._encode_tokens(tokens)
        if self.use_cls_token:
            cls = ops.broadcast_to(
                ops.cast(self.cls_token, x.dtype), (ops.shape(x)[0], 1, self.embed_dim)
            )
            x = ops.concatenate([cls, x], axis=1)
        if self.position_embedding is not None:
            x = self.position_embedding(x)
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, padding_mask=mask, training=training, use_causal_mask=self.causal)
        if self.recurrent is not None:
            x = self.recurrent(x, padding_mask=mask, training=training)
        if self.norm == "batch":
            return self.final_norm(x, mask=mask, training=training)
        return self.final_norm(x)

    def _encode_tokens(self, tokens):
        if self.input_encoding == "embedding":
            return self.token_embedding(tokens)
        mean, std = self.pixel_stats
        values = (ops.cast(tokens, "float32") / 255.0 - mean) / std
        return self.token_embedding(ops.cast(values[..., None], self.compute_dtype))

    def compute_mask(self, tokens, mask=None):
        return self.padding_mask(tokens)

    def compute_output_shape(self, tokens_shape):
        return (tokens_shape[0], self._seq_length(tokens_shape[1]), self.embed_dim)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "max_length": self.max_length,
                "embed_dim": self.embed_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "mlp_dim": self.mlp_dim,
                "attention": self.attention,
                "attention_kwargs": self.attention_kwargs,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "use_cls_token": self.use_cls_token,
                "learned_positions": self.learned_positions,
                "mask_padding": self.mask_padding,
                "causal": self.causal,
                "positions": self.positions,
                "norm": self.norm,
                "input_encoding": self.input_encoding,
                "pixel_stats": list(self.pixel_stats),
            }
        )
        return config
