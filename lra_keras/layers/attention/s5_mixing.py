"""S5: a MIMO diagonal state space (HiPPO-N initialised), discretised and run as a parallel scan."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from lra_keras.layers.attention import attention_utils, state_space_utils
from lra_keras.layers.attention.linear_recurrence_mixer import LinearRecurrenceMixer
from lra_keras.layers.attention.registry import register_attention
from lra_keras.layers.attention.state_space_utils import complex_mul

C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
# Keras's (and flax's) truncated normal is cut at two standard deviations; this is the
# standard deviation of the cut unit normal, divided out to get the variance asked for.
_TRUNCATED_STDDEV = 0.87962566103423978


def hippo_n(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The diagonalised normal part of HiPPO-LegS of `size` states: (Lambda, V), complex128.

    HiPPO-LegS `A` plus the rank-one `P P^T` (P_n = sqrt(n + 1/2)) is normal: -1/2 on the
    diagonal plus a skew-symmetric part, whose eigenvalues come in conjugate pairs. Lambda is
    -1/2 + i (the skew part's eigenvalues, ascending), V the unitary eigenvectors (S5's
    `make_DPLR_HiPPO`). A constant: computed once, in numpy, at build.
    """
    n = np.arange(size)
    root = np.sqrt(2 * n + 1.0)
    legs = -(np.tril(root[:, None] * root[None, :]) - np.diag(n))
    p = np.sqrt(n + 0.5)
    normal = legs + p[:, None] * p[None, :]
    skew = normal + 0.5 * np.eye(size)
    imag, v = np.linalg.eigh(-1j * skew)
    return -0.5 + 1j * imag, v


def _block_diag(block: np.ndarray, copies: int) -> np.ndarray:
    rows, cols = block.shape
    out = np.zeros((rows * copies, cols * copies), block.dtype)
    for j in range(copies):
        out[j * rows : (j + 1) * rows, j * cols : (j + 1) * cols] = block
    return out


