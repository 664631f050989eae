"""Linear Transformer attention (Katharopoulos et al. 2020): the elu + 1 feature map."""

from __future__ import annotations

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.linear_attention_utils import linear_attention
from lra_keras.layers.attention.registry import register_attention

_FEATURE_MAPS = ("elu",)


@register_attention("linear")
@keras.saving.register_keras_serializable(package="lra_keras")
class LinearAttention(BaseAttention):
    """Linear Transformer attention: `phi(Q) (phi(K)^T V)` with `phi(x) = elu(x) + 1`.

    The output at query i is `phi(q_i)^T S / (phi(q_i)^T z + 1e-6)` with `S = sum_j phi(k_j)
    v_j^T` and `z = sum_j phi(k_j)` over the allowed keys (no 1/sqrt(d) scale), in O(L d dv)
    time. The causal form is a prefix sum computed chunk by chunk (the masked quadratic form
    inside a chunk, running sums across chunks; see `linear_attention_utils`), strictly causal.
    There is no probability tensor, so attention dropout cannot apply: `dropout > 0` raises
    a ValueError.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        feature_map: str. The feature map; only `"elu"` (elu(x) + 1, the paper's) is defined.
        chunk_size: int. Chunk length of the causal prefix sums (memory O(L chunk_size +
            L / chunk_size * key_dim * value_dim) per head); the result does not depend on it.
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention`. No dense `attention_mask`, no attention scores.

    Returns:
        `[batch, T, output_dim]`.

    Masking: padded keys get `phi(k) = 0`, so they add nothing to `S` or `z` (the LRA code
    ignores padding); padded query rows are zero; a query with no real key gives 0 (the 1e-6
    keeps the division finite).

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import LinearAttention
    >>> layer = LinearAttention(num_heads=2, key_dim=8)
    >>> x = np.random.rand(2, 50, 16).astype("float32")
    >>> tuple(layer(x, x, use_causal_mask=True).shape)
    (2, 50, 16)

    Reference:
        Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive Transformers with
        Linear Attention", ICML 2020.
    """

    # Rotary positions (`rotary=True`) rotate q and k in the base, before elu + 1, so every
    # feature stays positive and each output is a convex combination of values, as without
    # rotary. elu is not rotation-equivariant, so phi(R_m q) . phi(R_n k) is not a function of
    # m - n alone; RoFormer's eq. 19 keeps that property by rotating the features in the
    # numerator only, but then the numerator is signed while the normaliser is not: weights can
    # be negative and no longer sum to one (with that form `performer` never left ListOps'
    # majority class). Here it did not train better either: with rotary as the only positions,
    # the learnability pointer and look-back tasks reached 0.45 and 0.54 with it, 0.47 and 0.56
    # rotating before the feature map.
    has_attention_probabilities = False

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        feature_map: str = "elu",
        chunk_size: int = 64,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        if feature_map not in _FEATURE_MAPS:
            raise ValueError(
                f"LinearAttention: `feature_map` must be one of {_FEATURE_MAPS}, "
                f"got {feature_map!r}."
            )
        self.chunk_size = attention_utils.checked_int(chunk_size, "chunk_size", "LinearAttention")
        self.feature_map = feature_map

    def _features(self, x):
        return ops.elu(attention_utils.to_float32(x)) + 1.0

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        phi_q = self._features(q)
        phi_k = attention_utils.zero_padded(self._features(k), key_mask)
        return linear_attention(phi_q, phi_k, v, causal=causal, chunk_size=self.chunk_size)

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """phi(K)^T V and phi(Q) S (d x dv each per token), plus chunk-local blocks if causal."""
        h, d, dv = self.num_heads, self.key_dim, self.value_dim
        flops = 2 * batch * h * (query_length + key_length) * d * (dv + 1)
        if causal:
            flops += self._pair_flops(batch, query_length, min(self.chunk_size, key_length))
        return flops

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"feature_map": self.feature_map, "chunk_size": self.chunk_size})
        return config
