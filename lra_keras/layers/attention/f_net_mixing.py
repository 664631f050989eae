"""FNet token mixing: the real part of a 2D Fourier transform, in place of self-attention."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import (
    check_attention_dropout,
    check_call_capabilities,
    check_float_inputs,
    check_input_shapes,
    check_padding_mask,
    mha_config,
    refuse_mha_arguments,
    refuse_rotary,
)
from lra_keras.layers.attention.registry import register_attention


@register_attention("fnet")
@keras.saving.register_keras_serializable(package="lra_keras")
class FNetMixing(keras.layers.Layer):
    """FNet's Fourier sublayer: `Y = Re(FFT_seq(FFT_hidden(X)))`, with no parameters.

    A token mixer rather than an attention: nothing is projected and the layer has no weights.
    It still has `BaseAttention`'s constructor, call signature and capability attributes, so
    `get_attention("fnet", ...)`, the encoder block and the zoo build it like any variant.
    MultiHeadAttention's constructor arguments (`num_heads`, `key_dim`, `value_dim`, `dropout`,
    `use_bias`, the initializers, regularizers and constraints, `seed`) are accepted and kept as
    attributes for that uniformity, but unused: there is no projection and no probability tensor,
    hence no attention dropout (`dropout > 0` raises a ValueError). `output_shape`, if given,
    must equal the input's last dimension.
    The FFT runs in float32 under any dtype policy. Time O(L D log(L D)), memory O(L D).
    Not causal; self-attention only (`query` is mixed; `value` and `key` must have its length
    and are not otherwise used, so pass the same tensor).

    Args:
        num_heads: int or None. Unused (kept for the attention interface).
        key_dim: int or None. Unused; with `num_heads`, gives the width `attention_flops`
            assumes before the layer is built.
        value_dim, dropout, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint, seed: unused
            MultiHeadAttention arguments, kept as attributes.
        output_shape: int, tuple or None. Must equal the input's last dimension when given.
        activity_regularizer: Regularizer of the output.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `[batch, L, dim]`, the sequence to mix.
        value: `[batch, L, dim]`; same length as `query` (a different length raises).
        key: Optional, like `value`.
        query_mask, value_mask, key_mask: Optional boolean `[batch, L]` padding masks (True =
            real token), combined with a logical AND; taken from Keras implicit masks.
        attention_mask: must be None (raises a ValueError: pass padding masks).
        return_attention_scores: must be False (raises: there are no scores).
        training: unused.
        use_causal_mask: must be False (raises: not causal).

    Returns:
        `[batch, L, dim]` in the compute dtype, zero at padded positions.

    Masking: padded rows of the input are set to zero (with `where`, so even non-finite padded
    contents cannot leak) before the transform, and the output rows at padded positions are set
    to zero after it; a fully padded row is zero. The Fourier transform over the sequence axis
    still runs over the whole padded length, so the outputs at real positions depend on the
    total length L (the number of padded positions), not only on the real tokens: the same
    sentence padded to two lengths mixes differently. FNet itself cannot mask padding.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import get_attention
    >>> layer = get_attention("fnet", num_heads=2, key_dim=8)
    >>> x = np.random.rand(2, 10, 16).astype("float32")
    >>> mask = np.arange(10)[None, :] < np.array([[10], [6]])
    >>> tuple(layer(x, x, query_mask=mask, value_mask=mask).shape)
    (2, 10, 16)

    Reference:
        Lee-Thorp et al., "FNet: Mixing Tokens with Fourier Transforms", NAACL 2022.
    """

    supports_causal = False
    strictly_causal = False
    supports_cross_attention = False
    needs_static_length = False
    supports_attention_scores = False
    supports_attention_mask = False
    supports_rotary = False
    has_attention_probabilities = False
    # The registry name, set by `register_attention`.
    attention_name = "fnet"

    def __init__(
        self,
        num_heads: int | None = None,
        key_dim: int | None = None,
        value_dim: int | None = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        output_shape=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed: int | None = None,
        **kwargs,
    ):
        refuse_mha_arguments(type(self).__name__, kwargs)
        refuse_rotary(self, kwargs)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        check_attention_dropout(self, dropout)
        self.supports_masking = True
        name = type(self).__name__
        self.num_heads = attention_utils.checked_int(num_heads, "num_heads", name, allow_none=True)
        self.key_dim = attention_utils.checked_int(key_dim, "key_dim", name, allow_none=True)
        self.value_dim = attention_utils.checked_int(value_dim, "value_dim", name, allow_none=True)
        self.dropout = float(dropout)
        self.use_bias = use_bias
        self._output_shape = output_shape
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.seed = seed
        self._input_dim = None

    @property
    def output_shape(self):
        return self._output_shape

    def _check_shapes(self, query_shape, value_shape, key_shape):
        check_input_shapes(self, query_shape, value_shape, key_shape)
        dim = query_shape[-1]
        if self._output_shape is not None and dim is not None:
            out = self._output_shape
            out = (out,) if isinstance(out, int) else tuple(out)
            if out != (dim,):
                raise ValueError(
                    f"{type(self).__name__}: `output_shape` must equal the input's last "
                    f"dimension ({dim}) or be None (a Fourier transform keeps the width), "
                    f"got {self._output_shape!r}."
                )

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_shapes(query_shape, value_shape, key_shape)
        self._input_dim = query_shape[-1]
        self.built = True

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        del training
        key = value if key is None else key
        check_float_inputs(self, query=query, value=value, key=key)
        self._check_shapes(query.shape, value.shape, key.shape)
        name = type(self).__name__
        masks = [
            check_padding_mask(name, "query_mask", query_mask, query.shape[:2]),
            check_padding_mask(name, "value_mask", value_mask, value.shape[:2]),
            check_padding_mask(name, "key_mask", key_mask, key.shape[:2]),
        ]
        check_call_capabilities(self, use_causal_mask, attention_mask, return_attention_scores)
        mask = None
        for m in masks:
            if m is not None:
                mask = m if mask is None else ops.logical_and(mask, m)

        x = attention_utils.to_float32(query)
        if mask is not None:
            x = ops.where(mask[..., None], x, 0.0)
        real, _ = ops.fft2((x, ops.zeros_like(x)))
        if mask is not None:
            real = ops.where(mask[..., None], real, 0.0)
        return ops.cast(real, self.compute_dtype)

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return tuple(query_shape)

    def projection_flops(self, batch: int, query_length: int, key_length: int) -> int:
        """No projections: 0."""
        del batch, query_length, key_length
        return 0

    def attention_flops(
        self, batch: int, query_length: int, key_length: int, causal: bool = False
    ) -> int:
        """A complex 2D FFT of N = L * dim points per example: 5 N log2 N FLOPs."""
        del key_length, causal
        dim = self._input_dim
        if dim is None and self.num_heads is not None and self.key_dim is not None:
            dim = self.num_heads * self.key_dim
        if dim is None:
            raise ValueError(
                f"{type(self).__name__}.attention_flops needs the input width: build the layer "
                "first, or construct it with `num_heads` and `key_dim`."
            )
        n = query_length * int(dim)
        return int(batch * 5 * n * math.log2(n)) if n > 1 else 0

    def load_mha_weights(self, other) -> None:
        """Not applicable: FNet has no projections to load."""
        raise ValueError(
            f"{type(self).__name__} has no projections: `load_mha_weights` does not apply to "
            "the `fnet` token mixer."
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(mha_config(self))
        return config
