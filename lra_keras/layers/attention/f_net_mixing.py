"""FNet token mixing: the real part of a 2D Fourier transform, in place of self-attention."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.registry import register_attention
from lra_keras.layers.attention.token_mixer import TokenMixer


@register_attention("fnet")
@keras.saving.register_keras_serializable(package="lra_keras")
class FNetMixing(TokenMixer):
    """FNet's Fourier sublayer: `Y = Re(FFT_seq(FFT_hidden(X)))`, with no parameters.

    A token mixer rather than an attention: nothing is projected and the layer has no weights.
    As a `TokenMixer` it still has `BaseAttention`'s constructor, call signature and capability
    attributes, so `get_attention("fnet", ...)`, the encoder block and the zoo build it like any
    variant.
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

    def _mix(self, x, mask, causal: bool, training):
        del causal, training
        x = attention_utils.to_float32(x)
        if mask is not None:
            x = ops.where(mask[..., None], x, 0.0)
        if 0 in tuple(x.shape):
            # An empty batch or sequence has an empty transform (torch's MKL FFT refuses one).
            return ops.cast(ops.zeros_like(x), self.compute_dtype)
        real, _ = ops.fft2((x, ops.zeros_like(x)))
        if mask is not None:
            real = ops.where(mask[..., None], real, 0.0)
        return ops.cast(real, self.compute_dtype)

    def projection_flops(self, batch: int, query_length: int, key_length: int) -> int:
        """No projections: 0."""
        del batch, query_length, key_length
        return 0

    def attention_flops(
        self, batch: int, query_length: int, key_length: int, causal: bool = False
    ) -> int:
        """A complex 2D FFT of N = L * dim points per example: 5 N log2 N FLOPs."""
        del key_length, causal
        n = query_length * self._width("attention_flops")
        return int(batch * 5 * n * math.log2(n)) if n > 1 else 0
