"""S4D: a diagonal state-space token mixer, applied as a long convolution by FFT."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils, state_space_utils
from lra_keras.layers.attention.registry import register_attention
from lra_keras.layers.attention.state_space_utils import complex_mul
from lra_keras.layers.attention.token_mixer import TokenMixer

INITS = ("lin", "inv")
ACTIVATIONS = ("gelu", "relu", "silu", "tanh", "linear")


@register_attention("s4d")
@keras.saving.register_keras_serializable(package="lra_keras")
class S4DMixing(TokenMixer):
    """S4D: per channel a diagonal complex state-space model, as a length-L convolution.

    For each of the `dim` channels h, a state `x` of `state_dim / 2` complex modes (the other
    half are their conjugates, so the kernel is real) evolves as `x_k = A_bar x_{k-1} +
    B_bar u_k` and emits `y_k = 2 Re(C x_k) + D u_k`, with `A = -exp(log_A_real) + i A_imag`
    diagonal, the zero-order hold `A_bar = exp(dt A)`, `B_bar = (exp(dt A) - 1) / A * B`, and a
    learned step `dt = exp(log_dt)`. Unrolled, this is the convolution `y = K * u + D u` with
    the kernel `K_l = 2 Re(sum_n C_n B_bar_n A_bar_n^l)`, a Vandermonde product; the layer
    computes K from `ops.shape` (any length works, static or not) and applies it by FFT in
    O(L log L) time and O(L) memory per channel. The Vandermonde product is factored as
    `A_bar^(i + c j) = A_bar^i A_bar^(c j)` with c ~ sqrt(L), so it costs two small powers
    tables and a matmul instead of a `[dim, state_dim / 2, L]` tensor. Then, as the reference
    model: activation, dropout, and a position-wise `Dense(2 dim)` with a GLU.

    Bidirectional by default (as S4's LRA configurations): a second kernel (its own C; A, B and
    dt shared) runs from the end, `y_t = sum_{s<=t} K_{t-s} u_s + sum_{s>t} Kb_{s-t-1} u_s`.
    `use_causal_mask=True` (or `bidirectional=False`) keeps the forward kernel only, which is
    strictly causal. Complex numbers are held as separate float32 real and imaginary parts
    (complex dtypes are uneven across Keras backends); the kernel and FFTs run in float32
    under any dtype policy.

    A `TokenMixer`, not a `BaseAttention`: there are no queries, keys or heads. It has the
    attention call signature and capability attributes so that `get_attention("s4d", ...)`,
    the encoder block and the zoo build it like any variant. `num_heads`, `key_dim`,
    `value_dim`, `use_bias`, `bias_*` are accepted for that uniformity and kept as attributes;
    `key_dim` and `num_heads` give the width `attention_flops` assumes before build.
    `dropout` is S4's dropout after the activation (there is no probability tensor); the
    kernel and bias arguments are the output projection's.

    The state-space parameters (`log_dt`, `log_A_real`, `A_imag`, `B`) are listed by
    `state_space_variables`; `lra_keras.training.optimizers.build_optimizer` trains them at
    `ssm_learning_rate` with no weight decay, as the paper does.

    Args:
        num_heads, key_dim: int or None. Unused, except for `attention_flops` before build.
        value_dim: unused MultiHeadAttention argument, kept as an attribute.
        dropout: float in [0, 1). Dropout after the activation, before the output projection.
        use_bias: bool. Whether the output projection has a bias.
        output_shape: int, tuple or None. Must equal the input's last dimension when given.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint: of the output projection.
        activity_regularizer: Regularizer of the output.
        seed: int or None. Seeds the initial C, D, dt and the projection (a distinct seed per
            weight) and the dropout; None uses Keras' global seeding.
        state_dim: int, even. N, the state size per channel (N / 2 complex modes are stored).
        bidirectional: bool. Add the backward kernel (non-causal calls).
        init: "lin" (S4D-Lin, `A_n = -1/2 + i pi n`) or "inv" (S4D-Inv,
            `A_n = -1/2 + i N / pi (N / (2n + 1) - 1)`).
        dt_min, dt_max: float. `log_dt` starts uniform in `[log dt_min, log dt_max]`.
        activation: one of "gelu", "relu", "silu", "tanh", "linear"; after the convolution.
        gated_output: bool. `Dense(2 dim)` then GLU (True, S4's LRA `postact: glu`), else a
            `Dense(dim)`.
        ssm_learning_rate: float or None. Learning rate of the state-space parameters, on the
            scale of the training config's `learning_rate` (S4: 0.001); None trains them
            like every other weight.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: `[batch, L, dim]`, the sequence to mix.
        value: `[batch, L, dim]`; same length as `query` (it mixes one sequence; pass the same
            tensor). `value` and `key` are not otherwise used.
        key: Optional, like `value`.
        query_mask, value_mask, key_mask: Optional boolean `[batch, L]` padding masks (True =
            real token), combined with a logical AND; taken from Keras implicit masks.
        attention_mask: must be None (raises a ValueError: pass padding masks).
        return_attention_scores: must be False (raises: there are no scores).
        training: bool. Dropout.
        use_causal_mask: bool. Forward kernel only: the output at t depends on inputs <= t.

    Returns:
        `[batch, L, dim]` in the compute dtype, zero at padded positions.

    Masking: padded positions of the input are set to zero (with `where`, so non-finite
    contents cannot leak) before the convolution, which is a linear (zero-padded to 2L, not
    circular) convolution: outputs at real positions depend on real tokens only, in either
    direction, and not on the padded length. Output rows at padded positions are zero; a fully
    padded row is zero.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import get_attention
    >>> layer = get_attention("s4d", num_heads=2, key_dim=8, state_dim=16, seed=1)
    >>> x = np.random.rand(2, 10, 16).astype("float32")
    >>> mask = np.arange(10)[None, :] < np.array([[10], [6]])
    >>> y = layer(x, x, query_mask=mask, value_mask=mask)
    >>> tuple(y.shape), float(np.abs(np.asarray(y)[1, 6:]).max())
    ((2, 10, 16), 0.0)

    Reference:
        Gu, Gupta, Goel and Re, "On the Parameterization and Initialization of Diagonal State
        Space Models", NeurIPS 2022 (S4D). Gu, Goel and Re, "Efficiently Modeling Long
        Sequences with Structured State Spaces", ICLR 2022 (S4).
    """

    supports_causal = True
    strictly_causal = True
    supports_cross_attention = False
    needs_static_length = False
    supports_attention_scores = False
    supports_attention_mask = False
    # Positions live in the state-space kernel; there are no queries or keys to rotate.
    supports_rotary = False
    # Its `dropout` (S4's, after the activation) is applied in training, so the zoo passes
    # the preset's attention dropout on as it does for attention probabilities.
    has_attention_probabilities = True
    _needs_known_width = True
    # The registry name, set by `register_attention`.
    attention_name = "s4d"

    def __init__(
        self,
        *args,
        state_dim: int = 64,
        bidirectional: bool = True,
        init: str = "lin",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        activation: str = "gelu",
        gated_output: bool = True,
        ssm_learning_rate: float | None = 0.001,
        **kwargs,
    ):
        # MultiHeadAttention's arguments, positional or not, are the base's.
        super().__init__(*args, **kwargs)
        name = type(self).__name__
        self.state_dim = attention_utils.checked_int(state_dim, "state_dim", name)
        if self.state_dim % 2:
            raise ValueError(
                f"{name}: `state_dim` must be even (N / 2 complex modes and their conjugates), "
                f"got {state_dim!r}."
            )
        if init not in INITS:
            raise ValueError(f"{name}: `init` must be one of {INITS}, got {init!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"{name}: `activation` must be one of {ACTIVATIONS}, got {activation!r}."
            )
        self.dt_min, self.dt_max = state_space_utils.checked_step_range(dt_min, dt_max, name)
        self.ssm_learning_rate = state_space_utils.checked_ssm_learning_rate(
            ssm_learning_rate, name
        )
        self.bidirectional = bool(bidirectional)
        self.init = init
        self.activation = activation
        self.gated_output = bool(gated_output)
        self._dropout_layer = keras.layers.Dropout(
            rate=self.dropout, seed=self.seed, dtype=self.dtype_policy
        )

    # ------------------------------------------------------------------ build

    def _seeded(self, initializer):
        """`initializer` with its own seed (base seed + a per-weight offset), if seeded."""
        # S4D numbers its draws apart from the projection's clone offset (`_sublayer_kwargs`),
        # so that its seeded initial weights stay what they have always been.
        self._draws = getattr(self, "_draws", 0) + 1
        return self._reseeded(initializer, self._draws)

    def _a_imag_init(self, shape, dtype=None):
        n = ops.arange(shape[-1], dtype="float32")
        if self.init == "lin":
            values = math.pi * n
        else:
            big_n = float(self.state_dim)
            values = big_n / math.pi * (big_n / (2.0 * n + 1.0) - 1.0)
        # Added to zeros, not broadcast: on torch a broadcast is a strided view that a variable
        # would share, and `set_weights` cannot write into it.
        return ops.cast(ops.zeros(shape, "float32") + values, dtype or "float32")

    def _build_mixer(self, dim):
        modes = self.state_dim // 2
        directions = 2 if self.bidirectional else 1
        # The state-space parameters stay float32 under any policy: exp(dt A l) over 16K steps.
        self.log_dt = self._float32_weight(
            "log_dt",
            (dim,),
            self._seeded(
                keras.initializers.RandomUniform(math.log(self.dt_min), math.log(self.dt_max))
            ),
        )
        self.log_a_real = self._float32_weight(
            "log_a_real", (dim, modes), keras.initializers.Constant(math.log(0.5))
        )
        self.a_imag = self._float32_weight("a_imag", (dim, modes), self._a_imag_init)
        # B = 1 as S4D initialises it (a free B is redundant with C per mode, but it is part of
        # the paper's parameterisation and trained at the state-space learning rate).
        self.b_real = self._float32_weight("b_real", (dim, modes), "ones")
        self.b_imag = self._float32_weight("b_imag", (dim, modes), "zeros")
        # C ~ complex standard normal (real and imaginary parts of variance 1/2).
        c_init = keras.initializers.RandomNormal(stddev=math.sqrt(0.5))
        self.c_real = self._float32_weight("c_real", (directions, dim, modes), self._seeded(c_init))
        self.c_imag = self._float32_weight("c_imag", (directions, dim, modes), self._seeded(c_init))
        self.d_skip = self._float32_weight(
            "d_skip", (dim,), self._seeded(keras.initializers.RandomNormal(stddev=1.0))
        )
        sublayer = self._sublayer_kwargs()
        sublayer["kernel_initializer"] = self._seeded(sublayer["kernel_initializer"])
        self._output_dense = keras.layers.Dense(
            2 * dim if self.gated_output else dim,
            use_bias=self.use_bias,
            name="output_linear",
            **sublayer,
        )
        self._output_dense.build((None, None, dim))

    @property
    def state_space_variables(self) -> list:
        """The parameters S4 trains at `ssm_learning_rate` with no weight decay: dt, A, B."""
        return [self.log_dt, self.log_a_real, self.a_imag, self.b_real, self.b_imag]

    # ------------------------------------------------------------------ the kernel

    def discretized(self):
        """(dt A, C B_bar) as float32 (real, imag) pairs: `[dim, N/2]` and `[dirs, dim, N/2]`.

        Zero-order hold: `B_bar = (exp(dt A) - 1) / A * B`; `exp(dt A) - 1` is formed with
        `expm1` (dt A is ~1e-3 at the smallest steps, where exp(x) - 1 loses digits).
        """
        dt = ops.exp(self.log_dt)[:, None]
        a_re = -ops.exp(self.log_a_real)
        a_im = self.a_imag
        dta_re, dta_im = a_re * dt, a_im * dt
        # exp(x + iy) - 1 = expm1(x) cos y - 2 sin^2(y / 2) + i exp(x) sin y.
        num_re = ops.expm1(dta_re) * ops.cos(dta_im) - 2.0 * ops.square(ops.sin(dta_im / 2.0))
        num_im = ops.exp(dta_re) * ops.sin(dta_im)
        denom = ops.square(a_re) + ops.square(a_im)
        q_re = (num_re * a_re + num_im * a_im) / denom
        q_im = (num_im * a_re - num_re * a_im) / denom
        bb_re, bb_im = complex_mul(q_re, q_im, self.b_real, self.b_imag)
        w_re, w_im = complex_mul(self.c_real, self.c_imag, bb_re[None], bb_im[None])
        return (dta_re, dta_im), (w_re, w_im)

    def convolution_kernel(self, length):
        """K `[dirs, dim, length]` float32: `K_l = 2 Re(sum_n C_n B_bar_n exp(dt A_n l))`."""
        (dta_re, dta_im), (w_re, w_im) = self.discretized()

        def powers(steps):
            # exp(dt A * steps): [dim, N/2, len(steps)].
            x_re = dta_re[..., None] * steps
            x_im = dta_im[..., None] * steps
            magnitude = ops.exp(x_re)
            return magnitude * ops.cos(x_im), magnitude * ops.sin(x_im)

        # A_bar^(i + j) = A_bar^i A_bar^j with i < inner ~ sqrt(L) and j multiples of inner.
        i, j = state_space_utils.factored_lags(length)
        p_re, p_im = powers(i)
        q_re, q_im = powers(j)
        # (W A_bar^i)[dirs, dim, N/2, inner], then Re(sum_n (W A_bar^i) A_bar^(inner j)).
        wp_re, wp_im = complex_mul(w_re[..., None], w_im[..., None], p_re[None], p_im[None])
        lhs = ops.concatenate([wp_re, -wp_im], axis=2)
        rhs = ops.concatenate([q_re, q_im], axis=1)
        k = 2.0 * ops.einsum("dhni,hnj->dhji", lhs, rhs)
        k = ops.reshape(k, (ops.shape(k)[0], ops.shape(k)[1], -1))
        return k[..., :length]

    # ------------------------------------------------------------------ call

    def _mix(self, x, mask, causal: bool, training):
        if 0 in tuple(x.shape[:2]):
            # Nothing to mix (an FFT of size 0 does not lower on XLA): the empty output.
            return ops.zeros(tuple(x.shape), self.compute_dtype)
        u = attention_utils.to_float32(x)
        if mask is not None:
            u = attention_utils.zero_padded(u, mask)
        y = self._convolve(u, causal=causal) + u * self.d_skip
        if self.activation == "gelu":
            y = ops.gelu(y, approximate=False)
        elif self.activation != "linear":
            y = getattr(ops, self.activation)(y)
        y = ops.cast(y, self.compute_dtype)
        y = self._dropout_layer(y, training=training)
        y = self._output_dense(y)
        if self.gated_output:
            a, b = ops.split(y, 2, axis=-1)
            y = a * ops.sigmoid(b)
        if mask is not None:
            y = attention_utils.zero_padded(y, mask)
        return y

    def _convolve(self, u, causal: bool):
        """Linear convolution of `u` `[batch, L, dim]` with the kernel, by FFT of size 2L."""
        k = self.convolution_kernel(ops.shape(u)[1])
        # The backward kernel's lag 0 weighs u_{t+1} (lags -1, -2, ...: S4's layout).
        backward = k[1] if self.bidirectional and not causal else None
        return state_space_utils.long_convolution(u, k[0], backward)

    # ------------------------------------------------------------------ cost

    def projection_flops(self, batch: int, query_length: int, key_length: int) -> int:
        """The output projection: 2 L dim (2 dim or dim) per example."""
        del key_length
        dim = self._width("projection_flops")
        out = 2 * dim if self.gated_output else dim
        return int(2 * batch * query_length * dim * out)

    def attention_flops(
        self, batch: int, query_length: int, key_length: int, causal: bool = False
    ) -> int:
        """Kernel (8 L N/2 dim per direction) plus three real FFTs of 2L per channel."""
        del key_length
        dim = self._width("attention_flops")
        directions = 1 if causal or not self.bidirectional else 2
        kernel = 8 * query_length * (self.state_dim // 2) * dim * directions
        convolution = state_space_utils.long_convolution_flops(batch, dim, query_length)
        return int(kernel + convolution)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "state_dim": self.state_dim,
                "bidirectional": self.bidirectional,
                "init": self.init,
                "dt_min": self.dt_min,
                "dt_max": self.dt_max,
                "activation": self.activation,
                "gated_output": self.gated_output,
                "ssm_learning_rate": self.ssm_learning_rate,
            }
        )
        return config
