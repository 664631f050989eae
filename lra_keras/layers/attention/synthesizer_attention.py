"""Synthesizer attention (Tay et al. 2021): synthetic attention logits."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention

_MODES = ("random", "dense", "factorized_random", "factorized_dense")


@register_attention("synthesizer")
@keras.saving.register_keras_serializable(package="lra_keras")
class SynthesizerAttention(BaseAttention):
    """Synthesizer attention: `softmax(synthetic logits [+ Q K^T / sqrt(d)]) V`, per head.

    Modes (logits of query i over key j, per head h; L = `max_length`, or the build length):
    - `"random"`: a learned `[heads, L, L]` matrix R, independent of the input.
    - `"factorized_random"`: `R1 R2^T` with learned `R1, R2` of `[heads, L, factor_rank]`.
    - `"dense"`: `B_i = W2 relu(W1 x_i + b1) + b2` from the query token x_i alone, `W1` mapping
      the input to `key_dim` per head and `W2` to L (computed as `[batch, heads, T, L]`: LRA's
      reshape without a transpose is not copied).
    - `"factorized_dense"`: the same hidden layer with two outputs `A_i` (length a) and `B_i`
      (length b), `a = ceil(sqrt(L))`, `b = ceil(L / a)`, and logit `A_i[j mod a] * B_i[j // a]`
      (`tile(A, b) * repeat(B, a)`), cut to L.
    With `mix_dot_product=True` the usual `Q K^T / sqrt(d)` logits are added. Quadratic by
    definition: it builds the `[T, S]` logits. An input shorter than `max_length` uses the
    leading part of the synthetic logits; a longer one raises a `ValueError`. With
    `max_length=None` (the default) L is the input's static length at build, so
    `get_attention("synthesizer", num_heads=..., key_dim=...)` works like any other name; an
    unknown length at build then raises a `ValueError` naming `max_length`
    (`needs_static_length`). Self-attention
    only. Attention dropout applies to the probabilities.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key (and of the dense modes' hidden layer).
        max_length: int or None. Longest sequence the layer accepts; None (default) takes the
            input's static length at build.
        mode: str. One of "random", "dense", "factorized_random", "factorized_dense".
        mix_dot_product: bool. Add the dot-product logits to the synthetic ones.
        factor_rank: int. Rank k of `"factorized_random"`.
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments; the synthetic
            weights use `kernel_*` and `bias_*` initializers, regularizers and constraints, and
            the dense modes have biases when `use_bias`.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, attention_mask, training,
        use_causal_mask: as `BaseAttention` (a dense `[batch, T, S]` `attention_mask` is
        accepted). No attention scores.

    Returns:
        `[batch, T, output_dim]`.

    Masking: padding, causal and `attention_mask` biases (-1e9) are added to the combined
    logits before a float32 softmax, so padded keys get no weight; the dense modes' logits for
    query i depend on x_i only, so the causal form is strictly causal; padded query rows are zero.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import SynthesizerAttention
    >>> layer = SynthesizerAttention(num_heads=2, key_dim=8, max_length=64, mode="dense")
    >>> x = np.random.rand(2, 50, 16).astype("float32")
    >>> tuple(layer(x, x, use_causal_mask=True).shape)
    (2, 50, 16)
    >>> from lra_keras.layers import get_attention
    >>> layer = get_attention("synthesizer", num_heads=2, key_dim=8)  # L from the input
    >>> _ = layer(x, x)
    >>> tuple(layer.random_logits.shape)
    (2, 50, 50)

    Reference:
        Tay et al., "Synthesizer: Rethinking Self-Attention for Transformer Models", ICML 2021.
    """

    supports_cross_attention = False
    needs_static_length = True
    static_length_argument = (
        "`max_length` (its synthetic logits cover that many positions; None takes the input's "
        "length)"
    )
    supports_attention_mask = True
    supports_rotary = False
    _no_rotary_reason = "its synthetic logits do not come from query-key dot products."

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        max_length: int | None = None,
        mode: str = "random",
        mix_dot_product: bool = True,
        factor_rank: int = 32,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.max_length = attention_utils.checked_int(
            max_length, "max_length", "SynthesizerAttention", allow_none=True
        )
        if mode not in _MODES:
            raise ValueError(f"SynthesizerAttention: `mode` must be one of {_MODES}, got {mode!r}.")
        self.factor_rank = attention_utils.checked_int(
            factor_rank, "factor_rank", "SynthesizerAttention"
        )
        self.mode = mode
        self.mix_dot_product = bool(mix_dot_product)
        # L: `max_length`, or the length the layer is built at.
        self._set_length(self.max_length)

    def _set_length(self, length):
        self._length = length
        self.factor_a = None if length is None else math.ceil(math.sqrt(length))
        self.factor_b = None if length is None else -(-length // self.factor_a)

    def _check_length(self, length):
        attention_utils.check_max_length(
            length,
            self._length,
            "SynthesizerAttention",
            "its synthetic logits cover `max_length` positions",
        )

    def _weight(self, name, shape, bias=False):
        initializer = self.bias_initializer if bias else self.kernel_initializer
        return self.add_weight(
            name=name,
            shape=shape,
            # A distinct seed per weight: R1 == R2 would make the logits symmetric.
            initializer=self._fresh_initializer(initializer),
            regularizer=self.bias_regularizer if bias else self.kernel_regularizer,
            constraint=self.bias_constraint if bias else self.kernel_constraint,
        )

    def _build_variant(self, query_shape, value_shape):
        if self._length is None:
            # Known here: `build` refuses an unknown length first (`needs_static_length`).
            self._set_length(int(query_shape[1]))
        self._check_length(query_shape[1])
        h, length = self.num_heads, self._length
        if self.mode == "random":
            self.random_logits = self._weight("random_logits", (h, length, length))
        elif self.mode == "factorized_random":
            self.random_factor_1 = self._weight("random_factor_1", (h, length, self.factor_rank))
            self.random_factor_2 = self._weight("random_factor_2", (h, length, self.factor_rank))
        else:
            self.hidden_kernel = self._weight("hidden_kernel", (query_shape[-1], h, self.key_dim))
            self.hidden_bias = (
                self._weight("hidden_bias", (h, self.key_dim), bias=True) if self.use_bias else None
            )
            outputs = [("output", length)]
            if self.mode == "factorized_dense":
                outputs = [("factor_a", self.factor_a), ("factor_b", self.factor_b)]
            for name, size in outputs:
                kernel = self._weight(f"{name}_kernel", (h, self.key_dim, size))
                setattr(self, f"{name}_kernel", kernel)
                setattr(
                    self,
                    f"{name}_bias",
                    self._weight(f"{name}_bias", (h, size), bias=True) if self.use_bias else None,
                )

    def _dense(self, x, name):
        # [B, T, H, hidden] -> [B, H, T, size]: heads moved in the einsum, not by a reshape.
        kernel = attention_utils.to_float32(getattr(self, f"{name}_kernel"))
        out = ops.einsum("bthk,hkl->bhtl", x, kernel)
        bias = getattr(self, f"{name}_bias")
        if bias is not None:
            out = out + attention_utils.to_float32(bias)[None, :, None, :]
        return out

    def synthetic_logits(self, query, length):
        """float32 synthetic logits `[batch or 1, heads, length, length]` for inputs `query`."""
        f32 = attention_utils.to_float32
        if self.mode == "random":
            logits = f32(self.random_logits)
            if length < self._length:  # a no-op slice still costs a copy and a scatter
                logits = logits[:, :length, :length]
            return logits[None]
        if self.mode == "factorized_random":
            r1 = f32(self.random_factor_1)[:, :length]
            r2 = f32(self.random_factor_2)[:, :length]
            return ops.einsum("htr,hsr->hts", r1, r2)[None]
        hidden = ops.einsum("btc,chk->bthk", f32(query), f32(self.hidden_kernel))
        if self.hidden_bias is not None:
            hidden = hidden + f32(self.hidden_bias)
        hidden = ops.relu(hidden)
        if self.mode == "dense":
            return self._dense(hidden, "output")[..., :length]
        a = self._dense(hidden, "factor_a")
        b = self._dense(hidden, "factor_b")
        logits = ops.tile(a, (1, 1, 1, self.factor_b)) * ops.repeat(b, self.factor_a, axis=-1)
        return logits[..., :length]

    def _attend(
        self, q, k, v, *, query, query_mask, key_mask, causal, training, attention_mask=None
    ):
        length = k.shape[1]
        self._check_length(length)
        logits = self.synthetic_logits(query, length)
        if self.mix_dot_product:
            q = attention_utils.to_float32(q) * (1.0 / math.sqrt(self.key_dim))
            logits = logits + ops.einsum("bqhd,bkhd->bhqk", q, attention_utils.to_float32(k))
        mask = key_mask[:, None, None, :]
        if causal:
            mask = ops.logical_and(mask, attention_utils.causal_mask(length, length))
        if attention_mask is not None:
            mask = ops.logical_and(mask, attention_mask[:, None, :, :])
        probs = self._dropout_probs(attention_utils.masked_softmax(logits, mask), training)
        return ops.einsum("bhqk,bkhd->bqhd", probs, v)

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Mixing values over every key, dot-product logits if mixed, and the dense MLP."""
        h, d, dv = self.num_heads, self.key_dim, self.value_dim
        flops = 2 * batch * h * query_length * key_length * dv
        if self.mix_dot_product:
            flops += 2 * batch * h * query_length * key_length * d
        if self.mode in ("dense", "factorized_dense"):
            full = self._length or int(key_length)
            a = math.ceil(math.sqrt(full))
            width = full if self.mode == "dense" else a + -(-full // a)
            flops += 2 * batch * h * query_length * d * width
        return flops

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "max_length": self.max_length,
                "mode": self.mode,
                "mix_dot_product": self.mix_dot_product,
                "factor_rank": self.factor_rank,
            }
        )
        return config
