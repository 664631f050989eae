"""Learned absolute position embedding."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lra_keras")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding to a `[batch, length, dim]` sequence.

    Args:
        max_length: int. Longest sequence the table covers; shorter inputs use its prefix.
        initializer: Initializer of the table (LRA: normal with stddev 0.02).
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `[batch, length, dim]` with `length <= max_length`.

    Returns:
        `inputs` plus the first `length` rows of the table. Keras masks pass through.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import PositionEmbedding
    >>> tuple(PositionEmbedding(max_length=16)(np.zeros((2, 10, 8), "float32")).shape)
    (2, 10, 8)

    Reference:
        Gehring et al., "Convolutional Sequence to Sequence Learning", ICML 2017.
    """

    def __init__(self, max_length: int, initializer="random_normal", **kwargs):
        super().__init__(**kwargs)
        self.max_length = int(max_length)
        self.initializer = keras.initializers.get(
            keras.initializers.RandomNormal(stddev=0.02)
            if initializer == "random_normal"
            else initializer
        )
        self.supports_masking = True

    def build(self, input_shape):
        self.table = self.add_weight(
            name="embeddings",
            shape=(self.max_length, input_shape[-1]),
            initializer=self.initializer,
        )

    def call(self, inputs):
        length = inputs.shape[1]
        if length is not None and length > self.max_length:
            raise ValueError(
                f"PositionEmbedding: input length {length} exceeds max_length {self.max_length}."
            )
        table = ops.cast(self.table[: ops.shape(inputs)[1]], inputs.dtype)
        return inputs + table[None]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "max_length": self.max_length,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
