"""The base of the diagonal linear-recurrence token mixers (LRU, S5), run as a parallel scan."""

from __future__ import annotations

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils, state_space_utils
from lra_keras.layers.attention.state_space_utils import complex_mul
from lra_keras.layers.attention.token_mixer import TokenMixer

# S5's `activation_fn` choices (github.com/lindermanlab/S5, s5/layers.py, SequenceLayer).
ACTIVATIONS = ("full_glu", "half_glu1", "half_glu2", "gelu")


def _combine(earlier, later):
    # Two steps of x_k = a_k x_{k-1} + b_k composed: (a2 a1, a2 b1 + b2), complex.
    a1_re, a1_im, b1_re, b1_im = earlier
    a2_re, a2_im, b2_re, b2_im = later
    a_re, a_im = complex_mul(a2_re, a2_im, a1_re, a1_im)
    ab_re, ab_im = complex_mul(a2_re, a2_im, b1_re, b1_im)
    return a_re, a_im, ab_re + b2_re, ab_im + b2_im


def _combine_complex(earlier, later):
    # `_combine` on complex64 arrays.
    (a1, b1), (a2, b2) = earlier, later
    return a2 * a1, a2 * b1 + b2


def _complex(re, im):
    return ops.cast(re, "complex64") + ops.cast(im, "complex64") * 1j


def _doubling_scan(step, b):
    """The scan on TensorFlow: Hillis and Steele's doubling form, in a `while_loop`.

    `x <- x + step^d shift_d(x)` for d = 1, 2, 4, ... while d < L: O(log L) depth and
    O(L log L) work (log2 L elementwise passes over `[batch, L, states]`, small beside the
    B and C projections), for a length unknown when the graph is built.
    """
    (a_re, a_im), (b_re, b_im) = step, b
    length = ops.shape(b_re)[1]
    position = ops.arange(length)[None, :, None]

    def body(d, p_re, p_im, x_re, x_im):
        later = position >= d
        s_re = ops.where(later, ops.roll(x_re, d, axis=1), 0.0)
        s_im = ops.where(later, ops.roll(x_im, d, axis=1), 0.0)
        add_re, add_im = complex_mul(p_re, p_im, s_re, s_im)
        p_re, p_im = complex_mul(p_re, p_im, p_re, p_im)
        return d * 2, p_re, p_im, x_re + add_re, x_im + add_im

    _, _, _, x_re, x_im = ops.while_loop(
        lambda d, *_: d < length,
        body,
        (ops.ones((), "int32"), a_re, a_im, b_re, b_im),
        # A bound, so that TensorFlow can differentiate the loop under XLA (2^40 steps).
        maximum_iterations=40,
    )
    return x_re, x_im


def _unrolled_doubling_scan(step, b, length: int):
    """`_doubling_scan` for a static length, unrolled in Python (ceil(log2 L) steps).

    The shifts are static slices, and no `while_loop` is traced: Grappler's add rewrite inside
    the loop failed at random at 16K (a temporary variable created twice, TensorFlow 2.21).
    """
    (a_re, a_im), (x_re, x_im) = step, b
    p_re, p_im = a_re, a_im
    d = 1
    while d < length:
        zeros = ops.zeros_like(x_re[:, :d])
        s_re = ops.concatenate([zeros, x_re[:, : length - d]], axis=1)
        s_im = ops.concatenate([zeros, x_im[:, : length - d]], axis=1)
        add_re, add_im = complex_mul(p_re, p_im, s_re, s_im)
        x_re, x_im = x_re + add_re, x_im + add_im
        p_re, p_im = complex_mul(p_re, p_im, p_re, p_im)
        d *= 2
    return x_re, x_im


