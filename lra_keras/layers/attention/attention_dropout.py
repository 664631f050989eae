"""Attention dropout as a stateless function of (seed, batch, head, query, key).

`keras.layers.Dropout` draws one mask for a whole `[B, H, T, S]` probability tensor, so a
kernel that never forms that tensor (`chunked`, which visits it tile by tile, twice: forward and
recomputing backward) cannot reproduce it. Here the keep/drop decision of entry (b, h, i, j) is
a counter-based hash of the per-call seed and those four indices, so any tile of the mask can
be regenerated on its own, on any backend, and `full` and `chunked` drop the same entries for
the same seed. The hash is "lowbias32" (Chris Wellons' integer hash, full avalanche) chained
over the indices, in `uint32` `keras.ops`; an entry is kept when its hash is at least
`rate * 2**32`, and kept probabilities are scaled by `1 / (1 - rate)`, as `Dropout` does.

Reference: Dao et al., "FlashAttention: Fast and Memory-Efficient Exact Attention with
IO-Awareness", NeurIPS 2022 (dropout regenerated in the backward pass from the RNG state).
"""

from __future__ import annotations

import keras
from keras import ops

# Odd constants (golden-ratio and two others) that spread consecutive indices before hashing.
_BATCH_HEAD_MULTIPLIER = 0x9E3779B9
_QUERY_MULTIPLIER = 0x85EBCA6B
_KEY_MULTIPLIER = 0xC2B2AE35


def _u32(value):
    return ops.cast(value, "uint32")


def _hash(x):
    """lowbias32: a bijective uint32 -> uint32 mix in which every input bit flips ~half the bits."""
    x = ops.bitwise_xor(x, ops.right_shift(x, _u32(16)))
    x = ops.multiply(x, _u32(0x7FEB352D))
    x = ops.bitwise_xor(x, ops.right_shift(x, _u32(15)))
    x = ops.multiply(x, _u32(0x846CA68B))
    return ops.bitwise_xor(x, ops.right_shift(x, _u32(16)))


def draw_dropout_seed(seed_generator):
    """One int32 seed per call from a layer's `keras.random.SeedGenerator`."""
    return keras.random.randint((), 0, 2**31 - 1, seed=seed_generator, dtype="int32")


def keep_mask(seed, rate: float, batch, heads: int, query_positions, key_positions):
    """Boolean `[B, H, Tq, Sk]`: True where the probability of (b, h, i, j) is kept.

    Args:
        seed: integer scalar tensor, the per-call seed (`draw_dropout_seed`).
        rate: float in [0, 1), the dropout rate.
        batch: the batch size (an int or a scalar tensor).
        heads: int, the number of heads.
        query_positions: integer `[Tq]` absolute query indices i of the tile.
        key_positions: integer `[Sk]` absolute key indices j of the tile.
    """
    b = ops.reshape(_u32(ops.arange(batch)), (-1, 1, 1, 1))
    h = ops.reshape(_u32(ops.arange(heads)), (1, -1, 1, 1))
    i = ops.reshape(_u32(query_positions), (1, 1, -1, 1))
    j = ops.reshape(_u32(key_positions), (1, 1, 1, -1))
    stream = _hash(_u32(seed) + _u32(0x632BE5AB))
    stream = _hash(ops.bitwise_xor(stream, (b * _u32(heads) + h) * _u32(_BATCH_HEAD_MULTIPLIER)))
    stream = _hash(ops.bitwise_xor(stream, i * _u32(_QUERY_MULTIPLIER)))
    bits = _hash(ops.bitwise_xor(stream, j * _u32(_KEY_MULTIPLIER)))
    threshold = min(int(round(float(rate) * 2.0**32)), 2**32 - 1)
    return ops.greater_equal(bits, _u32(threshold))


def tile_keep_mask(tile, seed, rate: float, query_offset=0, key_offset=0, batch=None, heads=None):
    """`keep_mask` of a `[B, H, Tq, Sk]` tile at the given offsets (None when `rate == 0`).

    `batch` and `heads` default to the tile's own; the offsets may be tensors (loop indices).
    """
    if not rate:
        return None
    shape = ops.shape(tile)
    batch = shape[0] if batch is None else batch
    heads = int(tile.shape[1]) if heads is None else heads
    query_positions = ops.arange(shape[2]) + query_offset
    key_positions = ops.arange(shape[3]) + key_offset
    return keep_mask(seed, rate, batch, heads, query_positions, key_positions)


def drop(x, keep, rate: float):
    """`x` with the entries `keep` is False at zeroed and the rest scaled by `1 / (1 - rate)`
    (`x` itself when `keep` is None). A backward pass applies the same mask to the gradient."""
    if keep is None:
        return x
    scale = ops.cast(1.0 / (1.0 - float(rate)), x.dtype)
    return ops.where(keep, x * scale, ops.zeros((), x.dtype))


def apply_attention_dropout(
    probs, seed, rate: float, query_offset=0, key_offset=0, batch=None, heads=None
):
    """Drops entries of float `probs [B, H, Tq, Sk]` (a tile at the given offsets) and rescales.

    `rate == 0` returns `probs` unchanged. `batch` and `heads` default to `probs`' own; the
    offsets may be tensors (loop indices).
    """
    keep = tile_keep_mask(probs, seed, rate, query_offset, key_offset, batch, heads)
    return drop(probs, keep, rate)
