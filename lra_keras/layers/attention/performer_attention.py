"""Performer attention (Choromanski et al. 2021): FAVOR+ positive random features."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.linear_attention_utils import linear_attention
from lra_keras.layers.attention.registry import register_attention

_KERNELS = ("softmax", "relu")
# Added to every feature, as in the reference implementation, so no feature is exactly zero.
_SOFTMAX_FEATURE_EPS = 1e-6
_RELU_FEATURE_EPS = 1e-3


def draw_projection(
    rng: np.random.Generator, num_features: int, dim: int, orthogonal: bool
) -> np.ndarray:
    """Random feature matrix `W` of shape `[num_features, dim]` (float32).

    Orthogonal: stacked transposed (sign-corrected, so Haar) Q factors of `dim x dim` Gaussian
    matrices, each row rescaled to the norm of a `dim`-dimensional Gaussian vector (chi_dim, the
    reference's `scaling=0`), so every row is marginally Gaussian while rows within a block are
    exactly orthogonal.
    """
    if not orthogonal:
        return rng.standard_normal((num_features, dim)).astype("float32")
    blocks = -(-num_features // dim)
    q, r = np.linalg.qr(rng.standard_normal((blocks, dim, dim)))
    # LAPACK's Householder QR fixes the signs of diag(R) (the first column of Q always has a
    # negative first entry); multiplying by them makes Q Haar-distributed, without which the
    # features are not isotropic and the kernel estimate is biased (its error stops falling).
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    rows = np.swapaxes(q, -1, -2).reshape(blocks * dim, dim)[:num_features]
    norms = np.linalg.norm(rng.standard_normal((num_features, dim)), axis=-1)
    return (rows * norms[:, None]).astype("float32")


@register_attention("performer")
@keras.saving.register_keras_serializable(package="lra_keras")
class PerformerAttention(BaseAttention):
    """Performer (FAVOR+) attention: softmax or relu kernel by positive random features.

    Softmax kernel: `phi(x) = m^-1/2 (exp(W x' - |x'|^2 / 2 - s) + 1e-6)` with `x' = x / d^1/4`,
    so `E[phi(q).phi(k)] ~ exp(q.k / sqrt(d))`; relu kernel: `phi(x) = relu(m^-1/2 W x) + 1e-3`.
    The output is `D^-1 phi(Q) (phi(K)^T V)`, in float32, with the causal form computed by the
    chunked prefix sums shared with `linear` (`linear_attention_utils`).

    Stabiliser `s` (softmax kernel, stop-gradient): per query row, its own maximum (it cancels
    in the normalisation); per key, its own maximum `l_j`, undone by weighting the key with
    `exp(l_j - c)` where `c` is the largest `l_j` among the REAL keys the query sees (all real
    keys, or the real keys j <= i when causal). Every weight is at most 1, nothing overflows,
    padded keys never set the scale, and the causal form never looks ahead (strictly causal).

    `W` (`[num_random_features, key_dim]`, orthogonal blocks by QR) is drawn at build from
    `seed` (without one, through Keras's global seeding, so `keras.utils.set_random_seed`
    makes it reproducible) and stored as the non-trainable weight `projection`, so a reloaded
    layer is the same.
    With `redraw=True` a fresh `W` is drawn on every training call from `self.seed_generator`
    (and used for that call only); inference always uses the stored one.
    There is no probability tensor, so attention dropout cannot apply: `dropout > 0` raises
    a ValueError.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        kernel: str. `"softmax"` (FAVOR+) or `"relu"`.
        num_random_features: int. Number of random features m.
        orthogonal: bool. Orthogonal random features (else i.i.d. Gaussian rows).
        redraw: bool. Redraw the features on every training call.
        chunk_size: int. Chunk length of the causal prefix sums; the result does not depend on
            it.
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention`. No dense `attention_mask`, no attention scores.

    Returns:
        `[batch, T, output_dim]`.

    Masking: padded keys get `phi(k) = 0` and are excluded from the key stabiliser (the LRA code
    ignores padding); padded query rows are zero; a query with no real key gives 0.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import PerformerAttention
    >>> layer = PerformerAttention(num_heads=2, key_dim=8, num_random_features=32, seed=0)
    >>> x = np.random.rand(2, 50, 16).astype("float32")
    >>> tuple(layer(x, x, use_causal_mask=True).shape)
    (2, 50, 16)

    Reference:
        Choromanski et al., "Rethinking Attention with Performers", ICLR 2021.
    """

    # Rotary positions (`rotary=True`) rotate q and k in the base, before the feature map, as
    # performer-pytorch and xformers do: the rotation keeps |x|, so the features still estimate
    # exp(q_m . R_(n-m) k_n / sqrt(d)), stay positive, and the normaliser stays a sum of
    # positive weights. RoFormer's eq. 19 (rotated features in the numerator only) makes the
    # numerator signed against an unsigned normaliser; with it performer never left the
    # majority class on ListOps.
    has_attention_probabilities = False

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        kernel: str = "softmax",
        num_random_features: int = 256,
        orthogonal: bool = True,
        redraw: bool = False,
        chunk_size: int = 64,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        if kernel not in _KERNELS:
            raise ValueError(
                f"PerformerAttention: `kernel` must be one of {_KERNELS}, got {kernel!r}."
            )
        self.num_random_features = attention_utils.checked_int(
            num_random_features, "num_random_features", "PerformerAttention"
        )
        self.chunk_size = attention_utils.checked_int(
            chunk_size, "chunk_size", "PerformerAttention"
        )
        self.kernel = kernel
        self.orthogonal = bool(orthogonal)
        self.redraw = bool(redraw)

    def _build_variant(self, query_shape, value_shape):
        rng = np.random.default_rng(attention_utils.structure_seed(self.seed))
        draw = draw_projection(rng, self.num_random_features, self.key_dim, self.orthogonal)
        # Initialised from the draw (not assigned after add_weight), so the layer can be built
        # lazily inside a traced function or `strategy.run`.
        self.projection = self.add_weight(
            name="projection",
            shape=(self.num_random_features, self.key_dim),
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(draw, "float32"),
            trainable=False,
            dtype="float32",
            autocast=False,
        )

    def _redrawn_projection(self):
        m, d = self.num_random_features, self.key_dim
        if not self.orthogonal:
            return keras.random.normal((m, d), seed=self.seed_generator)
        blocks = -(-m // d)
        gaussian = keras.random.normal((blocks, d, d), seed=self.seed_generator)
        q, r = ops.qr(gaussian)
        q = q * ops.sign(ops.diagonal(r, axis1=-2, axis2=-1))[..., None, :]  # Haar: see above
        rows = ops.reshape(ops.swapaxes(q, -1, -2), (blocks * d, d))[:m]
        norms = ops.norm(keras.random.normal((m, d), seed=self.seed_generator), axis=-1)
        return rows * norms[:, None]

    def feature_maps(self, q, k, key_mask, projection=None):
        """Query features, key features (zero at padded keys) and the keys' log-scales.

        Returns `(phi_q [B, T, H, m], phi_k [B, S, H, m], key_log_scale [B, S, H] or None)`;
        the softmax kernel's true key features are `exp(key_log_scale) * phi_k`.
        """
        w = self.projection if projection is None else projection
        w = ops.stop_gradient(attention_utils.to_float32(w))
        q = attention_utils.to_float32(q)
        k = attention_utils.to_float32(k)
        ratio = 1.0 / math.sqrt(self.num_random_features)
        if self.kernel == "relu":
            phi_q = ops.relu(ratio * ops.einsum("bthd,md->bthm", q, w)) + _RELU_FEATURE_EPS
            phi_k = ops.relu(ratio * ops.einsum("bshd,md->bshm", k, w)) + _RELU_FEATURE_EPS
            return phi_q, attention_utils.zero_padded(phi_k, key_mask), None

        def exponent(x):
            x = x * (float(self.key_dim) ** -0.25)
            return ops.einsum("blhd,md->blhm", x, w) - 0.5 * ops.sum(x * x, -1, keepdims=True)

        a_q = exponent(q)
        a_q = a_q - ops.stop_gradient(ops.max(a_q, axis=-1, keepdims=True))
        phi_q = ratio * (ops.exp(a_q) + _SOFTMAX_FEATURE_EPS)
        a_k = exponent(k)
        key_max = ops.stop_gradient(ops.max(a_k, axis=-1))
        phi_k = ratio * (ops.exp(a_k - key_max[..., None]) + _SOFTMAX_FEATURE_EPS)
        phi_k = attention_utils.zero_padded(phi_k, key_mask)
        mask = key_mask[:, :, None]
        key_log_scale = ops.where(mask, key_max, attention_utils.NEG_INF)
        return phi_q, phi_k, key_log_scale

    def _bidirectional(self, q, k, v, key_mask, projection):
        """The non-causal output, heads first: `phi(Q) (phi(K)^T V)` row-normalised.

        The same numbers as `feature_maps` + `linear_attention` (each key's features are
        stabilised by its own maximum, then rescaled to the largest real key's), laid out as
        `[B, H, L, m]` so that every product is a plain batched matmul: the profile of the
        generic path showed most of its time in the transposes its einsums imply and in the
        extra passes over `[B, L, H, m]` of the per-key rescaling.
        """
        w = ops.stop_gradient(attention_utils.to_float32(projection))
        w_t = ops.transpose(w)  # [d, m]
        q, k, v = (attention_utils.heads_first(attention_utils.to_float32(x)) for x in (q, k, v))
        real = key_mask[:, None, :, None]  # [B, 1, S, 1]
        if self.kernel == "relu":
            ratio = 1.0 / math.sqrt(self.num_random_features)
            phi_q = ops.relu(ratio * ops.matmul(q, w_t)) + _RELU_FEATURE_EPS
            phi_k = ops.relu(ratio * ops.matmul(k, w_t)) + _RELU_FEATURE_EPS
            phi_k = ops.where(real, phi_k, 0.0)
        else:
            # The constant 1/sqrt(m) of both feature maps cancels in the normalisation.
            scale = float(self.key_dim) ** -0.25
            q, k = q * scale, k * scale
            a_q = ops.matmul(q, w_t) - 0.5 * ops.sum(q * q, -1, keepdims=True)
            a_q = a_q - ops.stop_gradient(ops.max(a_q, axis=-1, keepdims=True))
            phi_q = ops.exp(a_q) + _SOFTMAX_FEATURE_EPS
            a_k = ops.matmul(k, w_t) - 0.5 * ops.sum(k * k, -1, keepdims=True)
            key_max = ops.stop_gradient(ops.max(a_k, axis=-1, keepdims=True))  # [B, H, S, 1]
            log_scale = ops.where(real, key_max, attention_utils.NEG_INF)
            # exp(key_max - largest real key_max) <= 1: no overflow, and a row without real
            # keys gets exp(0) (its features are zeroed below) instead of inf * 0.
            key_scale = ops.exp(log_scale - ops.max(log_scale, axis=2, keepdims=True))
            phi_k = (ops.exp(a_k - key_max) + _SOFTMAX_FEATURE_EPS) * key_scale
            phi_k = ops.where(real, phi_k, 0.0)
        kv = ops.matmul(ops.swapaxes(phi_k, -1, -2), v)  # [B, H, m, dv]
        z = ops.sum(phi_k, axis=2, keepdims=True)  # [B, H, 1, m]
        num = ops.matmul(phi_q, kv)
        den = ops.sum(phi_q * z, axis=-1, keepdims=True)
        # A query with no real key: output 0, not 0 / 0. `not <= 0` rather than `> 0`, so that
        # a NaN normaliser (a non-finite input) propagates instead of becoming a zero row.
        nonempty = ops.logical_not(den <= 0.0)
        out = ops.where(nonempty, num, 0.0) / ops.where(nonempty, den, 1.0)
        return attention_utils.heads_last(out)

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        projection = None
        if self.redraw and training:
            projection = self._redrawn_projection()
        if not causal:
            w = self.projection if projection is None else projection
            return self._bidirectional(q, k, v, key_mask, w)
        phi_q, phi_k, key_log_scale = self.feature_maps(q, k, key_mask, projection)
        return linear_attention(
            phi_q,
            phi_k,
            v,
            causal=causal,
            key_log_scale=key_log_scale,
            chunk_size=self.chunk_size,
            eps=0.0,
        )

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Random features for Q and K (d x m), then linear attention with m features."""
        h, d, dv, m = self.num_heads, self.key_dim, self.value_dim, self.num_random_features
        tokens = query_length + key_length
        flops = 2 * batch * h * tokens * d * m + 2 * batch * h * tokens * m * (dv + 1)
        if causal:
            flops += 2 * batch * h * query_length * min(self.chunk_size, key_length) * (m + dv)
        return flops

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "kernel": self.kernel,
                "num_random_features": self.num_random_features,
                "orthogonal": self.orthogonal,
                "redraw": self.redraw,
                "chunk_size": self.chunk_size,
            }
        )
        return config
