"""Pooling of a `[batch, length, dim]` sequence to `[batch, dim]`: CLS or a masked mean."""

from __future__ import annotations

import keras
from keras import ops

POOLING_MODES = ("cls", "mean")


@keras.saving.register_keras_serializable(package="lra_keras")
class SequencePooling(keras.layers.Layer):
    """Pools a sequence to one vector: the first (CLS) position or the mean over real tokens.

    The mean is taken over real tokens only: the LRA reference's MEAN pooling averages padded
    positions too, so its output changes with the amount of padding; this one does not.

    Args:
        mode: str. `"cls"` (the first position, where `LRAEncoder(use_cls_token=True)` puts
            its CLS vector) or `"mean"` (the masked mean).
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `[batch, length, dim]`.
        mask: optional boolean `[batch, length]`, True = real token; Keras passes the mask
            that `LRAEncoder.compute_mask` attaches to its output. Without one, every position
            is real.

    Returns:
        `[batch, dim]` in the compute dtype. A fully padded row gives zeros, not NaN. The mean
        is accumulated in float32. The output carries no mask.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import SequencePooling
    >>> x = np.arange(12, dtype="float32").reshape(1, 4, 3)
    >>> mask = np.array([[True, True, False, False]])
    >>> SequencePooling("mean")(x, mask=mask).numpy().tolist()
    [[1.5, 2.5, 3.5]]

    Reference:
        Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", ICLR 2021
        (`classifier_head`; the mean here excludes padding).
    """

    def __init__(self, mode: str = "cls", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(
                f"SequencePooling: `mode` must be one of {list(POOLING_MODES)}, got {mode!r}."
            )
        self.mode = mode
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if self.mode == "cls":
            return inputs[:, 0]
        x = ops.cast(inputs, "float32")
        if mask is None:
            return ops.cast(ops.mean(x, axis=1), self.compute_dtype)
        weights = ops.cast(mask, "float32")[..., None]
        total = ops.sum(x * weights, axis=1)
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)
        return ops.cast(total / count, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config["mode"] = self.mode
        return config
