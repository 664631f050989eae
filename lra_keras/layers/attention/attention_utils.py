"""Helpers shared by the attention variants: masks, masked softmax, block padding.

Every variant builds its biases, softmaxes and block paddings here, so that the numerical
conventions of the spec (section 0 of `attention_specs.md`) live in one place: boolean masks with
True = real token, an additive bias of -1e9 in float32 (float16 cannot hold it, and -inf turns a
fully masked row into NaN), softmax and normalisers in float32.
"""

from __future__ import annotations

import keras
from keras import ops

NEG_INF = -1e9


def to_float32(x):
    """Casts a tensor to float32 if it is not already (softmax and sums run in float32)."""
    if keras.backend.standardize_dtype(x.dtype) != "float32":
        return ops.cast(x, "float32")
    return x


def mask_to_bias(mask):
    """Turns a boolean mask (True = attend) into a float32 additive bias (0 or -1e9)."""
    return ops.where(mask, ops.zeros((), "float32"), ops.full((), NEG_INF, "float32"))


def masked_softmax(logits, mask=None, axis=-1):
    """Softmax in float32 over `axis` with positions where `mask` is False excluded.

    A row with no allowed position gives a uniform (finite) distribution; the base layer zeroes
    such rows at padded queries, and a real query with no key at all is the caller's choice.
    """
    logits = to_float32(logits)
    if mask is not None:
        logits = logits + mask_to_bias(mask)
    return ops.softmax(logits, axis=axis)


def causal_mask(query_length: int, key_length: int, query_offset=0, key_offset=0):
    """Boolean [T, S] mask allowing key j for query i when key_offset+j <= query_offset+i."""
    qi = ops.arange(query_length)[:, None] + query_offset
    kj = ops.arange(key_length)[None, :] + key_offset
    return kj <= qi


def pad_axis_to_multiple(x, axis: int, multiple: int, value=0):
    """Pads `x` at the end of `axis` to a multiple of `multiple` (static shapes only).

    Adds (-L) mod `multiple` positions, never a whole extra block (the LRA reference's bug).
    """
    length = x.shape[axis]
    extra = (-length) % multiple
    if extra == 0:
        return x
    axis = axis % len(x.shape)
    pad = [(0, 0)] * len(x.shape)
    pad[axis] = (0, extra)
    return ops.pad(x, pad, constant_values=value)


def heads_first(x):
    """[B, L, H, d] -> [B, H, L, d]."""
    return ops.transpose(x, (0, 2, 1, 3))


def heads_last(x):
    """[B, H, L, d] -> [B, L, H, d]."""
    return ops.transpose(x, (0, 2, 1, 3))


def zero_padded(x, mask):
    """Zeroes positions of `x` ([B, L, ...]) where the [B, L] boolean `mask` is False."""
    mask = ops.cast(mask, x.dtype)
    for _ in range(len(x.shape) - 2):
        mask = ops.expand_dims(mask, -1)
    return x * mask
