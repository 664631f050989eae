"""Batch normalisation over the real tokens of a padded sequence batch."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lra_keras")
class MaskedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization of `[batch, length, dim]` whose statistics see real tokens only.

    In training the mean and variance of each feature are taken over the real tokens of the
    batch (the mask), so padded positions never change the statistics or the output at real
    positions; the moving statistics follow them (`momentum`). Inference uses the moving
    statistics. `keras.layers.BatchNormalization` accepts a mask and takes masked moments
    too, but it updates its moving statistics from any batch: this layer skips the update
    when the batch's real tokens hold a non-finite value (the outputs still propagate it) or
    when the batch has no real token, so one bad batch never poisons inference.

    Args:
        momentum: float. Moving-average momentum (0.99 as Keras; PyTorch's 0.1 is 0.9 here).
        epsilon: float. Added to the variance.
        **kwargs: `keras.layers.BatchNormalization` arguments (`axis` must stay -1).

    Call arguments:
        inputs: `[batch, length, dim]` (or `[batch, dim]`).
        mask: optional boolean `[batch, length]`, True = real token; every position is real
            without one.
        training: bool. Batch statistics (and the moving-average update) when True.

    Returns:
        The normalised inputs, same shape, in the compute dtype (statistics in float32).

    Masking: padded positions are excluded from the statistics; their outputs are normalised
    with the same statistics and carry no information into real positions.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import MaskedBatchNormalization
    >>> x = np.array([[[1.0], [3.0], [100.0]]], "float32")
    >>> mask = np.array([[True, True, False]])
    >>> y = MaskedBatchNormalization(epsilon=0.0)(x, mask=mask, training=True)
    >>> np.round(np.asarray(y)[0, :2, 0], 3).tolist()
    [-1.0, 1.0]

    Reference:
        Ioffe and Szegedy, "Batch Normalization", ICML 2015; its use as the pre-norm of LRA
        models: Gu et al., "Efficiently Modeling Long Sequences with Structured State
        Spaces", ICLR 2022.
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs):
        super().__init__(momentum=momentum, epsilon=epsilon, **kwargs)
        if self.axis != -1:
            raise ValueError(
                f"MaskedBatchNormalization: `axis` must be -1 (features last), got {self.axis!r}."
            )
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        x = ops.cast(inputs, "float32")
        if not (training and self.trainable):
            mean = ops.cast(self.moving_mean, "float32")
            variance = ops.cast(self.moving_variance, "float32")
        else:
            axes = tuple(range(len(x.shape) - 1))
            if mask is None:
                weights = ops.ones_like(x[..., :1])
            else:
                weights = ops.cast(mask, "float32")[..., None]
            real = weights > 0
            # `where`, not a product: an inf at a padded position must not become NaN here.
            count = ops.sum(weights, axis=axes)
            safe_count = ops.maximum(count, 1.0)
            mean = ops.sum(ops.where(real, x, 0.0), axis=axes) / safe_count
            centred = ops.where(real, x - mean, 0.0)
            variance = ops.sum(ops.square(centred), axis=axes) / safe_count
            finite = ops.logical_and(ops.all(ops.isfinite(mean)), ops.all(ops.isfinite(variance)))
            usable = ops.logical_and(finite, count[0] > 0)
            m = self.momentum
            moving_mean = ops.cast(self.moving_mean, "float32")
            moving_variance = ops.cast(self.moving_variance, "float32")
            self.moving_mean.assign(
                ops.cast(
                    ops.where(usable, moving_mean * m + mean * (1.0 - m), moving_mean),
                    self.moving_mean.dtype,
                )
            )
            self.moving_variance.assign(
                ops.cast(
                    ops.where(usable, moving_variance * m + variance * (1.0 - m), moving_variance),
                    self.moving_variance.dtype,
                )
            )
        gamma = ops.cast(self.gamma, "float32") if self.scale else None
        beta = ops.cast(self.beta, "float32") if self.center else None
        outputs = ops.batch_normalization(
            x, mean, variance, axis=-1, offset=beta, scale=gamma, epsilon=self.epsilon
        )
        return ops.cast(outputs, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return mask
