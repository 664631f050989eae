"""The attention contract: a drop-in replacement for `keras.layers.MultiHeadAttention`."""

from __future__ import annotations

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.mha_contract import (
    capability_error,
    check_attention_dropout,
    check_call_capabilities,
    check_input_shapes,
    check_inputs_and_masks,
    mha_config,
    refuse_mha_arguments,
    set_mha_attributes,
)
from lra_keras.layers.encoder.rotary_embedding import RotaryEmbedding


@keras.saving.register_keras_serializable(package="lra_keras")
class BaseAttention(keras.layers.Layer):
    """Base of every attention variant: MultiHeadAttention's interface, one `_attend` to write.

    The base owns the four `EinsumDense` projections (named `query`, `key`, `value` and
    `attention_output`, with MultiHeadAttention's kernel and bias shapes), mask merging, the
    zeroing of padded query rows, attention dropout on explicit probability tensors, the dtype
    policy, input validation and `get_config`. A variant implements
    `_attend(q, k, v, *, query, query_mask, key_mask, causal, training)` on projected tensors of
    shape `[batch, length, heads, dim]` and, if it has weights of its own,
    `_build_variant(query_shape, value_shape)`.

    Capabilities are class attributes; asking a variant for one it lacks raises a `ValueError`
    that names the variant and the capability:
    `supports_causal`, `strictly_causal` (the output at t does not depend on inputs after t),
    `supports_cross_attention` (query length != key length), `needs_static_length` (the length
    is fixed at build), `supports_attention_scores` and `supports_attention_mask` (a dense
    `[batch, T, S]` mask; other variants take padding masks as `[batch, length]` vectors).

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        value_dim: int. Size of each head for value; defaults to `key_dim`.
        dropout: float. Dropout on the attention probabilities, for variants that form them.
        use_bias: bool. Whether the projections use biases.
        output_shape: int or tuple. Last dimension(s) of the output; defaults to the query's.
        kernel_initializer: Initializer of the projection kernels.
        bias_initializer: Initializer of the projection biases.
        kernel_regularizer: Regularizer of the projection kernels.
        bias_regularizer: Regularizer of the projection biases.
        activity_regularizer: Regularizer of the output.
        kernel_constraint: Constraint of the projection kernels.
        bias_constraint: Constraint of the projection biases.
        seed: int. Seed of dropout, per-call noise and the random structure drawn at build.
        rotary: bool. Rotate projected queries and keys by their positions (RoFormer) before
            attending, so that q.k depends on relative position; variants without a
            query-key dot product refuse it (`supports_rotary`).
        rotary_max_wavelength: int. The rotary angles' longest wavelength.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: Query tensor `[batch, T, dim]`.
        value: Value tensor `[batch, S, dim]`.
        key: Optional key tensor `[batch, S, dim]`; defaults to `value`.
        query_mask: Optional boolean `[batch, T]`, True = real token. Taken from the query's
            Keras mask (`Embedding(mask_zero=True)`) when not given.
        value_mask: Optional boolean `[batch, S]`; likewise from the value's Keras mask.
        key_mask: Optional boolean `[batch, S]`; likewise from the key's Keras mask.
        attention_mask: Optional boolean `[batch, T, S]`; only variants with
            `supports_attention_mask` accept it.
        return_attention_scores: bool. Also return the `[batch, heads, T, S]` probabilities
            (only variants with `supports_attention_scores`).
        training: bool. Training mode (dropout, noise).
        use_causal_mask: bool. Query i sees keys j <= i.

    Returns:
        The attention output `[batch, T, output_dim]`, zero at padded query positions (and the
        scores, when asked).

    Masking: masks are merged as MultiHeadAttention merges them (logical AND); padded keys are
    excluded and padded query rows of the output are exactly zero; a fully padded row is zero,
    never NaN.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import get_attention
    >>> layer = get_attention("full", num_heads=2, key_dim=8)
    >>> x = np.random.rand(2, 16, 32).astype("float32")
    >>> mask = np.arange(16)[None, :] < np.array([[16], [9]])
    >>> tuple(layer(x, x, query_mask=mask, value_mask=mask).shape)
    (2, 16, 32)

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
        Tay et al., "Efficient Transformers: A Survey", ACM Computing Surveys 2022.
    """

    supports_causal = True
    strictly_causal = True
    supports_cross_attention = True
    needs_static_length = False
    supports_attention_scores = False
    supports_attention_mask = False
    # Whether rotary positions can be applied to this variant's queries and keys.
    supports_rotary = True
    # False for variants with no probability tensor (linear, performer): they refuse
    # `dropout > 0` rather than ignore it, and the zoo passes them attention dropout 0.
    has_attention_probabilities = True
    # For variants with `needs_static_length`: the argument whose weights or tables fix the
    # length, and why; named by the error an unknown length raises.
    static_length_argument = ""
    # The registry name, set by `register_attention`.
    attention_name = "base"

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
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
        rotary: bool = False,
        rotary_max_wavelength: int = 10000,
        **kwargs,
    ):
        refuse_mha_arguments(type(self).__name__, kwargs)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        name = type(self).__name__
        self.num_heads = attention_utils.checked_int(num_heads, "num_heads", name)
        self.key_dim = attention_utils.checked_int(key_dim, "key_dim", name)
        value_dim = attention_utils.checked_int(value_dim, "value_dim", name, allow_none=True)
        check_attention_dropout(self, dropout)
        self.supports_masking = True
        self.value_dim = self.key_dim if value_dim is None else value_dim
        set_mha_attributes(self, locals())
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._dropout_layer = keras.layers.Dropout(
            rate=self.dropout, seed=seed, dtype=self.dtype_policy
        )
        self.rotary = bool(rotary)
        self.rotary_max_wavelength = rotary_max_wavelength
        self._rotary_embedding = None
        if self.rotary:
            if not self.supports_rotary:
                raise self._capability_error(
                    "rotary position embeddings (`rotary=True`)", self._no_rotary_reason
                )
            if self.key_dim % 2:
                raise ValueError(
                    f"{name}: rotary positions rotate feature pairs, so `key_dim` must be "
                    f"even, got {self.key_dim}."
                )
            self._rotary_embedding = RotaryEmbedding(
                max_wavelength=rotary_max_wavelength, dtype=self.dtype_policy, name="rotary"
            )

    @property
    def output_shape(self):
        return self._output_shape

    # ------------------------------------------------------------------ build

    def _sublayer_kwargs(self) -> dict:
        """Arguments for one more projection sublayer or weight of this layer.

        Each call clones the initializers with their seed (if any) offset by the number of
        earlier calls: a clone with the same seed would give every kernel the same values
        (keras.layers.MultiHeadAttention's clones keep the seed and do exactly that).
        """
        offset = self._next_seed_offset()
        return dict(
            kernel_initializer=attention_utils.clone_initializer(self.kernel_initializer, offset),
            bias_initializer=attention_utils.clone_initializer(self.bias_initializer, offset),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
        )

    def _next_seed_offset(self) -> int:
        self._seed_offset = getattr(self, "_seed_offset", 0) + 1
        return self._seed_offset

    def _fresh_initializer(self, initializer=None):
        """A clone of `initializer` (default: the kernel initializer) for one more weight.

        Variants pass it to `add_weight` for weights of their own, so that with a seeded
        initializer no two weights are equal unless tied on purpose.
        """
        initializer = self.kernel_initializer if initializer is None else initializer
        return attention_utils.clone_initializer(initializer, self._next_seed_offset())

    def _output_dims(self, query_shape) -> tuple:
        if self._output_shape is None:
            return (query_shape[-1],)
        if isinstance(self._output_shape, int):
            return (self._output_shape,)
        return tuple(self._output_shape)

    def _build_projections(self, query_shape, value_shape, key_shape):
        bias = "de" if self.use_bias else None
        self._query_dense = keras.layers.EinsumDense(
            "abc,cde->abde",
            output_shape=(None, self.num_heads, self.key_dim),
            bias_axes=bias,
            name="query",
            **self._sublayer_kwargs(),
        )
        self._query_dense.build(query_shape)
        self._key_dense = keras.layers.EinsumDense(
            "abc,cde->abde",
            output_shape=(None, self.num_heads, self.key_dim),
            bias_axes=bias,
            name="key",
            **self._sublayer_kwargs(),
        )
        self._key_dense.build(key_shape)
        self._value_dense = keras.layers.EinsumDense(
            "abc,cde->abde",
            output_shape=(None, self.num_heads, self.value_dim),
            bias_axes=bias,
            name="value",
            **self._sublayer_kwargs(),
        )
        self._value_dense.build(value_shape)
        out_dims = self._output_dims(query_shape)
        out_letters = "efgh"[: len(out_dims)]
        self._output_dense = keras.layers.EinsumDense(
            f"abcd,cd{out_letters}->ab{out_letters}",
            output_shape=(None,) + out_dims,
            bias_axes=out_letters if self.use_bias else None,
            name="attention_output",
            **self._sublayer_kwargs(),
        )
        self._output_dense.build(tuple(query_shape[:2]) + (self.num_heads, self.value_dim))

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        self._check_shapes(query_shape, value_shape, key_shape)
        self._check_static_length(query_shape, value_shape)
        self._build_projections(query_shape, value_shape, key_shape)
        self._build_variant(query_shape, value_shape)
        self.built = True

    def _build_variant(self, query_shape, value_shape):
        """Creates the variant's own weights; the default has none."""

    # ------------------------------------------------------------ validation

    def _capability_error(self, capability: str, detail: str = "") -> ValueError:
        return capability_error(self, capability, detail)

    def _check_shapes(self, query_shape, value_shape, key_shape):
        check_input_shapes(self, query_shape, value_shape, key_shape)

    def _check_static_length(self, query_shape, value_shape):
        """Refuses an unknown length, naming the variant and the argument that fixes it."""
        if not self.needs_static_length or None not in (query_shape[1], value_shape[1]):
            return
        argument = self.static_length_argument or "its structure"
        raise ValueError(
            f"{type(self).__name__} ('{self.attention_name}') needs a static sequence length "
            f"(`needs_static_length`: fixed at build by {argument}); got query shape "
            f"{tuple(query_shape)} and value shape {tuple(value_shape)}. Give the input a "
            "fixed length, e.g. keras.Input((length, dim))."
        )

    # ------------------------------------------------------------------ call

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
        key_is_value = key is None or key is value
        if key is None:
            key = value
        query_mask, value_mask, key_mask = check_inputs_and_masks(
            self, (query, value, key), (query_mask, value_mask, key_mask)
        )
        check_call_capabilities(self, use_causal_mask, attention_mask, return_attention_scores)
        if attention_mask is not None:
            attention_mask = ops.convert_to_tensor(attention_mask)
            attention_utils.check_attention_mask(
                type(self).__name__, attention_mask, query.shape, key.shape
            )
        # Keras fills `query_mask`/`value_mask`/`key_mask` from the inputs' implicit masks
        # (`Embedding(mask_zero=True)`) in `__call__`, as for MultiHeadAttention. The masks are
        # consumed here, so the projections get unmasked copies (they do not support masking).
        query = attention_utils.without_keras_mask(query)
        value = attention_utils.without_keras_mask(value)
        key = value if key_is_value else attention_utils.without_keras_mask(key)

        if 0 in (query.shape[0], query.shape[1], value.shape[1]):
            return self._empty_result(query, value, return_attention_scores)
        if query_mask is None:
            query_mask = ops.ones_like(query[..., 0], dtype="bool")
        kv_mask = attention_utils.merge_masks(value_mask, key_mask)
        if kv_mask is None:
            kv_mask = ops.ones_like(value[..., 0], dtype="bool")

        # Padded inputs are zeroed before projecting, so whatever they hold (even inf or NaN)
        # can reach no real output through any variant's arithmetic.
        query = attention_utils.zero_padded(query, query_mask)
        q = self._query_dense(query)
        k = self._key_dense(attention_utils.zero_padded(key, kv_mask))
        v = self._value_dense(attention_utils.zero_padded(value, kv_mask))
        q, k = self._rotate_queries_and_keys(q, k)
        extra = {}
        if self.supports_attention_mask:
            extra["attention_mask"] = (
                None if attention_mask is None else ops.cast(attention_mask, "bool")
            )
        if self.supports_attention_scores:
            extra["return_attention_scores"] = return_attention_scores
        result = self._attend(
            q,
            k,
            v,
            query=query,
            query_mask=query_mask,
            key_mask=kv_mask,
            causal=bool(use_causal_mask),
            training=training,
            **extra,
        )
        scores = None
        if return_attention_scores:
            result, scores = result
        result = ops.cast(result, self.compute_dtype)
        output = self._output_dense(attention_utils.zero_padded(result, query_mask))
        # The output bias would make padded rows non-zero; the contract says they are zero.
        output = attention_utils.zero_padded(output, query_mask)
        if return_attention_scores:
            return output, scores
        return output

    # Why a variant cannot take rotary positions (the capability error's detail).
    _no_rotary_reason = ""

    def _rotate_queries_and_keys(self, q, k):
        """Rotary positions on projected queries and keys (positions 0.., aligned at 0).

        Kernelised variants (linear, performer) take them here too: rotated before the feature
        map, their features stay positive and their normaliser valid.
        """
        if self._rotary_embedding is None:
            return q, k
        return self._rotary_embedding(q), self._rotary_embedding(k)

    def _empty_result(self, query, value, return_attention_scores):
        """The result for a batch of 0, or a length of 0: nothing to attend to.

        An empty output `[batch, T, out]` (with T > 0 and no keys, every row is zero, as a
        fully padded row is), computed without the variant, whose blocks, landmarks or
        features have no meaning on an empty sequence.
        """
        batch, t = attention_utils.dim(query, 0), attention_utils.dim(query, 1)
        output = ops.zeros(
            attention_utils.reshape_target([batch, t, *self._output_dims(query.shape)]),
            self.compute_dtype,
        )
        if return_attention_scores:
            s = attention_utils.dim(value, 1)
            scores = ops.zeros(
                attention_utils.reshape_target([batch, self.num_heads, t, s]), "float32"
            )
            return output, scores
        return output

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement `_attend`.")

    def _dropout_probs(self, probs, training):
        """Attention dropout on an explicit probability tensor (cast to the compute dtype)."""
        probs = ops.cast(probs, self.compute_dtype)
        if self.dropout > 0.0:
            probs = self._dropout_layer(probs, training=training)
        return probs

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        return tuple(query_shape[:-1]) + self._output_dims(query_shape)

    # ----------------------------------------------------------------- FLOPs

    def projection_flops(self, batch: int, query_length: int, key_length: int) -> int:
        """Forward multiply-add FLOPs (2 per MAC) of the four projections."""
        qdim = self._query_dense.kernel.shape[0] if self.built else self.key_dim * self.num_heads
        out = int(sum(self._output_dims((None, None, qdim))))
        hk, hv = self.num_heads * self.key_dim, self.num_heads * self.value_dim
        macs = query_length * qdim * hk + key_length * qdim * (hk + hv) + query_length * hv * out
        return 2 * batch * macs

    def attention_flops(
        self, batch: int, query_length: int, key_length: int, causal: bool = False
    ) -> int:
        """Forward FLOPs of `_attend` (2 per multiply-add), the variant's analytic count.

        The default is dense attention: QK^T and PV over every (query, key) pair. Variants that
        do less (or more) override it; the efficiency benchmark reports it beside the time.
        """
        del causal
        return self._pair_flops(batch, query_length, key_length)

    def _pair_flops(self, batch: int, queries: int, keys_per_query: float) -> int:
        """FLOPs of scoring and mixing `keys_per_query` keys for each of `queries` queries."""
        per_pair = 2 * self.num_heads * (self.key_dim + self.value_dim)
        return int(batch * queries * keys_per_query * per_pair)

    # --------------------------------------------------------------- weights

    def load_mha_weights(self, other) -> None:
        """Copies the four projections, by name, from a MultiHeadAttention or BaseAttention.

        Both layers must be built. Keras lists a layer's own weights before its sublayers', so
        `set_weights` on the whole layer would pair the wrong tensors; this copies each named
        projection instead.
        """
        if not isinstance(other, keras.layers.MultiHeadAttention | BaseAttention):
            raise ValueError(
                "`load_mha_weights` takes a keras.layers.MultiHeadAttention or a BaseAttention, "
                f"got {type(other).__name__}."
            )
        if not self.built or not other.built:
            raise ValueError(
                "`load_mha_weights` needs both layers built: call each once on an input first."
            )
        for attr in ("_query_dense", "_key_dense", "_value_dense", "_output_dense"):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            src = theirs.get_weights()
            dst = mine.get_weights()
            if [w.shape for w in src] != [w.shape for w in dst]:
                raise ValueError(
                    f"`load_mha_weights`: projection '{mine.name}' has weight shapes "
                    f"{[w.shape for w in dst]} here but {[w.shape for w in src]} in "
                    f"{other.name}; build both with the same num_heads, key_dim, value_dim, "
                    "use_bias and input dimension."
                )
            mine.set_weights(src)

    # ---------------------------------------------------------------- config

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(mha_config(self))
        config.update({"rotary": self.rotary, "rotary_max_wavelength": self.rotary_max_wavelength})
        return config
