"""The base of the token mixers: MultiHeadAttention's interface without queries or keys."""

from __future__ import annotations

import keras

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.mha_contract import (
    check_attention_dropout,
    check_call_capabilities,
    check_input_shapes,
    check_inputs_and_masks,
    mha_config,
    refuse_mha_arguments,
    refuse_rotary,
    set_mha_attributes,
)


class TokenMixer(keras.layers.Layer):
    """Base class (not registered) of the token mixers that stand in for attention.

    A token mixer (FNet's Fourier transform, S4D's state-space convolution) mixes the tokens of
    one sequence without queries, keys or heads, so it is not a `BaseAttention`. To be built by
    `get_attention`, the encoder block and the zoo like any variant, it still takes
    MultiHeadAttention's constructor arguments, keeps them as attributes of the same names and
    serialises them as `BaseAttention` does; it has the attention call signature and refuses,
    as `BaseAttention` does, the MultiHeadAttention arguments, `rotary=True` and the call
    arguments its capabilities lack. `num_heads` and `key_dim` give the width a mixer assumes
    before it is built (`_width`). Cross-attention is refused: `value` and `key` must have the
    query's length and are not otherwise used.

    A subclass declares the capability class attributes of `BaseAttention`
    (`supports_causal`, `strictly_causal`, `supports_cross_attention`, `needs_static_length`,
    `supports_attention_scores`, `supports_attention_mask`, `supports_rotary`,
    `has_attention_probabilities`), registers itself with `register_attention`, creates its
    weights in `_build_mixer(dim)` and mixes in `_mix(x, mask, causal, training)`. A mixer
    with weights sets `_needs_known_width` (build then refuses an unknown last dimension) and
    draws them with `_seeded` initializers, `_float32_weight` and `_sublayer_kwargs`.

    Args:
        num_heads: int or None. Unused by the mixing; with `key_dim`, the width before build.
        key_dim: int or None. See `num_heads`.
        value_dim: int or None. Unused MultiHeadAttention argument, kept as an attribute.
        dropout: float in [0, 1). The subclass's dropout; refused (> 0) by a mixer that has
            no `has_attention_probabilities`.
        use_bias, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint: of the subclass's projections, if any.
        output_shape: int, tuple or None. Must equal the input's last dimension when given.
        activity_regularizer: Regularizer of the output.
        seed: int or None. The subclass's seed.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `[batch, L, dim]`, the sequence to mix.
        value: `[batch, L, dim]`; same length as `query` (a different length raises).
        key: Optional, like `value`.
        query_mask, value_mask, key_mask: Optional boolean `[batch, L]` padding masks (True =
            real token), combined with a logical AND; taken from Keras implicit masks.
        attention_mask: must be None unless the subclass `supports_attention_mask`.
        return_attention_scores: must be False unless it `supports_attention_scores`.
        training: bool, passed to `_mix`.
        use_causal_mask: bool; refused unless it `supports_causal`.

    Returns:
        What `_mix` returns: `[batch, L, dim]`.

    Masking: the padding masks are validated and merged here; `_mix` gets the merged
    `[batch, L]` mask (None when no mask was given) and zeroes padded positions itself.

    Example:

    >>> from lra_keras.layers import FNetMixing, TokenMixer
    >>> layer = FNetMixing(num_heads=2, key_dim=8)
    >>> isinstance(layer, TokenMixer), layer.get_config()["key_dim"], layer.output_shape
    (True, 8, None)

    Reference:
        Lee-Thorp et al., "FNet: Mixing Tokens with Fourier Transforms", NAACL 2022 (token
        mixing in place of attention).
    """

    # A mixer whose weights are shaped by the input width refuses an unknown last dimension.
    _needs_known_width = False
    # BaseAttention's seeded clones of the initializers, one offset per weight, and its
    # arguments for a projection sublayer.
    _next_seed_offset = BaseAttention._next_seed_offset
    _sublayer_kwargs = BaseAttention._sublayer_kwargs

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
        set_mha_attributes(self, locals())
        self._input_dim = None

    @property
    def output_shape(self):
        return self._output_shape

    def _check_shapes(self, query_shape, value_shape, key_shape):
        check_input_shapes(self, query_shape, value_shape, key_shape)
        dim = query_shape[-1]
        if self._needs_known_width and dim is None:
            raise ValueError(
                f"{type(self).__name__}: the input's last dimension must be known, got shape "
                f"{tuple(query_shape)}."
            )
        if self._output_shape is not None and dim is not None:
            out = self._output_shape
            out = (out,) if isinstance(out, int) else tuple(out)
            if out != (dim,):
                raise ValueError(
                    f"{type(self).__name__}: `output_shape` must equal the input's last "
                    f"dimension ({dim}) or be None (a token mixer keeps the width), "
                    f"got {self._output_shape!r}."
                )

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        self._check_shapes(query_shape, value_shape, key_shape)
        dim = query_shape[-1]
        self._input_dim = None if dim is None else int(dim)
        self._build_mixer(self._input_dim)
        self.built = True

    def _build_mixer(self, dim):
        """Creates the mixer's weights for an input of width `dim`; the default has none."""

    def _seeded(self, initializer):
        """`initializer` with its own seed (the layer's seed + a per-weight offset), if seeded."""
        if self.seed is None:
            # No offset is taken: the projection's clone (`_sublayer_kwargs`) keeps its own.
            return initializer
        return self._reseeded(initializer, self._next_seed_offset())

    def _reseeded(self, initializer, offset: int):
        """A copy of `initializer` seeded with `seed + 1000 + offset`; itself if `seed` is None."""
        if self.seed is None:
            return initializer
        config = initializer.get_config()
        config["seed"] = int(self.seed) + 1000 + offset
        return initializer.__class__.from_config(config)

    def _float32_weight(self, name, shape, initializer):
        """A weight kept float32 under any dtype policy (`autocast=False`).

        For state-space parameters: powers such as Lambda^k over 16K steps would be
        meaningless in float16 or bfloat16.
        """
        return self.add_weight(
            name=name, shape=shape, initializer=initializer, dtype="float32", autocast=False
        )

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
        key = value if key is None else key
        masks = check_inputs_and_masks(
            self, (query, value, key), (query_mask, value_mask, key_mask)
        )
        check_call_capabilities(self, use_causal_mask, attention_mask, return_attention_scores)
        mask = attention_utils.merge_masks(*masks)
        return self._mix(query, mask, causal=bool(use_causal_mask), training=training)

    def _mix(self, x, mask, causal: bool, training):
        """Mixes `x` `[batch, L, dim]`; `mask` is the merged `[batch, L]` mask or None."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_mix`.")

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return tuple(query_shape)

    def _width(self, method: str) -> int:
        """The input width: the built one, else `num_heads * key_dim`; raises if neither."""
        dim = self._input_dim
        if dim is None and self.num_heads is not None and self.key_dim is not None:
            dim = self.num_heads * self.key_dim
        if dim is None:
            raise ValueError(
                f"{type(self).__name__}.{method} needs the input width: build the layer first, "
                "or construct it with `num_heads` and `key_dim`."
            )
        return int(dim)

    def load_mha_weights(self, other) -> None:
        """Not applicable: a token mixer has no query, key or value projections to load."""
        raise ValueError(
            f"{type(self).__name__} has no attention projections: `load_mha_weights` does not "
            f"apply to the `{self.attention_name}` token mixer."
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(mha_config(self))
        return config
