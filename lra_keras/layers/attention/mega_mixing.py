"""Mega: a damped multi-dimensional EMA feeding single-head gated attention."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils, state_space_utils
from lra_keras.layers.attention.base_attention import capability_error
from lra_keras.layers.attention.registry import register_attention
from lra_keras.layers.attention.token_mixer import TokenMixer

ATTENTION_ACTIVATIONS = ("softmax", "laplace", "relu2")
RELATIVE_POSITIONS = ("simple", "rotary")
# Mega's laplace attention function: the normal CDF with mean sqrt(1/2) and standard deviation
# sqrt(1/(4 pi)), the paper's smooth stand-in for relu^2; the constants as the reference code
# writes them.
LAPLACE_MU = 0.707107
LAPLACE_SIGMA = 0.282095


@register_attention("mega")
@keras.saving.register_keras_serializable(package="lra_keras")
class MegaMixing(TokenMixer):
    """Mega: moving-average equipped gated attention (one head), as a token mixer.

    **EMA.** Each of the `dim` channels runs an `ema_dim`-dimensional damped exponential
    moving average: `u_t = beta x_t`, `h_t = alpha * u_t + (1 - alpha * delta) * h_{t-1}`,
    `y_t = eta . h_t / sqrt(ema_dim)` (alpha, delta = sigmoid of learned logits, in (0, 1);
    beta, eta learned; the `1 / sqrt(ema_dim)` is the reference code's scale of eta). Unrolled,
    `y = K * x` with the kernel `K_t = sum_j eta_j alpha_j beta_j (1 - alpha_j delta_j)^t /
    sqrt(h)`, computed from `ops.shape` (any length, static or not; the powers factored as in
    `S4DMixing`) and applied by FFT of size 2L: O(L log L). Bidirectional by default (Mega's
    encoder for LRA, the reference code's `bidirectional=True`): a second kernel with its own
    alpha, delta, beta, eta runs from the end over lags 1, 2, ... (its lag 0 is dropped, the
    code's `shift`, so `x_t` enters once), `y_t = sum_{s<=t} K_{t-s} x_s + sum_{s>t}
    Kb_{s-t} x_s`. `truncation` keeps lags below it only (the code's `truncation_length`). Then
    `X' = silu(y + omega * x)`, with the learned per-channel residual `omega`.

    **Gated attention.** From X': `Z = silu(X' W_z + b_z)` (`z_dim`), `Q = kappa_q * Z + mu_q`,
    `K = kappa_k * Z + mu_k` (per-dimension scale and offset), the reset gate
    `gamma = silu(X' W_r + b_r)` and update gate `phi = sigmoid(X' W_u + b_u)`; from the input
    `V = silu(X W_v + b_v)` (`hidden_dim`). One head of attention `O = f(Q K^T + b_rel) V`:
    `attention_activation="softmax"` is `softmax(Q K^T / sqrt(z_dim) + b_rel)`, "laplace" and
    "relu2" are `f(Q K^T / n + b_rel)` elementwise with n the number of (real, visible) keys,
    as the paper's element-wise attention. Then `H = silu(X' W_h + (gamma * O) U_h + b_h)` and
    the output `Y = phi * H + (1 - phi) * X`. `b_rel` is a relative position bias:
    "simple" (default: the LRA runs' `--rel-pos-bias` default) learns one scalar per offset
    `j - i` in `(-P, P)`, P = `chunk_size` or `max_positions`; offsets beyond share the
    outermost value (the reference code raises instead, so an unknown length works here);
    "rotary" is the code's `RotaryRelativePositionalBias`, `b_ij = rot_i(a) . rot_j(b)` for
    two learned vectors rotated by position (any length; `z_dim` even).

    **Mega-chunk.** With `chunk_size`, the attention runs within consecutive chunks of that
    many tokens (linear time and memory), while the EMA still covers the whole sequence; the
    last chunk is padded internally, so any length works. `chunk_size=None` or `>= L` is the
    unchunked (quadratic) layer, which forms the L x L scores like `full`.

    **Causal.** `use_causal_mask=True` (or `bidirectional=False`) keeps the forward EMA only
    and masks future keys within each chunk: the output at t depends on inputs <= t only.

    A `TokenMixer`, not a `BaseAttention`: its projections are Mega's own, not
    MultiHeadAttention's, so `load_mha_weights` does not apply; `num_heads` and `key_dim` give
    only the width `attention_flops` assumes before build. `dropout` is attention dropout on
    the probability (or element-wise weight) tensor; Mega's other dropouts (after the EMA and
    on H) are left to the encoder block. The kernel and bias arguments are the projections'.

    The EMA parameters (the alpha, delta, beta, eta logits and weights) are listed by
    `state_space_variables`. Mega trains them like every other weight, at one learning rate
    with the run's weight decay (the reference code builds one parameter group), so
    `ssm_learning_rate` defaults to None; set it to train them at their own rate without weight
    decay (`lra_keras.training.optimizers.build_optimizer`). The EMA kernel, FFTs and the
    softmax run in float32 under any dtype policy.

    Args:
        num_heads, key_dim: int or None. Unused, except for `attention_flops` before build.
        value_dim: unused MultiHeadAttention argument, kept as an attribute.
        dropout: float in [0, 1). Dropout on the attention probabilities in training.
        use_bias: bool. Whether the projections have biases.
        output_shape: int, tuple or None. Must equal the input's last dimension when given.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint: of the dense projections.
        activity_regularizer: Regularizer of the output.
        seed: int or None. Seeds the EMA and position parameters and the projections (a
            distinct seed per weight) and the dropout; None uses Keras' global seeding.
        ema_dim: int >= 1. h, the EMA dimensions per channel (16 as the paper).
        z_dim: int >= 1. The shared representation Z's width (queries and keys).
        hidden_dim: int >= 1 or None. The value and attention output width; None is twice the
            input width (every LRA configuration of the paper).
        chunk_size: int >= 1 or None. Attention within chunks of this many tokens (Mega-chunk);
            None attends over the whole sequence.
        attention_activation: "softmax", "laplace" or "relu2".
        relative_position: "simple" or "rotary", the relative position bias.
        max_positions: int >= 1. P of the "simple" bias when `chunk_size` is None.
        truncation: int >= 1 or None. Keep EMA lags below it only; None keeps all.
        bidirectional: bool. Add the backward EMA (non-causal calls).
        ssm_learning_rate: float or None. A learning rate of the EMA parameters on the scale
            of the training config's `learning_rate`, without weight decay; None (Mega) trains
            them like every other weight.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `[batch, L, dim]`, the sequence to mix.
        value: `[batch, L, dim]`; same length as `query` (it mixes one sequence; pass the same
            tensor). `value` and `key` are not otherwise used.
        key: Optional, like `value`.
        query_mask, value_mask, key_mask: Optional boolean `[batch, L]` padding masks (True =
            real token), combined with a logical AND; taken from Keras implicit masks.
        attention_mask: must be None (raises a ValueError: pass padding masks).
        return_attention_scores: must be False (raises).
        training: bool. Attention dropout.
        use_causal_mask: bool. Forward EMA and causal attention: strictly causal.

    Returns:
        `[batch, L, dim]` in the compute dtype, zero at padded positions.

    Masking: padded positions of the input are set to zero (with `where`, so non-finite
    contents cannot leak) before anything else, the EMA is a linear (zero-padded to 2L, not
    circular) convolution, and padded keys get zero attention weight: outputs at real
    positions depend on real tokens only, in either direction. Output rows at padded positions
    are zero; a fully padded row is zero.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import get_attention
    >>> layer = get_attention("mega", ema_dim=4, z_dim=8, chunk_size=4, seed=1)
    >>> x = np.random.rand(2, 10, 16).astype("float32")
    >>> mask = np.arange(10)[None, :] < np.array([[10], [6]])
    >>> y = layer(x, x, query_mask=mask, value_mask=mask)
    >>> tuple(y.shape), float(np.abs(np.asarray(y)[1, 6:]).max())
    ((2, 10, 16), 0.0)

    Reference:
        Ma, Zhou, Kong, He, Gui, Neubig, May and Zettlemoyer, "Mega: Moving Average Equipped
        Gated Attention", ICLR 2023 (section 3: the EMA and the gated attention); the
        reference code github.com/facebookresearch/mega (`MultiHeadEMA`,
        `MovingAverageGatedAttention`, `SimpleRelativePositionalBias`), whose LRA settings the
        zoo's `lra` preset takes.
    """

    supports_causal = True
    strictly_causal = True
    supports_cross_attention = False
    needs_static_length = False
    supports_attention_scores = False
    supports_attention_mask = False
    # Mega has its own relative position bias (`relative_position`); no rotary on top.
    supports_rotary = False
    has_attention_probabilities = True
    _needs_known_width = True
    # The registry name, set by `register_attention`.
    attention_name = "mega"

    def __init__(
        self,
        *args,
        ema_dim: int = 16,
        z_dim: int = 64,
        hidden_dim: int | None = None,
        chunk_size: int | None = None,
        attention_activation: str = "softmax",
        relative_position: str = "simple",
        max_positions: int = 1024,
        truncation: int | None = None,
        bidirectional: bool = True,
        ssm_learning_rate: float | None = None,
        **kwargs,
    ):
        if kwargs.pop("rotary", False):
            raise capability_error(
                self,
                "rotary position embeddings (`rotary=True`)",
                "Mega has its own relative position bias; use `relative_position='rotary'`.",
            )
        # MultiHeadAttention's arguments, positional or not, are the base's.
        super().__init__(*args, **kwargs)
        name = type(self).__name__
        self.ema_dim = attention_utils.checked_int(ema_dim, "ema_dim", name)
        self.z_dim = attention_utils.checked_int(z_dim, "z_dim", name)
        self.hidden_dim = attention_utils.checked_int(
            hidden_dim, "hidden_dim", name, allow_none=True
        )
        self.chunk_size = attention_utils.checked_int(
            chunk_size, "chunk_size", name, allow_none=True
        )
        self.max_positions = attention_utils.checked_int(max_positions, "max_positions", name)
        self.truncation = attention_utils.checked_int(
            truncation, "truncation", name, allow_none=True
        )
        if attention_activation not in ATTENTION_ACTIVATIONS:
            raise ValueError(
                f"{name}: `attention_activation` must be one of {ATTENTION_ACTIVATIONS}, got "
                f"{attention_activation!r}."
            )
        if relative_position not in RELATIVE_POSITIONS:
            raise ValueError(
                f"{name}: `relative_position` must be one of {RELATIVE_POSITIONS}, got "
                f"{relative_position!r}."
            )
        if relative_position == "rotary" and self.z_dim % 2:
            raise ValueError(
                f"{name}: `relative_position='rotary'` needs an even `z_dim` (it rotates pairs "
                f"of dimensions), got z_dim={z_dim!r}."
            )
        self.ssm_learning_rate = state_space_utils.checked_ssm_learning_rate(
            ssm_learning_rate, name
        )
        self.attention_activation = attention_activation
        self.relative_position = relative_position
        self.bidirectional = bool(bidirectional)
        self._dropout_layer = keras.layers.Dropout(
            rate=self.dropout, seed=self.seed, dtype=self.dtype_policy
        )

    # ------------------------------------------------------------------ build

    def _seeded(self, initializer):
        """`initializer` cloned with this layer's seed plus a per-weight offset, if seeded."""
        offset = self._next_seed_offset()
        if self.seed is None:
            return attention_utils.clone_initializer(initializer, offset)
        return self._reseeded(initializer, offset)

    def _hidden(self, dim: int) -> int:
        return 2 * dim if self.hidden_dim is None else self.hidden_dim

    def _beta_init(self, shape, dtype=None):
        # Mega's init: N(0, 0.02) around the alternating signs [1, -1, 1, ...] (the reference
        # code: "seems more stable").
        signs = ops.where(ops.arange(shape[-1]) % 2 == 0, 1.0, -1.0)
        noise = self._beta_noise(shape, dtype="float32")
        return ops.cast(noise + ops.cast(signs, "float32"), dtype or "float32")

    def _build_mixer(self, dim):
        directions = 2 if self.bidirectional else 1
        shape = (directions, dim, self.ema_dim)
        normal = keras.initializers.RandomNormal
        # The reference code's initialisation of the EMA parameters, float32 under any policy:
        # (1 - alpha delta)^t over 16K steps.
        self.alpha_logit = self._float32_weight("alpha_logit", shape, self._seeded(normal(0, 0.2)))
        self.delta_logit = self._float32_weight("delta_logit", shape, self._seeded(normal(0, 0.2)))
        self._beta_noise = self._seeded(normal(0, 0.02))
        self.beta = self._float32_weight("beta", shape, self._beta_init)
        self.eta = self._float32_weight("eta", shape, self._seeded(normal(0, 1.0)))
        self.omega = self._float32_weight("omega", (dim,), self._seeded(normal(0, 1.0)))
        hidden = self._hidden(dim)
        self._width_parts = (dim, self.z_dim, hidden, dim)

        def dense(units, name):
            sublayer = self._sublayer_kwargs()
            layer = keras.layers.Dense(units, use_bias=self.use_bias, name=name, **sublayer)
            return layer

        # [update gate phi | Z | reset gate gamma | X' W_h] in one projection of X', as the
        # reference code's `mx_proj`.
        self._shared_dense = dense(sum(self._width_parts), "shared_projection")
        self._shared_dense.build((None, None, dim))
        self._value_dense = dense(hidden, "value_projection")
        self._value_dense.build((None, None, dim))
        self._output_dense = dense(dim, "output_projection")
        self._output_dense.build((None, None, hidden))
        # Q = kappa_q Z + mu_q, K = kappa_k Z + mu_k (N(0, 0.02) and zeros, as the code).
        self.qk_scale = self.add_weight(
            name="qk_scale", shape=(2, self.z_dim), initializer=self._seeded(normal(0, 0.02))
        )
        self.qk_offset = self.add_weight(
            name="qk_offset", shape=(2, self.z_dim), initializer="zeros"
        )
        if self.relative_position == "simple":
            span = self.chunk_size or self.max_positions
            self.position_bias = self._float32_weight(
                "position_bias", (2 * span - 1,), self._seeded(normal(0, 0.02))
            )
        else:
            self.rotary_a = self._float32_weight(
                "rotary_a", (self.z_dim,), self._seeded(normal(0, 0.02))
            )
            self.rotary_b = self._float32_weight(
                "rotary_b", (self.z_dim,), self._seeded(normal(0, 0.02))
            )

    @property
    def state_space_variables(self) -> list:
        """The EMA parameters: alpha and delta logits, beta, eta (and omega's residual)."""
        return [self.alpha_logit, self.delta_logit, self.beta, self.eta]

    # ------------------------------------------------------------------ the EMA

    def ema_coefficients(self):
        """(alpha, 1 - alpha * delta, eta * alpha * beta / sqrt(h)), each `[dirs, dim, h]`."""
        alpha = ops.sigmoid(self.alpha_logit)
        decay = 1.0 - alpha * ops.sigmoid(self.delta_logit)
        weight = alpha * self.beta * self.eta / math.sqrt(self.ema_dim)
        return alpha, decay, weight

    def ema_kernel(self, length):
        """K `[dirs, dim, length]` float32: `K_t = sum_j w_j decay_j^t`, lags 0..length-1.

        `decay^(i + c j) = decay^i decay^(c j)` with c ~ sqrt(L): two small power tables and a
        matmul instead of a `[dirs, dim, h, L]` tensor.
        """
        _, decay, weight = self.ema_coefficients()
        log_decay = ops.log(decay)
        i, j = state_space_utils.factored_lags(length)
        low = weight[..., None] * ops.exp(log_decay[..., None] * i)
        high = ops.exp(log_decay[..., None] * j)
        k = ops.einsum("xdhi,xdhj->xdji", low, high)
        k = ops.reshape(k, (ops.shape(k)[0], ops.shape(k)[1], -1))[..., :length]
        if self.truncation is not None:
            k = ops.where(ops.arange(length) < self.truncation, k, ops.zeros((), k.dtype))
        return k

    def ema(self, x, causal: bool):
        """The EMA `y + omega * x` (before the SiLU) of `x` `[batch, L, dim]` float32."""
        length = attention_utils.dim(x, 1)
        k = self.ema_kernel(length)
        backward = None
        if self.bidirectional and not causal:
            # Lag 0 of the backward kernel is dropped (the reference code's `shift`): x_t
            # enters once, through the forward one; its lags 1, 2, ... weigh x_{t+1}, x_{t+2}.
            backward = ops.concatenate([k[1][:, 1:], ops.zeros_like(k[1][:, :1])], axis=-1)
        return state_space_utils.long_convolution(x, k[0], backward) + x * self.omega

    # ------------------------------------------------------------------ attention

    def position_bias_matrix(self, size):
        """The relative position bias `[size, size]` float32 of one chunk."""
        positions = ops.arange(size)
        if self.relative_position == "simple":
            span = self.chunk_size or self.max_positions
            offsets = positions[None, :] - positions[:, None]
            index = ops.clip(offsets, -(span - 1), span - 1) + (span - 1)
            return ops.take(self.position_bias, index)
        half = self.z_dim // 2
        frequencies = ops.exp(ops.cast(ops.arange(half), "float32") * (-math.log(10000.0) / half))
        angles = ops.cast(positions, "float32")[:, None] * frequencies[None, :]
        sin, cos = ops.sin(angles), ops.cos(angles)

        def rotate(vector):
            first, second = vector[None, :half], vector[None, half:]
            return ops.concatenate([first * cos - second * sin, second * cos + first * sin], -1)

        return ops.matmul(rotate(self.rotary_a), ops.transpose(rotate(self.rotary_b)))

    def _attention(self, q, k, v, mask, causal: bool, training):
        """One head over chunks: q, k `[B, L, z]`, v `[B, L, hidden]` -> `[B, L, hidden]`."""
        length = attention_utils.dim(q, 1)
        chunk = self.chunk_size
        single = chunk is None or (isinstance(length, int) and length <= chunk)
        if single:
            size = length
            q, k, v = (t[:, None] for t in (q, k, v))
            key_mask = None if mask is None else mask[:, None]
        else:
            size = chunk
            if mask is None:
                # The padding that completes the last chunk is masked.
                mask = ops.ones(ops.shape(q)[:2], "bool")
            key_mask = attention_utils.to_blocks(mask, chunk, axis=1, value=False)
            q, k, v = (attention_utils.to_blocks(t, chunk, axis=1) for t in (q, k, v))
        # allowed [B or 1, chunks or 1, size, size]
        allowed = None if key_mask is None else key_mask[:, :, None, :]
        if causal:
            lower = attention_utils.causal_mask(size, size)[None, None]
            allowed = lower if allowed is None else ops.logical_and(allowed, lower)
        scores = attention_utils.to_float32(ops.einsum("bnqz,bnkz->bnqk", q, k))
        bias = self.position_bias_matrix(size)
        if self.attention_activation == "softmax":
            scores = scores / math.sqrt(self.z_dim) + bias
            probs = attention_utils.masked_softmax(scores, allowed)
        else:
            if allowed is None:
                count = ops.cast(size, "float32")
            else:
                allowed = ops.broadcast_to(allowed, ops.shape(scores))
                count = ops.sum(ops.cast(allowed, "float32"), axis=-1, keepdims=True)
                count = ops.maximum(count, 1.0)
            scores = scores / count + bias
            if self.attention_activation == "laplace":
                z = (scores - LAPLACE_MU) / (LAPLACE_SIGMA * math.sqrt(2.0))
                probs = 0.5 * (1.0 + ops.erf(z))
            else:
                probs = ops.square(ops.relu(scores))
            if allowed is not None:
                probs = ops.where(allowed, probs, ops.zeros((), probs.dtype))
        probs = ops.cast(probs, self.compute_dtype)
        if self.dropout > 0.0:
            probs = self._dropout_layer(probs, training=training)
        out = ops.einsum("bnqk,bnkh->bnqh", probs, v)
        if single:
            return out[:, 0]
        return attention_utils.from_blocks(out, length, axis=1)

    # ------------------------------------------------------------------ call

    def _mix(self, x, mask, causal: bool, training):
        if 0 in tuple(x.shape[:2]):
            # Nothing to mix (an FFT of size 0 does not lower on XLA): the empty output.
            return ops.zeros(tuple(x.shape), self.compute_dtype)
        x = ops.cast(x, self.compute_dtype)
        if mask is not None:
            x = attention_utils.zero_padded(x, mask)
        # X' = silu(EMA(X) + omega X), in float32, then the projections in the compute dtype.
        mx = ops.silu(self.ema(attention_utils.to_float32(x), causal))
        mx = ops.cast(mx, self.compute_dtype)
        dim, z_dim, hidden, _ = self._width_parts
        shared = self._shared_dense(mx)
        update = ops.sigmoid(shared[..., :dim])
        zr = ops.silu(shared[..., dim : dim + z_dim + hidden])
        z, reset = zr[..., :z_dim], zr[..., z_dim:]
        hx = shared[..., dim + z_dim + hidden :]
        scale = ops.cast(self.qk_scale, z.dtype)
        offset = ops.cast(self.qk_offset, z.dtype)
        q = z * scale[0] + offset[0]
        k = z * scale[1] + offset[1]
        v = ops.silu(self._value_dense(x))
        o = self._attention(q, k, v, mask, causal, training)
        h = ops.silu(hx + self._output_dense(o * reset))
        y = x + update * (h - x)
        if mask is not None:
            y = attention_utils.zero_padded(y, mask)
        return y

    # ------------------------------------------------------------------ cost

    def _chunk_length(self, length: int) -> int:
        return length if self.chunk_size is None else min(self.chunk_size, length)

    def projection_flops(self, batch: int, query_length: int, key_length: int) -> int:
        """The value, shared and output projections: 2 L (d h + d (2d + z + h) + h d)."""
        del key_length
        dim = self._width("projection_flops")
        hidden = self._hidden(dim)
        macs = dim * hidden + dim * (2 * dim + self.z_dim + hidden) + hidden * dim
        return int(2 * batch * query_length * macs)

    def attention_flops(
        self, batch: int, query_length: int, key_length: int, causal: bool = False
    ) -> int:
        """The EMA (kernel and three real FFTs of 2L per channel) and the chunked attention."""
        del key_length
        dim = self._width("attention_flops")
        hidden = self._hidden(dim)
        directions = 1 if causal or not self.bidirectional else 2
        kernel = 4 * query_length * self.ema_dim * dim * directions
        ema = kernel + state_space_utils.long_convolution_flops(batch, dim, query_length)
        chunk = self._chunk_length(query_length)
        attention = 2 * batch * query_length * chunk * (self.z_dim + hidden)
        return int(ema + attention)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "ema_dim": self.ema_dim,
                "z_dim": self.z_dim,
                "hidden_dim": self.hidden_dim,
                "chunk_size": self.chunk_size,
                "attention_activation": self.attention_activation,
                "relative_position": self.relative_position,
                "max_positions": self.max_positions,
                "truncation": self.truncation,
                "bidirectional": self.bidirectional,
                "ssm_learning_rate": self.ssm_learning_rate,
            }
        )
        return config
