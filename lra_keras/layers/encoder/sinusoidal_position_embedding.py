"""Fixed sinusoidal position embedding."""

from __future__ import annotations

import math

import keras
from keras import ops


def sinusoid_encoding(positions, dim: int, max_wavelength: float = 10000.0, dtype="float32"):
    """Sin/cos encodings `[len(positions), dim]` of (possibly negative) positions.

    Sines then cosines, as Flax/LRA and Transformer-XL lay them out.
    """
    half = dim // 2
    positions = ops.cast(positions, "float32")[:, None]
    scale = -math.log(max_wavelength) / max(half - 1, 1)
    freqs = ops.exp(ops.cast(ops.arange(half), "float32") * scale)[None, :]
    angles = positions * freqs
    table = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
    if dim % 2:
        table = ops.pad(table, [(0, 0), (0, 1)])
    return ops.cast(table, dtype)


def sinusoid_table(length, dim: int, max_wavelength: float = 10000.0, dtype="float32"):
    """The `[length, dim]` sin/cos table of Vaswani et al. for positions 0..length-1."""
    return sinusoid_encoding(ops.arange(length), dim, max_wavelength, dtype)


@keras.saving.register_keras_serializable(package="lra_keras")
class SinusoidalPositionEmbedding(keras.layers.Layer):
    """Adds the fixed sinusoidal position encoding to a `[batch, length, dim]` sequence.

    Args:
        max_wavelength: float. Longest wavelength of the sinusoids.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `[batch, length, dim]`.

    Returns:
        `inputs` plus the encoding (no weights; any length). Keras masks pass through.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import SinusoidalPositionEmbedding
    >>> tuple(SinusoidalPositionEmbedding()(np.zeros((2, 10, 8), "float32")).shape)
    (2, 10, 8)

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
    """

    def __init__(self, max_wavelength: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = float(max_wavelength)
        self.supports_masking = True

    def call(self, inputs):
        table = sinusoid_table(
            ops.shape(inputs)[1], inputs.shape[-1], self.max_wavelength, inputs.dtype
        )
        return inputs + table[None]

    def get_config(self) -> dict:
        config = super().get_config()
        config["max_wavelength"] = self.max_wavelength
        return config
