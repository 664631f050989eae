"""Helpers shared by the state-space token mixers (S4D, Mega's EMA, LRU, S5): keras.ops only.

Complex numbers are (real, imaginary) pairs of float32 tensors (complex dtypes are uneven
across Keras backends). The long convolution applies a per-channel kernel as long as the
sequence by FFT; `factored_lags` splits the lags 0..L-1 so that a kernel of powers
`a^l` costs two small power tables and a matmul instead of an `[..., L]` power tensor per
state; the `checked_*` functions validate the constructor arguments the mixers share.
"""

from __future__ import annotations

import math

from keras import ops

from lra_keras.layers.attention import attention_utils


def complex_mul(a_re, a_im, b_re, b_im):
    """(a_re + i a_im)(b_re + i b_im) as a (real, imaginary) pair."""
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


def factored_lags(length):
    """float32 exponents `i` `[inner]` and `j` `[outer]`: every lag `l < length` is `i + j`.

    `inner` is about sqrt(length) and `j` runs over multiples of it, so `a^l = a^i a^j` is an
    outer product of two small power tables; flattened as `[outer, inner]`, the products are
    the lags in order (`inner * outer >= length`: slice the first `length`). `length` is a
    Python int or a scalar tensor (a length unknown when the graph is traced).
    """
    if isinstance(length, int):
        inner = max(1, math.isqrt(max(length - 1, 0)) + 1)
    else:
        inner = ops.cast(ops.ceil(ops.sqrt(ops.cast(length, "float32"))), "int32")
        inner = ops.maximum(inner, 1)
    outer = (length + inner - 1) // inner
    i = ops.cast(ops.arange(inner), "float32")
    j = ops.cast(ops.arange(outer), "float32") * ops.cast(inner, "float32")
    return i, j


def long_convolution(x, forward, backward=None):
    """`y_t = sum_{s<=t} forward_{t-s} x_s + sum_{s>t} backward_{s-t-1} x_s`, per channel, by FFT.

    Args:
        x: float32 `[batch, L, channels]`.
        forward: float32 `[channels, L]`, the weights of lags 0, 1, ..., L - 1.
        backward: float32 `[channels, L]` or None (causal), the weights of lags -1, -2, ...

    Returns:
        float32 `[batch, L, channels]`. The convolution is linear, not circular: input and
        kernel are zero-padded to 2L, the backward lags at the end of the 2L circle (S4's
        bidirectional layout), so outputs never wrap around to the other end.
    """
    length = attention_utils.dim(x, 1)
    if backward is None:
        kernel = ops.concatenate([forward, ops.zeros_like(forward)], axis=-1)
    else:
        kernel = ops.concatenate([forward, ops.flip(backward, axis=-1)], axis=-1)
    u = ops.transpose(x, (0, 2, 1))
    u = ops.concatenate([u, ops.zeros_like(u)], axis=-1)
    k_re, k_im = ops.rfft(kernel)
    u_re, u_im = ops.rfft(u)
    y = ops.irfft(complex_mul(u_re, u_im, k_re, k_im))[..., :length]
    return ops.transpose(y, (0, 2, 1))


def long_convolution_flops(batch: int, channels: int, length: int) -> int:
    """`long_convolution`'s cost: three real FFTs of size 2L per channel and the product."""
    n = 2 * length
    fft = int(2.5 * n * math.log2(n)) if n > 1 else 0
    return batch * channels * (3 * fft + 6 * (length + 1))


def check_numbers(variant: str, **values) -> None:
    """Raises a ValueError naming the first argument that is not an int or float (nor bool)."""
    for arg, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{variant}: `{arg}` must be a number, got {value!r}.")


def checked_step_range(dt_min, dt_max, variant: str) -> tuple[float, float]:
    """`(dt_min, dt_max)` as floats, if `0 < dt_min <= dt_max` (the initial timescales)."""
    if not (0.0 < float(dt_min) <= float(dt_max)):
        raise ValueError(
            f"{variant}: `dt_min` and `dt_max` must satisfy 0 < dt_min <= dt_max, got "
            f"dt_min={dt_min!r}, dt_max={dt_max!r}."
        )
    return float(dt_min), float(dt_max)


def checked_ssm_learning_rate(value, variant: str) -> float | None:
    """`value` as a float, or None; the state-space parameters' learning rate must be > 0."""
    if value is not None and not float(value) > 0:
        raise ValueError(f"{variant}: `ssm_learning_rate` must be None or > 0, got {value!r}.")
    return None if value is None else float(value)
