"""Pooling of a `[batch, length, dim]` sequence to `[batch, dim]`: CLS, mean, max or last."""

from __future__ import annotations

import keras
from keras import ops

POOLING_MODES = ("cls", "mean", "max", "last")


@keras.saving.register_keras_serializable(package="lra_keras")
class SequencePooling(keras.layers.Layer):
    """Pools a sequence to one vector: CLS, or the mean, max or last of the real tokens.

    Every mode but `cls` looks at real tokens only: the LRA reference's MEAN pooling averages
    padded positions too, so its output changes with the amount of padding; these do not.

    Args:
        mode: str. `"cls"` (the first position, where `LRAEncoder(use_cls_token=True)` puts
            its CLS vector), `"mean"` (the masked mean, S4/S5/LRU's LRA pooling), `"max"`
            (the feature-wise maximum over real tokens; padded positions never win) or
            `"last"` (the last real token of each row, found from the mask, not position
            L - 1).
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: `[batch, length, dim]`.
        mask: optional boolean `[batch, length]`, True = real token; Keras passes the mask
            that `LRAEncoder.compute_mask` attaches to its output. Without one, every position
            is real.

    Returns:
        `[batch, dim]` in the compute dtype. A fully padded row gives zeros, not NaN or -inf.
        The mean is accumulated in float32. The output carries no mask.

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
        if self.mode == "last":
            return self._last(inputs, mask)
        x = ops.cast(inputs, "float32")
        if self.mode == "max":
            if mask is None:
                return ops.cast(ops.max(x, axis=1), self.compute_dtype)
            real = ops.cast(mask, "bool")[..., None]
            # -inf, not the row's minimum: a padded position must never win.
            best = ops.max(ops.where(real, x, float("-inf")), axis=1)
            any_real = ops.any(real, axis=1)
            return ops.cast(ops.where(any_real, best, 0.0), self.compute_dtype)
        if mask is None:
            return ops.cast(ops.mean(x, axis=1), self.compute_dtype)
        weights = ops.cast(mask, "float32")[..., None]
        total = ops.sum(x * weights, axis=1)
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)
        return ops.cast(total / count, self.compute_dtype)

    def _last(self, inputs, mask):
        if mask is None:
            return inputs[:, -1]
        length = ops.shape(inputs)[1]
        real = ops.cast(mask, "int32")
        # The largest position index holding a real token (-1 when there is none).
        positions = ops.arange(length, dtype="int32")[None, :]
        last = ops.max(ops.where(real > 0, positions, -1), axis=1)
        picked = ops.take_along_axis(inputs, ops.maximum(last, 0)[:, None, None], axis=1)[:, 0]
        return ops.where((last >= 0)[:, None], picked, ops.zeros_like(picked))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config["mode"] = self.mode
        return config
