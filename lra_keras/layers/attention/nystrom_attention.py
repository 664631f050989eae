"""Nystromformer attention: softmax attention approximated through segment-mean landmarks."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention


def iterative_pinv(a, iterations: int = 6):
    """Moore-Penrose pseudo-inverse of square matrices `a` [..., m, m] by Newton-type iteration.

    Z0 = A^T / (max column sum * max row sum) per matrix (the Nystromformer pitfall: not one
    maximum over the whole batch), then `iterations` times
    Z <- 1/4 Z (13 I - A Z (15 I - A Z (7 I - A Z))). Runs in float32; the loop is unrolled in
    Python (a static count), so it compiles under XLA and differentiates.
    """
    a = attention_utils.to_float32(a)
    m = attention_utils.dim(a, -1)
    eye = ops.eye(m, dtype="float32")
    col_sum = ops.max(ops.sum(ops.abs(a), axis=-2), axis=-1)
    row_sum = ops.max(ops.sum(ops.abs(a), axis=-1), axis=-1)
    z = ops.swapaxes(a, -1, -2) / (col_sum * row_sum)[..., None, None]
    for _ in range(int(iterations)):
        az = ops.matmul(a, z)
        inner = 7.0 * eye - az
        inner = 15.0 * eye - ops.matmul(az, inner)
        z = 0.25 * ops.matmul(z, 13.0 * eye - ops.matmul(az, inner))
    return z


def _zero_where(x, mask):
    """x [B, L, H, d] in float32 with positions where the [B, L] mask is False set to 0."""
    return ops.where(mask[:, :, None, None], attention_utils.to_float32(x), 0.0)


@register_attention("nystrom")
@keras.saving.register_keras_serializable(package="lra_keras")
class NystromAttention(BaseAttention):
    """Nystromformer attention: a Nystrom approximation of softmax attention through landmarks.

    The sequence is cut into `num_landmarks` contiguous segments; the landmarks `Q~`, `K~` are
    the means of the real queries and keys of each segment. With `A = softmax(Q~ K~^T / sqrt d)`
    and `A+` its pseudo-inverse by `pinv_iterations` Newton-type iterations,

        O = softmax(Q K~^T / sqrt d) A+ softmax(Q~ K^T / sqrt d + key mask) V

    (plus, when `conv_kernel_size` is set, a depthwise convolution of the masked values along
    the length, one kernel per head, as the Nystromformer code's residual convolution). Time
    and memory are O(L m d + m^3) for m landmarks; no L x L tensor is formed. Not causal;
    self-attention only.

    A length that is not a multiple of `num_landmarks` is padded internally to one (segments of
    ceil(L / m) tokens, so the last segments may be partly or wholly padding). `num_landmarks`
    larger than L is clamped to L (each landmark one token). With m = L the layer approximates
    full attention up to the error of the iterative pseudo-inverse.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        num_landmarks: int. Number of landmarks m (default 64, the paper's).
        pinv_iterations: int. Iterations of the pseudo-inverse (default 6).
        conv_kernel_size: int or None. Kernel size of the depthwise convolution over the values
            (odd; the authors' LRA config uses 35); None (default) for none. Its kernel, one per
            head, is initialised as PyTorch's Conv2d (uniform in +-1/sqrt(kernel size)).
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training: as `BaseAttention`.
        `use_causal_mask=True` raises a ValueError (not causal).

    Returns:
        `[batch, L, output_dim]`, zero at padded query positions.

    Masking: a token is real when both its query and key masks say so; landmarks average the
    real tokens of their segment only (padded and internal padding positions are excluded from
    the sums and counts). A segment with no real token gives no landmark: it is masked out of
    both softmaxes over landmarks and replaced by an identity row and column in `A` (so the
    pseudo-inverse is that of the real landmarks' block). Padded keys get a -1e9 bias in the
    float32 softmax over keys; the convolution sees values zeroed at padded positions. All
    softmaxes, the pseudo-inverse and the products run in float32. No attention dropout (the
    approximated attention matrix is never formed, as in the reference code).

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import NystromAttention
    >>> layer = NystromAttention(num_heads=2, key_dim=8, num_landmarks=4, conv_kernel_size=3)
    >>> x = np.random.rand(2, 13, 16).astype("float32")
    >>> mask = np.arange(13)[None, :] < np.array([[13], [6]])
    >>> tuple(layer(x, x, query_mask=mask, value_mask=mask).shape)
    (2, 13, 16)

    Reference:
        Xiong et al., "Nystromformer: A Nystrom-Based Algorithm for Approximating
        Self-Attention", AAAI 2021 (code: github.com/mlpen/Nystromformer).
    """

    supports_causal = False
    strictly_causal = False
    supports_cross_attention = False
    needs_static_length = False

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        num_landmarks: int = 64,
        pinv_iterations: int = 6,
        conv_kernel_size: int | None = None,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.num_landmarks = attention_utils.checked_int(
            num_landmarks, "num_landmarks", "NystromAttention"
        )
        self.pinv_iterations = attention_utils.checked_int(
            pinv_iterations, "pinv_iterations", "NystromAttention", minimum=0
        )
        self.conv_kernel_size = attention_utils.checked_int(
            conv_kernel_size, "conv_kernel_size", "NystromAttention", allow_none=True
        )
        if self.conv_kernel_size is not None and self.conv_kernel_size % 2 == 0:
            raise ValueError(
                "NystromAttention: `conv_kernel_size` must be None or a positive odd integer "
                f"(a centred kernel), got {conv_kernel_size!r}."
            )

    def _build_variant(self, query_shape, value_shape):
        if self.conv_kernel_size is None:
            return
        limit = 1.0 / math.sqrt(self.conv_kernel_size)
        self.conv_kernel = self.add_weight(
            name="conv_kernel",
            shape=(self.conv_kernel_size, self.num_heads),
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=self.seed),
            trainable=True,
        )

    def _landmarks(self, x, token_mask, m: int):
        """Segment means of the real tokens of x [B, H, L, d] -> ([B, H, m, d], [B, m] mask)."""
        length = attention_utils.dim(x, 2)
        segment = -(-length // m)
        xb = attention_utils.to_blocks(x, segment, axis=2)  # [B, H, m', s, d], m' <= m
        mb = attention_utils.to_blocks(token_mask, segment, axis=1, value=False)  # [B, m', s]
        weights = ops.cast(mb, "float32")
        sums = ops.einsum("bhnsd,bns->bhnd", xb, weights)
        counts = ops.sum(weights, axis=-1)  # [B, m']
        means = sums / ops.maximum(counts, 1.0)[:, None, :, None]
        return means, counts > 0

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        del query, causal
        length = attention_utils.dim(q, 1)
        m = (
            min(self.num_landmarks, length)
            if isinstance(length, int)
            else ops.minimum(self.num_landmarks, length)
        )
        token_mask = ops.logical_and(query_mask, key_mask)
        # Zeroed with `where`, not a product, so non-finite padded contents cannot leak.
        qf = attention_utils.heads_first(_zero_where(q, token_mask))
        kf = attention_utils.heads_first(_zero_where(k, token_mask))
        vf = attention_utils.heads_first(_zero_where(v, key_mask))
        scale = 1.0 / math.sqrt(self.key_dim)
        q_land, land_mask = self._landmarks(qf, token_mask, m)
        k_land, _ = self._landmarks(kf, token_mask, m)
        n = attention_utils.dim(land_mask, -1)
        # softmax(Q K~^T): empty landmarks excluded.
        kernel_1 = attention_utils.masked_softmax(
            ops.einsum("bhld,bhnd->bhln", qf, k_land) * scale, land_mask[:, None, None, :]
        )
        # A on the real landmarks, identity on the empty ones, so A+ is block-wise.
        pair = ops.logical_and(land_mask[:, None, :, None], land_mask[:, None, None, :])
        a = attention_utils.masked_softmax(
            ops.einsum("bhnd,bhpd->bhnp", q_land, k_land) * scale, pair
        )
        empty_diag = ops.logical_and(
            ops.logical_not(land_mask)[:, None, :, None], ops.eye(n, dtype="bool")
        )
        a = ops.where(pair, a, ops.cast(empty_diag, "float32"))
        a_pinv = iterative_pinv(a, self.pinv_iterations)
        kernel_3 = attention_utils.masked_softmax(
            ops.einsum("bhnd,bhld->bhnl", q_land, kf) * scale, key_mask[:, None, None, :]
        )
        # Attention dropout on the two softmax matrices; not on A, whose pseudo-inverse would
        # turn a dropped entry into a large correction.
        if self.dropout > 0:
            kernel_1 = attention_utils.to_float32(self._dropout_probs(kernel_1, training))
            kernel_3 = attention_utils.to_float32(self._dropout_probs(kernel_3, training))
        # Right to left: [m, dv] intermediates only, never an L x L product.
        mixed = ops.matmul(a_pinv, ops.matmul(kernel_3, vf))
        out = ops.matmul(kernel_1, mixed)  # [B, H, L, dv]
        out = attention_utils.heads_last(out)
        if self.conv_kernel_size is not None:
            out = out + self._value_conv(attention_utils.heads_last(vf))
        return out

    def _value_conv(self, v):
        """Depthwise conv along the length of masked values [B, L, H, dv], one kernel per head."""
        batch, length, h, dv = attention_utils.shape_of(v)
        kernel = ops.repeat(ops.cast(self.conv_kernel, "float32"), dv, axis=1)  # [k, H*dv]
        flat = ops.reshape(v, attention_utils.reshape_target([batch, length, h * dv]))
        out = ops.depthwise_conv(flat, kernel[:, :, None], strides=1, padding="same")
        return ops.reshape(out, attention_utils.reshape_target([batch, length, h, dv]))

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Both L x m softmax products, the m x m landmark matrix, its pseudo-inverse
        (4 m^3 matmuls per iteration), A+ times the [m, dv] values, and the convolution."""
        del causal
        m = min(self.num_landmarks, query_length)
        pairs = self._pair_flops(batch, query_length, m) + self._pair_flops(batch, m, key_length)
        per_head = 2 * m * m * self.key_dim + 8 * m**3 * self.pinv_iterations
        per_head += 2 * m * m * self.value_dim
        if self.conv_kernel_size is not None:
            per_head += 2 * query_length * self.conv_kernel_size * self.value_dim
        return int(pairs + batch * self.num_heads * per_head)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_landmarks": self.num_landmarks,
                "pinv_iterations": self.pinv_iterations,
                "conv_kernel_size": self.conv_kernel_size,
            }
        )
        return config
