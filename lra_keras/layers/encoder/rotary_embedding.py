"""Rotary position embedding (RoFormer): rotate feature pairs by position-dependent angles."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lra_keras")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding: rotates each feature pair by an angle that grows with position.

    For a feature vector `x` of even size `d` at position `m`, feature `i < d/2` is paired with
    feature `i + d/2` and the pair is rotated by the angle `m * theta_i`, with
    `theta_i = max_wavelength ** (-2 i / d)`:
    `x_i' = x_i cos(m theta_i) - x_{i+d/2} sin(m theta_i)` and
    `x_{i+d/2}' = x_{i+d/2} cos(m theta_i) + x_i sin(m theta_i)`.
    Applied to queries and keys, the dot product `q_m' . k_n'` depends on the positions only
    through `m - n` (RoFormer's relative-position property). The pairing (i, i + d/2) is the one
    of GPT-NeoX and keras-hub's `RotaryEmbedding` (RoFormer pairs neighbours (2i, 2i+1)); both
    rotate by the same angles and keep the relative property. The angles are computed in
    float32 and the result is cast back to the input's dtype.

    Args:
        max_wavelength: int. The longest wavelength (the base of the angle frequencies).
        scaling_factor: float. Positions are divided by it (position interpolation).
        sequence_axis: int. The axis of the input that indexes positions.
        feature_axis: int. The axis of the input that holds the (even-sized) features.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: A tensor with a sequence axis and an even-sized feature axis, e.g. projected
            queries `[batch, length, heads, head_dim]`.
        start_index: int. Position of the first element along the sequence axis.

    Returns:
        The rotated tensor, same shape and dtype.

    Masking: position-wise; padded positions are rotated like any other (their attention
    weight is removed by the masks downstream).

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import RotaryEmbedding
    >>> q = np.ones((1, 4, 2, 6), "float32")  # [batch, length, heads, head_dim]
    >>> y = RotaryEmbedding()(q)
    >>> [round(float(v), 4) for v in np.asarray(y)[0, 3, 0, :2]]
    [-1.1311, 0.8515]

    Reference:
        Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding",
        Neurocomputing 2024 (arXiv:2104.09864).
    """

    def __init__(
        self,
        max_wavelength: int = 10000,
        scaling_factor: float = 1.0,
        sequence_axis: int = 1,
        feature_axis: int = -1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if float(max_wavelength) <= 1.0:
            raise ValueError(
                f"RotaryEmbedding: `max_wavelength` must be > 1, got {max_wavelength!r}."
            )
        if float(scaling_factor) <= 0.0:
            raise ValueError(
                f"RotaryEmbedding: `scaling_factor` must be > 0, got {scaling_factor!r}."
            )
        self.max_wavelength = max_wavelength
        self.scaling_factor = float(scaling_factor)
        self.sequence_axis = int(sequence_axis)
        self.feature_axis = int(feature_axis)
        self.supports_masking = True
        self.built = True

    def _axes(self, rank: int) -> tuple[int, int]:
        seq, feat = self.sequence_axis % rank, self.feature_axis % rank
        if seq == feat:
            raise ValueError(
                "RotaryEmbedding: `sequence_axis` and `feature_axis` must differ, got "
                f"{self.sequence_axis} and {self.feature_axis} for a rank-{rank} input."
            )
        return seq, feat

    def call(self, inputs, start_index=0):
        rank = len(inputs.shape)
        seq_axis, feat_axis = self._axes(rank)
        dim = inputs.shape[feat_axis]
        if dim is None or dim % 2:
            raise ValueError(
                "RotaryEmbedding: the feature axis must have a static, even size (features "
                f"are rotated in pairs), got {dim} in an input of shape {tuple(inputs.shape)}."
            )
        half = dim // 2
        exponents = ops.arange(0, half, dtype="float32") * (2.0 / dim)
        inverse_freq = ops.power(float(self.max_wavelength), -exponents)
        length = ops.shape(inputs)[seq_axis]
        positions = ops.cast(ops.arange(length), "float32") + ops.cast(start_index, "float32")
        angles = ops.einsum("l,f->lf", positions / self.scaling_factor, inverse_freq)
        # Broadcast [length, half] against the input: length on seq_axis, half on feat_axis.
        shape = [1] * rank
        shape[seq_axis], shape[feat_axis] = -1, half
        if seq_axis > feat_axis:
            angles = ops.transpose(angles)
        cos = ops.reshape(ops.cos(angles), shape)
        sin = ops.reshape(ops.sin(angles), shape)
        x = ops.cast(inputs, "float32")
        x1, x2 = ops.split(x, 2, axis=feat_axis)
        rotated = ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=feat_axis)
        return ops.cast(rotated, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "max_wavelength": self.max_wavelength,
                "scaling_factor": self.scaling_factor,
                "sequence_axis": self.sequence_axis,
                "feature_axis": self.feature_axis,
            }
        )
        return config
