"""Set Transformer induced set attention (ISAB): attention through learned inducing points."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention


@register_attention("set")
@keras.saving.register_keras_serializable(package="lra_keras")
class SetAttention(BaseAttention):
    """Induced set attention (ISAB): the tokens attend to m learned inducing points' summaries.

    Two attention stages, O(L m d) time and memory for m = `num_inducing_points`:

    1. H = MHA(I, X, X): the learned inducing points `I` (a weight `inducing_points` of shape
       [m, heads, key_dim], the stage-1 queries directly in head space, since projecting a
       learned parameter adds nothing) attend to the keys and values made by the base's `key`
       and `value` projections of X; padded keys are masked.
    2. O = MHA(X, H, H): the queries from the base's `query` projection of X attend to keys and
       values made from H by this layer's own `EinsumDense` projections `inducing_key`
       ([heads, value_dim, heads, key_dim]) and `inducing_value` ([heads, value_dim, heads,
       value_dim]), which mix the heads of H as the reference's stage-1 output projection
       followed by the stage-2 key/value projections do (composed into one map). The base's
       `attention_output` projection maps the result.

    As DESIGN.md says, the MABs' rFF and LayerNorm are left out; so are their residuals (the
    encoder block's residual, LayerNorm and MLP wrap the whole layer): each stage is plain
    multi-head attention. The output is permutation-equivariant over the real tokens. Not
    causal. Cross-attention works (stage 1 summarises the key/value sequence).

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        num_inducing_points: int. Number m of inducing points (default 32).
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments; the inducing
            points use `kernel_initializer` (fans m and heads*key_dim).

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training: as `BaseAttention`.
        `use_causal_mask=True` raises a ValueError.

    Returns:
        `[batch, T, output_dim]`, zero at padded query positions.

    Masking: padded keys get a -1e9 bias in the float32 stage-1 softmax, so H (and every
    output) ignores padded contents; the m inducing slots are all real in stage 2. Attention
    dropout applies to both stages' probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import SetAttention
    >>> layer = SetAttention(num_heads=2, key_dim=8, num_inducing_points=4)
    >>> x = np.random.rand(2, 13, 16).astype("float32")
    >>> mask = np.arange(13)[None, :] < np.array([[13], [6]])
    >>> tuple(layer(x, x, query_mask=mask, value_mask=mask).shape)
    (2, 13, 16)

    Reference:
        Lee et al., "Set Transformer: A Framework for Attention-based Permutation-Invariant
        Neural Networks", ICML 2019.
    """

    supports_causal = False
    strictly_causal = False
    supports_cross_attention = True
    # The inducing points have no position: a rotation would put absolute positions on the
    # keys' side only.
    supports_rotary = False
    _no_rotary_reason = "its inducing points have no position to rotate by."
    needs_static_length = False

    def __init__(self, num_heads: int, key_dim: int, num_inducing_points: int = 32, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.num_inducing_points = attention_utils.checked_int(
            num_inducing_points, "num_inducing_points", "SetAttention"
        )

    def _build_variant(self, query_shape, value_shape):
        m, h = self.num_inducing_points, self.num_heads
        initializer = self._fresh_initializer()

        def init(shape, dtype=None):
            # 2D fans (m, heads*key_dim), not the 3D ones Keras would take for a conv kernel.
            return ops.reshape(initializer((m, h * self.key_dim), dtype=dtype), shape)

        self.inducing_points = self.add_weight(
            name="inducing_points",
            shape=(m, h, self.key_dim),
            initializer=init,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        bias = "ge" if self.use_bias else None
        self._inducing_key_dense = keras.layers.EinsumDense(
            "bmhd,hdge->bmge",
            output_shape=(m, h, self.key_dim),
            bias_axes=bias,
            name="inducing_key",
            **self._sublayer_kwargs(),
        )
        self._inducing_key_dense.build((None, m, h, self.value_dim))
        self._inducing_value_dense = keras.layers.EinsumDense(
            "bmhd,hdge->bmge",
            output_shape=(m, h, self.value_dim),
            bias_axes=bias,
            name="inducing_value",
            **self._sublayer_kwargs(),
        )
        self._inducing_value_dense.build((None, m, h, self.value_dim))

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        del query, query_mask, causal
        scale = 1.0 / math.sqrt(self.key_dim)
        # `where`, not a product or a bias alone, so non-finite padded keys and values cannot
        # leak (0 * inf and inf - 1e9 are NaN-prone).
        k = ops.where(key_mask[:, :, None, None], k, ops.zeros_like(k))
        v = ops.where(key_mask[:, :, None, None], v, ops.zeros_like(v))
        points = attention_utils.to_float32(self.inducing_points) * scale
        logits_1 = ops.einsum("mhd,bshd->bhms", points, attention_utils.to_float32(k))
        probs_1 = attention_utils.masked_softmax(logits_1, key_mask[:, None, None, :])
        induced = ops.einsum("bhms,bshd->bmhd", self._dropout_probs(probs_1, training), v)
        k_2 = self._inducing_key_dense(induced)
        v_2 = self._inducing_value_dense(induced)
        logits_2 = ops.einsum(
            "bthd,bmhd->bhtm",
            attention_utils.to_float32(q) * scale,
            attention_utils.to_float32(k_2),
        )
        probs_2 = attention_utils.masked_softmax(logits_2)
        return ops.einsum("bhtm,bmhd->bthd", self._dropout_probs(probs_2, training), v_2)

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Stage 1 (m points over S keys), the H -> K, V projections, stage 2 (T over m)."""
        del causal
        m, h = self.num_inducing_points, self.num_heads
        proj = 2 * batch * m * h * self.value_dim * h * (self.key_dim + self.value_dim)
        return int(
            self._pair_flops(batch, m, key_length) + proj + self._pair_flops(batch, query_length, m)
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"num_inducing_points": self.num_inducing_points})
        return config
