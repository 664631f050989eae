"""A byte-level causal language model on Transformer-XL or Compressive Transformer blocks."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from lra_keras.layers.recurrence.segment_recurrent_encoder import SegmentRecurrentEncoder

# Bytes are encoded as byte + 1 so that id 0 stays the padding id, as in the text tasks.
VOCAB_SIZE = 257


@keras.saving.register_keras_serializable(package="lra_keras")
class ByteLanguageModel(keras.Model):
    """Predicts the next byte; memory carries context across segments and generation steps.

    Token ids are bytes + 1 (0 = padding). The model embeds them, runs a
    `SegmentRecurrentEncoder` (causal), normalises and projects to 257 logits per position:
    logits at position t predict the byte at t + 1. Relative positions make the model
    independent of absolute offsets, so `generate` can feed one byte at a time against the
    memory: the cost of a new byte depends on `memory_length`, not on the prompt's length.

    Args:
        block: str. "transformer_xl" or "compressive".
        embed_dim: int. Model width.
        num_layers: int. Number of blocks.
        num_heads: int. Attention heads.
        key_dim: int. Size of each head.
        mlp_dim: int. MLP hidden size.
        segment_length: int. Tokens per training segment.
        memory_length: int. Memory rows per block (0 turns recurrence off).
        compressed_memory_length: int. Compressed slots ("compressive" only).
        compression_rate: int. Rows per compressed slot.
        compression: str. "conv", "mean" or "max".
        dropout: float. Dropout.
        attention_dropout: float. Dropout on attention probabilities.
        **kwargs: `keras.Model` arguments.

    Call arguments:
        tokens: int `[batch, L]` (byte + 1; 0 = padding).
        training: bool.

    Returns:
        float32 logits `[batch, L, 257]`.

    Masking: padded positions are excluded as keys; their logits are meaningless and should be
    weighted out of the loss (see `lm_loss`).

    Example:

    >>> from lra_keras.zoo.byte_language_model import ByteLanguageModel
    >>> lm = ByteLanguageModel(embed_dim=32, num_layers=1, num_heads=2, key_dim=16,
    ...                        mlp_dim=64, segment_length=8, memory_length=8)
    >>> text = lm.generate(b"def ", num_bytes=4, seed=0)
    >>> len(text)
    4

    Reference:
        Dai et al., "Transformer-XL", ACL 2019; Rae et al., "Compressive Transformers for
        Long-Range Sequence Modelling", ICLR 2020.
    """

    def __init__(
        self,
        block: str = "transformer_xl",
        embed_dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        key_dim: int = 32,
        mlp_dim: int = 256,
        segment_length: int = 64,
        memory_length: int = 64,
        compressed_memory_length: int = 0,
        compression_rate: int = 3,
        compression: str = "conv",
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.block = block
        self.embed_dim = int(embed_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.mlp_dim = int(mlp_dim)
        self.segment_length = int(segment_length)
        self.memory_length = int(memory_length)
        self.compressed_memory_length = int(compressed_memory_length)
        self.compression_rate = int(compression_rate)
        self.compression = compression
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.embedding = keras.layers.Embedding(
            VOCAB_SIZE,
            self.embed_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
            name="token_embedding",
        )
        self.embedding_dropout = keras.layers.Dropout(self.dropout)
        self.encoder = SegmentRecurrentEncoder(
            block=block,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            mlp_dim=self.mlp_dim,
            segment_length=self.segment_length,
            memory_length=self.memory_length,
            compressed_memory_length=self.compressed_memory_length,
            compression_rate=self.compression_rate,
            compression=self.compression,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            causal=True,
            name="encoder",
        )
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        self.head = keras.layers.Dense(VOCAB_SIZE, dtype="float32", name="logits")

    def _embed(self, tokens, training):
        x = self.embedding(tokens)
        return self.embedding_dropout(x, training=training)

    def call(self, tokens, training=None, state=None, return_state=False):
        mask = ops.not_equal(tokens, 0)
        x = self._embed(tokens, training)
        h, new_state = self.encoder(
            x, padding_mask=mask, state=state, return_state=True, training=training
        )
        logits = self.head(self.final_norm(h))
        if return_state:
            return logits, new_state
        return logits

    def generate(
        self,
        prompt: bytes | str,
        num_bytes: int,
        temperature: float = 1.0,
        seed: int | None = None,
        step_fn=None,
    ) -> bytes:
        """Samples `num_bytes` bytes after `prompt`, carrying memory across steps.

        The prompt runs through the model in segments of `segment_length`; each new byte is
        then one step of length 1 against the memory. `temperature=0` picks the most likely
        byte. `step_fn(tokens, state) -> (logits, state)` replaces the eager call for the
        per-byte steps, e.g. the compiled step of `lra_keras.training.compiled_lm_step` (its
        state shapes are fixed after the prompt, so it traces once).
        """
        if isinstance(prompt, str):
            prompt = prompt.encode("utf-8")
        if not prompt:
            raise ValueError("`prompt` must contain at least one byte.")
        if num_bytes < 0:
            raise ValueError(f"`num_bytes` must be >= 0, got {num_bytes}.")
        rng = np.random.default_rng(seed)
        ids = np.frombuffer(prompt, np.uint8).astype("int32")[None] + 1
        state = None
        # All but the last prompt byte fill the memory; the last one starts generation.
        context, last = ids[:, :-1], ids[:, -1:]
        if context.shape[1]:
            _, state = self(context, state=state, return_state=True)
        if step_fn is None:

            def step_fn(tokens, state):
                return self(tokens, state=state, return_state=True)

        out = bytearray()
        for _ in range(num_bytes):
            logits, state = step_fn(last, state)
            scores = ops.convert_to_numpy(logits)[0, -1, 1:].astype("float64")
            if temperature <= 0:
                byte = int(np.argmax(scores))
            else:
                scores = scores / temperature
                probs = np.exp(scores - scores.max())
                probs /= probs.sum()
                byte = int(rng.choice(256, p=probs))
            out.append(byte)
            last = np.array([[byte + 1]], "int32")
        return bytes(out)

    def get_config(self) -> dict:
        return {
            "block": self.block,
            "embed_dim": self.embed_dim,
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
            "name": self.name,
        }


def lm_loss(tokens, logits):
    """Mean next-byte cross-entropy in nats over real (non-padding) targets.

    `logits[:, t]` predicts `tokens[:, t + 1]`; divide by ln 2 for bits per byte.
    """
    targets = tokens[:, 1:]
    weights = ops.cast(ops.not_equal(targets, 0), "float32")
    losses = keras.losses.sparse_categorical_crossentropy(targets, logits[:, :-1], from_logits=True)
    return ops.sum(losses * weights) / ops.maximum(ops.sum(weights), 1.0)
