"""LRU: the Linear Recurrent Unit, a complex diagonal linear recurrence run as a parallel scan."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import state_space_utils
from lra_keras.layers.attention.linear_recurrence_mixer import LinearRecurrenceMixer
from lra_keras.layers.attention.registry import register_attention


@register_attention("lru")
@keras.saving.register_keras_serializable(package="lra_keras")
class LRUMixing(LinearRecurrenceMixer):
    """LRU: a complex diagonal linear recurrence, exponentially parameterised and normalised.

    From the `dim` input channels, `state_dim` complex states evolve as
    `x_k = diag(lambda) x_{k-1} + gamma * (B u_k)` and emit `y_k = Re(C x_k) + D u_k`, with
    `lambda = exp(-exp(nu_log) + i exp(theta_log))` (so |lambda| < 1 for any `nu_log`) and the
    normalisation `gamma = exp(gamma_log)`, initialised to `sqrt(1 - |lambda|^2)` so that a
    white-noise input keeps its variance (section 3.3). Ring initialisation (Lemma 3.2):
    lambda uniform on the ring `r_min <= |lambda| <= r_max` (|lambda|^2 uniform in
    `[r_min^2, r_max^2]`, as the paper's code draws it) with phase uniform in
    `[0, max_phase]`; B and C complex Glorot-like normal (real and imaginary parts with
    variance `1 / (2 dim)` for B, `1 / state_dim` for C), D standard normal (appendix A).

    The recurrence runs over the sequence with `keras.ops.associative_scan` (O(L) work,
    O(log L) depth), complex numbers held as separate float32 real and imaginary parts
    (complex dtypes are uneven across Keras backends), in float32 under any dtype policy.
    Bidirectional by default (as the S5 setup the paper's LRA models follow): a second scan
    from the end, with the same lambda and B and its own C, is added to the readout.
    `use_causal_mask=True` (or `bidirectional=False`) keeps the forward scan only, which is
    strictly causal. Then the block's position-wise part (the paper's block, Figure 1, is
    normalisation, the LRU, a position-wise MLP or GLU and a skip; the normalisation, skip and
    the encoder's MLP are the encoder block's): GELU, dropout, `Dense(2 dim)` and a GLU (S5's
    `full_glu`, the default `activation`), dropout.

    A `TokenMixer`, not a `BaseAttention`: there are no queries, keys or heads; it has the
    attention call signature and capability attributes so that `get_attention("lru", ...)`,
    the encoder block and the zoo build it like any variant. `num_heads` and `key_dim` give
    the width `attention_flops` assumes before build; `dropout` is the block's dropout.

    The recurrence's parameters (`nu_log`, `theta_log`, `gamma_log`) are listed by
    `state_space_variables`; `lra_keras.training.optimizers.build_optimizer` trains them at
    `ssm_learning_rate` with no weight decay.

    Args:
        num_heads, key_dim: int or None. Unused, except for `attention_flops` before build.
        value_dim: unused MultiHeadAttention argument, kept as an attribute.
        dropout: float in [0, 1). Channel dropout after the GELU and after the gate.
        use_bias: bool. Whether the gate's Dense has a bias.
        output_shape: int, tuple or None. Must equal the input's last dimension when given.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint: of the gate's Dense.
        activity_regularizer: Regularizer of the output.
        seed: int or None. Seeds the initial lambda, B, C, D and the Dense (a distinct seed per
            weight) and the dropout; None uses Keras' global seeding.
        state_dim: int >= 1. N, the number of complex states.
        r_min, r_max: float, 0 <= r_min < r_max < 1. The ring |lambda| starts on; the
            defaults 0.9 and 0.999 keep memory long (the paper tunes them per task).
        max_phase: float in (0, 2 pi]. The phase of lambda starts uniform in [0, max_phase].
        bidirectional: bool. Add the backward scan (non-causal calls).
        activation: "full_glu" (default), "half_glu1", "half_glu2" or "gelu": S5's
            `activation_fn` choices of the position-wise part.
        ssm_learning_rate: float or None. Learning rate of `nu_log`, `theta_log` and
            `gamma_log`, on the scale of the training config's `learning_rate`; None trains
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
    >>> layer = get_attention("lru", num_heads=2, key_dim=8, state_dim=16, seed=1)
    >>> x = np.random.rand(2, 10, 16).astype("float32")
    >>> mask = np.arange(10)[None, :] < np.array([[10], [6]])
    >>> y = layer(x, x, query_mask=mask, value_mask=mask)
    >>> tuple(y.shape), float(np.abs(np.asarray(y)[1, 6:]).max())
    ((2, 10, 16), 0.0)

    Reference:
        Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu and De, "Resurrecting Recurrent Neural
        Networks for Long Sequences", ICML 2023.
    """

    attention_name = "lru"
    readout_scale = 1.0

    def __init__(
        self,
        *args,
        state_dim: int = 64,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2.0 * math.pi,
        bidirectional: bool = True,
        activation: str = "full_glu",
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
        state_space_utils.check_numbers(name, r_min=r_min, r_max=r_max, max_phase=max_phase)
        if not (0.0 <= float(r_min) < float(r_max) < 1.0):
            raise ValueError(
                f"{name}: `r_min` and `r_max` must satisfy 0 <= r_min < r_max < 1 (the ring "
                f"of eigenvalue radii), got r_min={r_min!r}, r_max={r_max!r}."
            )
        if not (0.0 < float(max_phase) <= 2.0 * math.pi + 1e-9):
            raise ValueError(f"{name}: `max_phase` must be in (0, 2 pi], got {max_phase!r}.")
        self.r_min = float(r_min)
        self.r_max = float(r_max)
        self.max_phase = float(max_phase)

    # ------------------------------------------------------------------ build

    def _uniform_then(self, transform):
        """An initializer: a seeded uniform [0, 1) draw, then `transform` (in keras.ops)."""
        uniform = self._seeded(keras.initializers.RandomUniform(0.0, 1.0))

        def initializer(shape, dtype=None):
            return ops.cast(transform(uniform(shape, dtype="float32")), dtype or "float32")

        return initializer

    def _build_recurrence(self, dim):
        n = self.state_dim
        r2_min, r2_max = self.r_min**2, self.r_max**2
        # |lambda|^2 = exp(-2 exp(nu_log)) uniform in [r_min^2, r_max^2].
        self.nu_log = self._float32_weight(
            "nu_log",
            (n,),
            # The floor keeps r_min = 0 with a draw of exactly 0 finite.
            self._uniform_then(
                lambda u: ops.log(
                    -0.5 * ops.log(ops.maximum(u * (r2_max - r2_min) + r2_min, 1e-30))
                )
            ),
        )
        self.theta_log = self._float32_weight(
            "theta_log",
            (n,),
            # u = 0 would be log 0; the draw is in [0, 1), so nudge it to the float32 tiny.
            self._uniform_then(lambda u: ops.log(self.max_phase * ops.maximum(u, 1e-30))),
        )

        def gamma_init(shape, dtype=None):
            # sqrt(1 - |lambda|^2) with |lambda|^2 = exp(-2 exp(nu_log)); -expm1 keeps the
            # digits when |lambda| is close to 1.
            nu = ops.convert_to_tensor(self.nu_log)
            value = ops.log(ops.sqrt(-ops.expm1(-2.0 * ops.exp(nu))))
            return ops.cast(value, dtype or "float32")

        self.gamma_log = self._float32_weight("gamma_log", (n,), gamma_init)
        # [..., 0] real, [..., 1] imaginary parts (the LRU's B_re, B_im, C_re, C_im).
        self.b = self._float32_weight(
            "b",
            (n, dim, 2),
            self._seeded(keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(2 * dim))),
        )
        self.c = self._float32_weight(
            "c",
            (self.directions, dim, n, 2),
            self._seeded(keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(n))),
        )

    @property
    def state_space_variables(self) -> list:
        """The recurrence's parameters, trained at `ssm_learning_rate` without weight decay."""
        return [self.nu_log, self.theta_log, self.gamma_log]

    def recurrence_parameters(self):
        """lambda, gamma B and C as float32 (real, imag) pairs (see the base)."""
        magnitude = ops.exp(-ops.exp(self.nu_log))
        phase = ops.exp(self.theta_log)
        gamma = ops.exp(self.gamma_log)[:, None]
        lam = (magnitude * ops.cos(phase), magnitude * ops.sin(phase))
        b = (self.b[..., 0] * gamma, self.b[..., 1] * gamma)
        return lam, b, (self.c[..., 0], self.c[..., 1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"r_min": self.r_min, "r_max": self.r_max, "max_phase": self.max_phase})
        return config
