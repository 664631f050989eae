"""Keras layers: every attention variant, the encoder blocks and the recurrence layers.

Importing this package registers every attention variant in `ATTENTIONS`.
"""

from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.full_attention import FullAttention
from lra_keras.layers.attention.registry import ATTENTIONS, get_attention, register_attention
from lra_keras.layers.encoder.lra_encoder import LRAEncoder
from lra_keras.layers.encoder.position_embedding import PositionEmbedding
from lra_keras.layers.encoder.sinusoidal_position_embedding import SinusoidalPositionEmbedding
from lra_keras.layers.encoder.transformer_encoder_block import TransformerEncoderBlock

__all__ = [
    "ATTENTIONS",
    "BaseAttention",
    "FullAttention",
    "LRAEncoder",
    "PositionEmbedding",
    "SinusoidalPositionEmbedding",
    "TransformerEncoderBlock",
    "get_attention",
    "register_attention",
]