def diagonal_scan(lambda_re, lambda_im, b_re, b_im, reverse: bool = False):
    """All states of `x_k = lambda x_{k-1} + b_k` (x_0 = b_0), by a parallel scan.

    `lambda` `[states]` is the diagonal, the same at every step; `b` `[batch, L, states]`
    float32 (real, imaginary) parts. With `reverse`, `x_k = lambda x_{k+1} + b_k` from the end.
    Returns the states' (real, imaginary) parts, shaped like `b`.

    On JAX, `keras.ops.associative_scan` in complex64 (`lax.associative_scan`: O(L) work,
    O(log L) depth); on other backends the same scan over real and imaginary parts.
    On TensorFlow, Keras's associative scan traces both branches of a `tf.cond` per level and
    fails under XLA and on lengths unknown at trace time (Keras 3.15), and an odd-even scan
    written with static slices took 24 s to trace for one layer's gradient at 1K (against
    6 s for the doubling form, 0.23 s and 0.20 s a step after): so TensorFlow runs the
    doubling form, unrolled for a static length, in a `while_loop` otherwise.
    """
    if reverse:
        b_re, b_im = ops.flip(b_re, axis=1), ops.flip(b_im, axis=1)
    if keras.backend.backend() == "tensorflow":
        length = b_re.shape[1]
        if length is not None:
            x_re, x_im = _unrolled_doubling_scan((lambda_re, lambda_im), (b_re, b_im), length)
        else:
            x_re, x_im = _doubling_scan((lambda_re, lambda_im), (b_re, b_im))
    elif keras.backend.backend() == "jax":
        # In complex64 the scan carries two arrays instead of four (real and imaginary parts):
        # one lru or s5 layer's gradient compiles 2.3-3.0x faster on a CPU core, at a step
        # time within +-7% (1K and 4K).
        lam = _complex(ops.ones_like(b_re[:1, :, :1]) * lambda_re, lambda_im)
        _, x = ops.associative_scan(_combine_complex, (lam, _complex(b_re, b_im)), axis=1)
        x_re, x_im = ops.real(x), ops.imag(x)
    else:
        # Keras's torch associative scan casts complex inputs to real (Keras 3.15).
        ones = ops.ones_like(b_re[:1, :, :1])
        elems = (ones * lambda_re, ones * lambda_im, b_re, b_im)
        _, _, x_re, x_im = ops.associative_scan(_combine, elems, axis=1)
    if reverse:
        x_re, x_im = ops.flip(x_re, axis=1), ops.flip(x_im, axis=1)
    return x_re, x_im


