"""Keras layers: every attention variant, the encoder blocks and the recurrence layers.

Importing this package registers every attention variant in `ATTENTIONS`.
"""

from lra_keras.layers.attention.axial_attention import AxialAttention
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.big_bird_attention import BigBirdAttention
from lra_keras.layers.attention.chunked_attention import ChunkedAttention
from lra_keras.layers.attention.f_net_mixing import FNetMixing
from lra_keras.layers.attention.full_attention import FullAttention
from lra_keras.layers.attention.image_local_attention import ImageLocalAttention
from lra_keras.layers.attention.linear_attention import LinearAttention
from lra_keras.layers.attention.linformer_attention import LinformerAttention
from lra_keras.layers.attention.local_attention import LocalAttention
from lra_keras.layers.attention.longformer_attention import LongformerAttention
from lra_keras.layers.attention.lru_mixing import LRUMixing
from lra_keras.layers.attention.mega_mixing import MegaMixing
from lra_keras.layers.attention.memory_compressed_attention import MemoryCompressedAttention
from lra_keras.layers.attention.nystrom_attention import NystromAttention
from lra_keras.layers.attention.performer_attention import PerformerAttention
from lra_keras.layers.attention.reformer_attention import ReformerAttention
from lra_keras.layers.attention.registry import ATTENTIONS, get_attention, register_attention
from lra_keras.layers.attention.routing_attention import RoutingAttention
from lra_keras.layers.attention.s4d_mixing import S4DMixing
from lra_keras.layers.attention.s5_mixing import S5Mixing
from lra_keras.layers.attention.set_attention import SetAttention
from lra_keras.layers.attention.sinkhorn_attention import SinkhornAttention
from lra_keras.layers.attention.sparse_attention import SparseAttention
from lra_keras.layers.attention.synthesizer_attention import SynthesizerAttention
from lra_keras.layers.attention.token_mixer import TokenMixer
from lra_keras.layers.encoder.lra_encoder import LRAEncoder
from lra_keras.layers.encoder.masked_batch_normalization import MaskedBatchNormalization
from lra_keras.layers.encoder.position_embedding import PositionEmbedding
from lra_keras.layers.encoder.rotary_embedding import RotaryEmbedding
from lra_keras.layers.encoder.sequence_pooling import SequencePooling
from lra_keras.layers.encoder.sinusoidal_position_embedding import SinusoidalPositionEmbedding
from lra_keras.layers.encoder.transformer_encoder_block import TransformerEncoderBlock
from lra_keras.layers.recurrence.compressive_transformer_block import CompressiveTransformerBlock
from lra_keras.layers.recurrence.relative_multi_head_attention import RelativeMultiHeadAttention
from lra_keras.layers.recurrence.segment_recurrent_encoder import SegmentRecurrentEncoder
from lra_keras.layers.recurrence.transformer_xl_block import TransformerXLBlock

__all__ = [
    "ATTENTIONS",
    "AxialAttention",
    "BaseAttention",
    "BigBirdAttention",
    "ChunkedAttention",
    "CompressiveTransformerBlock",
    "FNetMixing",
    "FullAttention",
    "ImageLocalAttention",
    "LRAEncoder",
    "LRUMixing",
    "LinearAttention",
    "LinformerAttention",
    "LocalAttention",
    "LongformerAttention",
    "MaskedBatchNormalization",
    "MegaMixing",
    "MemoryCompressedAttention",
    "NystromAttention",
    "PerformerAttention",
    "PositionEmbedding",
    "ReformerAttention",
    "RotaryEmbedding",
    "RoutingAttention",
    "RelativeMultiHeadAttention",
    "S4DMixing",
    "S5Mixing",
    "SegmentRecurrentEncoder",
    "SequencePooling",
    "SetAttention",
    "SinkhornAttention",
    "SinusoidalPositionEmbedding",
    "SparseAttention",
    "SynthesizerAttention",
    "TokenMixer",
    "TransformerEncoderBlock",
    "TransformerXLBlock",
    "get_attention",
    "register_attention",
]