@register_attention("s5")
@keras.saving.register_keras_serializable(package="lra_keras")
class S5Mixing(LinearRecurrenceMixer):
    """S5: one multi-input, multi-output diagonal state space over all channels, by scan.

    A state of P = `state_dim` complex modes, shared by the `dim` channels (MIMO, unlike S4's
    one SSM per channel), evolves as `x_k = Lambda_bar x_{k-1} + B_bar u_k` and emits
    `y_k = Re(C_tilde x_k) + D u_k`. Lambda is initialised from HiPPO-N (the diagonalised
    normal part of HiPPO-LegS), block-diagonal: `blocks` copies of the eigen-decomposition of
    size P / `blocks`; B_tilde = V^-1 B and C_tilde = C V with B LeCun-normal and C drawn by
    `C_init` (`complex_normal` draws C_tilde directly). Each state has its own timescale
    (`log_step` uniform in [log dt_min, log dt_max]); zero-order hold gives
    `Lambda_bar = exp(Lambda dt)` and `B_bar = (Lambda_bar - 1) / Lambda * B_tilde`.
    Conjugate symmetry: only P / 2 modes are stored (one of each conjugate pair), and the
    readout is `2 Re(C_tilde x_k)`. D is a per-channel feedthrough.

    The recurrence runs over the sequence with `keras.ops.associative_scan` (O(L) work,
    O(log L) depth), complex numbers held as separate float32 real and imaginary parts
    (complex dtypes are uneven across Keras backends), in float32 under any dtype policy.
    Bidirectional by default (S5's `bidirectional=True`, used on every LRA task): a second
    scan from the end, with the same Lambda_bar and B_bar and its own C, is added to the
    readout (both scans include step k). `use_causal_mask=True` (or `bidirectional=False`)
    keeps the forward scan only, which is strictly causal. Then S5's `SequenceLayer`
    activation (`activation`, its `activation_fn`): GELU and dropout, then a position-wise
    gate (`half_glu1`: `x * sigmoid(Dense(x))`; `half_glu2`: the SSM output gated by
    `sigmoid(Dense(GELU(y)))`; `full_glu`: `Dense(x) * sigmoid(Dense'(x))`; `gelu`: none),
    dropout.

    A `TokenMixer`, not a `BaseAttention`: there are no queries, keys or heads; it has the
    attention call signature and capability attributes so that `get_attention("s5", ...)`,
    the encoder block and the zoo build it like any variant. `num_heads` and `key_dim` give
    the width `attention_flops` assumes before build; `dropout` is the block's dropout.

    The state-space parameters (`lambda_re`, `lambda_im`, `log_step`, `b`) are listed by
    `state_space_variables`; `lra_keras.training.optimizers.build_optimizer` trains them at
    `ssm_learning_rate` with no weight decay (S5's `opt_config=standard`, its default).

    Args:
        num_heads, key_dim: int or None. Unused, except for `attention_flops` before build.
        value_dim: unused MultiHeadAttention argument, kept as an attribute.
        dropout: float in [0, 1). Channel dropout after the GELU and after the gate.
        use_bias: bool. Whether the gate's Dense has a bias.
        output_shape: int, tuple or None. Must equal the input's last dimension when given.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint: of the gate's Dense.
        activity_regularizer: Regularizer of the output.
        seed: int or None. Seeds the initial B, C, D, timescales and the Dense (a distinct seed
            per weight) and the dropout; None uses Keras' global seeding.
        state_dim: int. P, the state size (S5's `ssm_size_base`); P / 2 modes are stored.
        blocks: int. J, the number of HiPPO-N blocks Lambda starts from; P / J must be even.
        dt_min, dt_max: float. `log_step` starts uniform in `[log dt_min, log dt_max]`.
        C_init: "trunc_standard_normal" (S5's default), "lecun_normal" or "complex_normal".
        clip_eigs: bool. Keep Re(Lambda) <= -1e-4 (S5's left-half-plane constraint).
        bidirectional: bool. Add the backward scan (non-causal calls).
        activation: "half_glu1" (S5's default), "half_glu2", "full_glu" or "gelu".
        ssm_learning_rate: float or None. Learning rate of Lambda, the timescales and B, on the
            scale of the training config's `learning_rate` (S5: `ssm_lr_base`, 0.001); None
            trains them like every other weight.
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
        use_causal_mask: bool. Forward scan only: the output at t depends on inputs <= t.

    Returns:
        `[batch, L, dim]` in the compute dtype, zero at padded positions.

    Masking: padded positions of the input are set to zero (with `where`, so non-finite
    contents cannot leak) before the scan. Padding is at the end, so the forward scan reaches
    real positions before any pad, and the backward scan starts with zero states through the
    pads: outputs at real positions depend on real tokens only and not on the padded length.
    Output rows at padded positions are zero; a fully padded row is zero.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import get_attention
    >>> layer = get_attention("s5", num_heads=2, key_dim=8, state_dim=16, blocks=2, seed=1)
    >>> x = np.random.rand(2, 10, 16).astype("float32")
    >>> mask = np.arange(10)[None, :] < np.array([[10], [6]])
    >>> y = layer(x, x, query_mask=mask, value_mask=mask)
    >>> tuple(y.shape), float(np.abs(np.asarray(y)[1, 6:]).max())
    ((2, 10, 16), 0.0)

    Reference:
        Smith, Warrington and Linderman, "Simplified State Space Layers for Sequence
        Modeling", ICLR 2023 (S5; github.com/lindermanlab/S5).
    """

    attention_name = "s5"
    # Conjugate symmetry: each stored mode stands for itself and its conjugate.
    readout_scale = 2.0

    def __init__(
        self,
        *args,
        state_dim: int = 256,
        blocks: int = 8,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        C_init: str = "trunc_standard_normal",  # noqa: N803 (S5's name for it)
        clip_eigs: bool = False,
        bidirectional: bool = True,
        activation: str = "half_glu1",
        ssm_learning_rate: float | None = 0.001,
        **kwargs,
    ):
        super().__init__(
            *args,
            state_dim=state_dim,
            bidirectional=bidirectional,
            activation=activation,
            ssm_learning_rate=ssm_learning_rate,
            **kwargs,
        )
        name = type(self).__name__
        self.blocks = attention_utils.checked_int(blocks, "blocks", name)
        if self.state_dim % self.blocks or (self.state_dim // self.blocks) % 2:
            raise ValueError(
                f"{name}: `blocks` must divide `state_dim` into blocks of even size (each "
                f"block's modes come in conjugate pairs), got state_dim={self.state_dim}, "
                f"blocks={self.blocks}."
            )
        state_space_utils.check_numbers(name, dt_min=dt_min, dt_max=dt_max)
        self.dt_min, self.dt_max = state_space_utils.checked_step_range(dt_min, dt_max, name)
        if C_init not in C_INITS:
            raise ValueError(f"{name}: `C_init` must be one of {C_INITS}, got {C_init!r}.")
        self.C_init = C_init
        self.clip_eigs = bool(clip_eigs)

    @property
    def num_states(self) -> int:
        return self.state_dim // 2

    # ------------------------------------------------------------------ build

    def initial_eigensystem(self) -> tuple[np.ndarray, np.ndarray]:
        """(Lambda `[P/2]`, V `[P, P/2]`), complex128: `blocks` HiPPO-N blocks, one of each
        conjugate pair kept (the first half of each block's ascending eigenvalues)."""
        size = self.state_dim // self.blocks
        lam, v = hippo_n(size)
        lam, v = lam[: size // 2], v[:, : size // 2]
        return np.tile(lam, self.blocks), _block_diag(v, self.blocks)

    def _build_recurrence(self, dim):
        full, half = self.state_dim, self.state_dim // 2
        lam, v = self.initial_eigensystem()
        v_re = ops.convert_to_tensor(v.real.astype("float32"))
        v_im = ops.convert_to_tensor(v.imag.astype("float32"))
        self.lambda_re = self._float32_weight(
            "lambda_re", (half,), keras.initializers.Constant(lam.real.astype("float32"))
        )
        self.lambda_im = self._float32_weight(
            "lambda_im", (half,), keras.initializers.Constant(lam.imag.astype("float32"))
        )
        # B_tilde = V^-1 B = V^H B, with B real LeCun normal [P, dim].
        b_draw = self._seeded(keras.initializers.LecunNormal())

        def b_init(shape, dtype=None):
            b = b_draw((full, dim), dtype="float32")
            re = ops.matmul(ops.transpose(v_re), b)
            im = -ops.matmul(ops.transpose(v_im), b)
            return ops.stack([re, im], axis=-1)

        self.b = self._float32_weight("b", (half, dim, 2), b_init)
        self.c = self._float32_weight("c", (self.directions, dim, half, 2), self._c_init(dim))
        self.log_step = self._float32_weight(
            "log_step",
            (half,),
            self._seeded(
                keras.initializers.RandomUniform(math.log(self.dt_min), math.log(self.dt_max))
            ),
        )

    def _c_init(self, dim):
        """C_tilde's initializer: C drawn by `C_init`, then C V (complex_normal: as drawn)."""
        full = self.state_dim
        if self.C_init == "complex_normal":
            return self._seeded(keras.initializers.RandomNormal(stddev=math.sqrt(0.5)))
        # S5 draws C [dim, P, 2] per direction: trunc_standard_normal with each channel's row
        # LeCun-normal (variance 1 / P), lecun_normal over the whole (fan in P dim).
        fan_in = full if self.C_init == "trunc_standard_normal" else full * dim
        draw = self._seeded(
            keras.initializers.TruncatedNormal(stddev=math.sqrt(1.0 / fan_in) / _TRUNCATED_STDDEV)
        )
        _, v = self.initial_eigensystem()
        v_re = ops.convert_to_tensor(v.real.astype("float32"))
        v_im = ops.convert_to_tensor(v.imag.astype("float32"))

        def c_init(shape, dtype=None):
            c = draw((shape[0], dim, full, 2), dtype="float32")
            re, im = c[..., 0], c[..., 1]
            cv_re = ops.matmul(re, v_re) - ops.matmul(im, v_im)
            cv_im = ops.matmul(re, v_im) + ops.matmul(im, v_re)
            return ops.stack([cv_re, cv_im], axis=-1)

        return c_init

    @property
    def state_space_variables(self) -> list:
        """Lambda, the timescales and B: S5's `ssm` group (no weight decay, `ssm_lr`)."""
        return [self.lambda_re, self.lambda_im, self.log_step, self.b]

    def recurrence_parameters(self):
        """Lambda_bar, B_bar and C_tilde as float32 (real, imag) pairs (see the base).

        Zero-order hold: `B_bar = (exp(dt Lambda) - 1) / Lambda * B_tilde`; `exp(x) - 1` is
        formed with `expm1` (dt Lambda is ~1e-3 at the smallest steps).
        """
        lam_re = self.lambda_re
        if self.clip_eigs:
            lam_re = ops.minimum(lam_re, -1e-4)
        lam_im = self.lambda_im
        dt = ops.exp(self.log_step)
        x_re, x_im = lam_re * dt, lam_im * dt
        bar_re = ops.exp(x_re) * ops.cos(x_im)
        bar_im = ops.exp(x_re) * ops.sin(x_im)
        # exp(x + iy) - 1 = expm1(x) cos y - 2 sin^2(y / 2) + i exp(x) sin y.
        num_re = ops.expm1(x_re) * ops.cos(x_im) - 2.0 * ops.square(ops.sin(x_im / 2.0))
        num_im = bar_im
        denom = ops.square(lam_re) + ops.square(lam_im)
        q_re = (num_re * lam_re + num_im * lam_im) / denom
        q_im = (num_im * lam_re - num_re * lam_im) / denom
        b = complex_mul(q_re[:, None], q_im[:, None], self.b[..., 0], self.b[..., 1])
        return (bar_re, bar_im), b, (self.c[..., 0], self.c[..., 1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "blocks": self.blocks,
                "dt_min": self.dt_min,
                "dt_max": self.dt_max,
                "C_init": self.C_init,
                "clip_eigs": self.clip_eigs,
            }
        )
        return config