class LinearRecurrenceMixer(TokenMixer):
    """Base class (not registered) of the diagonal linear-recurrence mixers `lru` and `s5`.

    A subclass owns the recurrence's parameters and says how they discretise
    (`recurrence_parameters`); this base runs, for `u` `[batch, L, dim]` (float32, zeroed at
    padded positions), the complex diagonal recurrence `x_k = Lambda x_{k-1} + B u_k` over
    the sequence with `diagonal_scan` and reads `y_k = scale Re(C x_k) + D u_k` (`scale` is
    2 for S5's conjugate-symmetric halves, 1 for the LRU). Bidirectional (`bidirectional`
    and not causal), a second scan runs from the end with the same Lambda and B and its own
    C, as S5's `bidirectional` (`apply_ssm` in s5/ssm.py: both scans include step k, their
    readouts are summed). Then S5's `SequenceLayer` nonlinearity (`activation`): GELU (tanh
    form, flax's default) and dropout, then a position-wise gate.

    The recurrence and its readout run in float32 under any dtype policy; the gate's Dense
    runs in the compute dtype. See `LRUMixing` and `S5Mixing` for the arguments.
    """

    supports_causal = True
    strictly_causal = True
    supports_cross_attention = False
    needs_static_length = False
    supports_attention_scores = False
    supports_attention_mask = False
    # Positions live in the recurrence; there are no queries or keys to rotate.
    supports_rotary = False
    # Its `dropout` (S5's, after the GELU and after the gate) is applied in training, so the
    # zoo passes the preset's attention dropout on as it does for attention probabilities.
    has_attention_probabilities = True
    _needs_known_width = True
    # The registry name, set by `register_attention`.
    attention_name = "linear_recurrence"
    # Re(C x) is doubled for conjugate-symmetric states (S5), taken once otherwise (LRU).
    readout_scale = 1.0

    def __init__(
        self,
        *args,
        state_dim: int = 64,
        bidirectional: bool = True,
        activation: str = "full_glu",
        ssm_learning_rate: float | None = 0.001,
        **kwargs,
    ):
        # MultiHeadAttention's arguments, positional or not, are the base's.
        super().__init__(*args, **kwargs)
        name = type(self).__name__
        self.state_dim = attention_utils.checked_int(state_dim, "state_dim", name)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"{name}: `activation` must be one of {ACTIVATIONS}, got {activation!r}."
            )
        self.ssm_learning_rate = state_space_utils.checked_ssm_learning_rate(
            ssm_learning_rate, name
        )
        self.bidirectional = bool(bidirectional)
        self.activation = activation
        # S5 drops whole channels for the whole sequence (flax Dropout, broadcast_dims=[0]).
        self._dropout_layer = keras.layers.Dropout(
            rate=self.dropout, noise_shape=(None, 1, None), seed=self.seed, dtype=self.dtype_policy
        )

    # ------------------------------------------------------------------ build

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _build_mixer(self, dim):
        self._build_recurrence(dim)
        self.d_skip = self._float32_weight(
            "d_skip", (dim,), self._seeded(keras.initializers.RandomNormal(stddev=1.0))
        )
        if self.activation == "gelu":
            self._output_dense = None
            return
        sublayer = self._sublayer_kwargs()
        sublayer["kernel_initializer"] = self._seeded(sublayer["kernel_initializer"])
        # full_glu's two Dense(dim) as one Dense(2 dim), split in two.
        width = 2 * dim if self.activation == "full_glu" else dim
        self._output_dense = keras.layers.Dense(
            width, use_bias=self.use_bias, name="output_linear", **sublayer
        )
        self._output_dense.build((None, None, dim))

    def _build_recurrence(self, dim):
        """Creates the recurrence's weights (Lambda, B, C) for an input of width `dim`."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_build_recurrence`.")

    def recurrence_parameters(self):
        """The discrete recurrence as float32 (real, imag) pairs.

        Returns `(lambda_re, lambda_im)` `[states]`, `(b_re, b_im)` `[states, dim]` (the input
        matrix as applied at each step, normalisation and discretisation included) and
        `(c_re, c_im)` `[directions, dim, states]`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement it.")

    @property
    def num_states(self) -> int:
        """The number of complex states the scan carries."""
        return self.state_dim

    # ------------------------------------------------------------------ call

    def _mix(self, x, mask, causal: bool, training):
        if 0 in tuple(x.shape[:2]):
            return ops.zeros(tuple(x.shape), self.compute_dtype)
        u = attention_utils.to_float32(x)
        if mask is not None:
            # `where`, so that inf or NaN stored at a padded position reaches nothing.
            u = attention_utils.zero_padded(u, mask)
        y = self.recurrence(u, causal=causal)
        y = self._nonlinearity(y, training)
        if mask is not None:
            y = attention_utils.zero_padded(y, mask)
        return y

    def recurrence(self, u, causal: bool = False):
        """`scale Re(C x_k) + D u_k` for float32 `u` `[batch, L, dim]`, before the activation."""
        (lam_re, lam_im), (b_re, b_im), (c_re, c_im) = self.recurrence_parameters()
        bu_re = ops.matmul(u, ops.transpose(b_re))
        bu_im = ops.matmul(u, ops.transpose(b_im))
        scans = [False]
        if self.bidirectional and not causal:
            scans.append(True)
        y = u * self.d_skip
        for direction, reverse in enumerate(scans):
            x_re, x_im = diagonal_scan(lam_re, lam_im, bu_re, bu_im, reverse=reverse)
            # Re(C x) = C_re x_re - C_im x_im.
            read = ops.matmul(x_re, ops.transpose(c_re[direction]))
            read = read - ops.matmul(x_im, ops.transpose(c_im[direction]))
            y = y + self.readout_scale * read
        return y

    def _nonlinearity(self, y, training):
        """S5's SequenceLayer activations: GELU, dropout, then the gate of `activation`."""
        activated = ops.cast(ops.gelu(y, approximate=True), self.compute_dtype)
        activated = self._dropout_layer(activated, training=training)
        if self.activation == "gelu":
            return activated
        if self.activation == "full_glu":
            a, b = ops.split(self._output_dense(activated), 2, axis=-1)
            out = a * ops.sigmoid(b)
        elif self.activation == "half_glu1":
            out = activated * ops.sigmoid(self._output_dense(activated))
        else:  # half_glu2: the gate sees the activation, the gated value is the SSM output.
            out = ops.cast(y, self.compute_dtype) * ops.sigmoid(self._output_dense(activated))
        return self._dropout_layer(out, training=training)

    # ------------------------------------------------------------------ cost

    def projection_flops(self, batch: int, query_length: int, key_length: int) -> int:
        """The gate's Dense: 2 L dim (2 dim or dim) per example; none for plain GELU."""
        del key_length
        dim = self._width("projection_flops")
        if self.activation == "gelu":
            return 0
        out = 2 * dim if self.activation == "full_glu" else dim
        return int(2 * batch * query_length * dim * out)

    def attention_flops(
        self, batch: int, query_length: int, key_length: int, causal: bool = False
    ) -> int:
        """B u (complex, 4 L dim S), per direction the scan (Blelloch: ~2 combines of 14 real
        FLOPs per state and step) and the readout (4 L dim S), and D u."""
        del key_length
        dim = self._width("attention_flops")
        states = self.num_states
        directions = 1 if causal or not self.bidirectional else 2
        per_direction = 28 * states + 4 * dim * states
        per_step = 4 * dim * states + directions * per_direction + 2 * dim
        return int(batch * query_length * per_step)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "state_dim": self.state_dim,
                "bidirectional": self.bidirectional,
                "activation": self.activation,
                "ssm_learning_rate": self.ssm_learning_rate,
            }
        )
        return config
