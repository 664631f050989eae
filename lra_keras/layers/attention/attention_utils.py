"""Helpers shared by the attention variants: masks, masked softmax, block padding.

Every variant builds its biases, softmaxes and block paddings here, so that the numerical
conventions of the spec (section 0 of `attention_specs.md`) live in one place: boolean masks with
True = real token, an additive bias of -1e9 in float32 (float16 cannot hold it, and -inf turns a
fully masked row into NaN), softmax and normalisers in float32.
"""

from __future__ import annotations

import math
import numbers
import random

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


def dim(x, axis: int):
    """The size of `axis` of `x`: a Python int when static, else a scalar tensor.

    Variants that work on `keras.Input((None, dim))` build their masks, paddings and block
    counts from this, so that an unknown length flows through as a tensor.
    """
    size = x.shape[axis]
    return int(size) if size is not None else ops.shape(x)[axis]


def shape_of(x) -> list:
    """`x`'s shape with static sizes as ints and unknown ones as scalar tensors."""
    return [dim(x, i) for i in range(len(x.shape))]


def causal_mask(query_length, key_length, query_offset=0, key_offset=0):
    """Boolean [T, S] mask allowing key j for query i when key_offset+j <= query_offset+i.

    The lengths may be tensors (an unknown length, from `dim`).
    """
    qi = ops.arange(query_length)[:, None] + query_offset
    kj = ops.arange(key_length)[None, :] + key_offset
    return kj <= qi


def pad_axis_to_multiple(x, axis: int, multiple, value=0):
    """Pads `x` at the end of `axis` to a multiple of `multiple`.

    Adds (-L) mod `multiple` positions, never a whole extra block (the LRA reference's bug).
    An unknown length (or `multiple`) pads by a computed amount.
    """
    length = dim(x, axis)
    extra = (-length) % multiple
    if isinstance(extra, int) and extra == 0:
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
    mask = ops.cast(mask, "bool")
    for _ in range(len(x.shape) - 2):
        mask = ops.expand_dims(mask, -1)
    # `where`, not a product: inf or NaN stored at a padded position must still give 0.
    return ops.where(mask, x, ops.zeros((), x.dtype))


def merge_masks(*masks):
    """The logical AND of the boolean masks that are not None; None when all are None.

    MultiHeadAttention merges its padding masks this way: a position is real only if every
    mask that was given says so.
    """
    merged = None
    for mask in masks:
        if mask is not None:
            merged = mask if merged is None else ops.logical_and(merged, mask)
    return merged


def clone_initializer(initializer, offset: int):
    """A fresh copy of `initializer` with its seed (if any) moved by `offset`.

    Every weight of a layer takes its own clone with its own offset: a Keras initializer with
    a fixed seed draws the same values for every variable of the same shape, so clones that
    keep the seed make weights that must differ (Q and K, Linformer's E and F) equal at init.
    """
    config = initializer.get_config()
    if config.get("seed") is not None:
        config["seed"] = int(config["seed"]) + int(offset)
    return initializer.__class__.from_config(config)


def structure_seed(seed) -> int:
    """The seed of the random structure a layer draws at build (tables, rotations, features).

    The layer's `seed` when given; otherwise one drawn from Python's `random`, which
    `keras.utils.set_random_seed` seeds (as Keras's own `SeedGenerator(None)` does): runs are
    reproducible under a global seed, and never read OS entropy or NumPy's global state. Plain
    Python, so a layer can be built lazily inside a traced function or `strategy.run`.
    """
    if seed is not None:
        return int(seed)
    return random.randint(1, 2**31 - 1)


def without_keras_mask(x):
    """`x` without its Keras implicit mask (`Embedding(mask_zero=True)`), as a real copy.

    A layer that consumes the mask itself hands its sublayers (which do not support masking)
    an unmasked tensor. The copy is `ops.copy`: `ops.identity(n)` builds an n x n identity
    matrix in Keras 3, it does not copy a tensor.
    """
    if getattr(x, "_keras_mask", None) is None:
        return x
    return ops.copy(x)


def check_max_length(length, max_length: int, variant: str, holds: str) -> None:
    """Refuses an unknown length or one above `max_length` (Linformer, Synthesizer).

    `holds` says what `max_length` sizes, e.g. "its projections have `max_length` rows".
    """
    if length is None:
        raise ValueError(
            f"{variant} needs a static sequence length ({holds}, `max_length`={max_length}); "
            "got an unknown length."
        )
    if length > max_length:
        raise ValueError(
            f"{variant}: the sequence length {length} is longer than `max_length`="
            f"{max_length}; build the layer with a larger `max_length`."
        )


def check_attention_mask(variant: str, mask, query_shape, key_shape) -> None:
    """Refuses a dense `attention_mask` whose shape is not `[batch, T, S]` (full, synthesizer).

    Static sizes are compared where both are known; a batch of 1 broadcasts, as it does for
    MultiHeadAttention.
    """
    shape = tuple(mask.shape)
    expected = (query_shape[0], query_shape[1], key_shape[1])
    fits = len(shape) == 3 and all(
        got is None or want is None or got == want or (axis == 0 and got == 1)
        for axis, (got, want) in enumerate(zip(shape, expected, strict=True))
    )
    if not fits:
        raise ValueError(
            f"{variant}: `attention_mask` must have shape [batch, T, S] = {expected} (True = "
            f"query t may attend to key s), got shape {shape}."
        )


def check_grid_length(length, grid, arg: str, variant: str) -> None:
    """Refuses a known length that is not `grid[0] * grid[1]` (axial, image_local)."""
    if length is None or grid is None:
        return
    h, w = grid
    if length != h * w:
        raise ValueError(
            f"{variant}: the sequence length must equal {arg}[0] * {arg}[1] = {h} * {w} = "
            f"{h * w}, got length {length}."
        )


def static_length(x, axis: int, variant: str) -> int:
    """The static size of `axis` of `x`; a clear ValueError when it is unknown."""
    length = x.shape[axis]
    if length is None:
        raise ValueError(
            f"{variant} needs a static sequence length (reshapes into blocks); got shape "
            f"{tuple(x.shape)}. Give the input a fixed length, e.g. keras.Input((L, dim))."
        )
    return int(length)


def to_blocks(x, block_size, axis: int, value=0):
    """Pads `axis` of `x` to a multiple of `block_size` and splits it into (blocks, block_size).

    E.g. [B, H, L, d] with axis=2 -> [B, H, ceil(L/b), b, d]; pads with `value` (False for a
    boolean mask, so the added positions count as padding). Works on an unknown length.
    """
    axis = axis % len(x.shape)
    x = pad_axis_to_multiple(x, axis, block_size, value=value)
    shape = shape_of(x)
    new_shape = shape[:axis] + [shape[axis] // block_size, block_size] + shape[axis + 1 :]
    return ops.reshape(x, reshape_target(new_shape))


def from_blocks(x, length, axis: int):
    """Inverse of `to_blocks`: merges `axis` and `axis + 1` and slices back to `length`."""
    axis = axis % len(x.shape)
    shape = shape_of(x)
    merged = shape[:axis] + [shape[axis] * shape[axis + 1]] + shape[axis + 2 :]
    x = ops.reshape(x, reshape_target(merged))
    if isinstance(merged[axis], int) and isinstance(length, int) and merged[axis] == length:
        return x
    index = [slice(None)] * len(merged)
    index[axis] = slice(0, length)
    return x[tuple(index)]


def reshape_target(shape: list):
    """A reshape target from ints and scalar tensors (`shape_of`): a tuple when all static."""
    if all(isinstance(d, int) for d in shape):
        return tuple(shape)
    return ops.stack([ops.cast(d, "int32") for d in shape])


def band_blocks(x, axis: int, before: int, after: int, value=0):
    """Each block of `x` joined with its `before` previous and `after` next blocks.

    `x` is `[..., nb, b, ...]` with the blocks on `axis` and their positions on `axis + 1`;
    the result is `[..., nb, (before + 1 + after) * b, ...]`: blocks n - before .. n + after
    in order, with blocks past either end filled with `value` (False for a
    mask). The banded variants (sparse, longformer, bigbird) score a query block against
    this band. Works on an unknown number of blocks.
    """
    axis = axis % len(x.shape)
    nb = dim(x, axis)
    pad = [(0, 0)] * len(x.shape)
    pad[axis] = (before, after)
    padded = ops.pad(x, pad, constant_values=value) if before or after else x
    index = [slice(None)] * len(x.shape)
    shifted = []
    for shift in range(before + after + 1):
        index[axis] = slice(shift, shift + nb)
        shifted.append(padded[tuple(index)])
    return ops.concatenate(shifted, axis=axis + 1) if len(shifted) > 1 else shifted[0]


def masked_softmax_parts(logits: list, masks: list) -> list:
    """One float32 softmax over several key sets at once (e.g. a band plus gathered columns).

    `logits[i]` and `masks[i]` (boolean, broadcastable to `logits[i]`) are one key set each;
    the softmax runs over their concatenation on the last axis, and the probabilities come back
    split the same way. The masks are applied as biases before concatenating, so they are
    never broadcast to the logits' size.
    """
    biased = [to_float32(x) + mask_to_bias(m) for x, m in zip(logits, masks, strict=True)]
    if len(biased) == 1:
        return [ops.softmax(biased[0], axis=-1)]
    probs = ops.softmax(ops.concatenate(biased, axis=-1), axis=-1)
    sizes = [dim(x, -1) for x in logits]
    if all(isinstance(size, int) for size in sizes):
        splits = [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]
        return ops.split(probs, splits, axis=-1)
    parts, start = [], 0
    for size in sizes:  # an unknown key-set size: slices instead of a static split
        parts.append(probs[..., start : start + size])
        start = start + size
    return parts


def checked_int(
    value, arg: str, variant: str, minimum: int = 1, allow_none: bool = False
) -> int | None:
    """Validates an integer argument >= `minimum` before any layer state is made.

    Booleans and floats are refused rather than truncated (`block_size=63.5` is a mistake, not a
    request for 63); numpy integers are accepted, since configs are often computed with numpy.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        expected = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{variant}: `{arg}` must be {expected}, got {value!r}.")
    return int(value)


def int_pair(value, arg: str, variant: str, minimum: int = 1) -> tuple[int, int]:
    """Validates a (height, width)-style pair of ints >= `minimum`; a clear ValueError if not."""
    try:
        pair = tuple(int(x) for x in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or min(pair) < minimum:
        raise ValueError(
            f"{variant}: `{arg}` must be a pair of integers >= {minimum} (height, width), "
            f"got {value!r}."
        )
    return pair


def gather_rows(x, index, axis: int):
    """`take_along_axis(x, index, axis)` for an index that is the same on every trailing axis.

    `x` is `[*lead, L, *trail]`; `index` (integer) is `[*lead, M]`, or `[*lead, M, 1, ...]`, its
    leading axes broadcastable to `x`'s; the result is `[*lead, M, *trail]`. It gathers whole
    rows of the trailing axes (one `take` on a `[N * L, prod(trail)]` matrix). keras'
    `take_along_axis` broadcasts the index over the trailing axes and transposes: on the TF
    backend ~10x slower for 128 features (and as slow in its scatter gradient).
    """
    axis = axis % len(x.shape)
    length, size = int(x.shape[axis]), int(index.shape[axis])
    trailing = tuple(int(d) for d in x.shape[axis + 1 :])
    lead = tuple(ops.shape(x)[:axis])
    index = ops.broadcast_to(ops.reshape(index, ops.shape(index)[: axis + 1]), lead + (size,))
    index = ops.reshape(index, (-1, size))
    # Row offsets without an arange over the (possibly dynamic) leading size.
    rows = ops.cumsum(ops.ones_like(index[:, :1]), axis=0) - 1
    flat = ops.reshape(index + rows * length, (-1,))
    width = math.prod(trailing)
    out = ops.take(ops.reshape(x, (-1, width)), flat, axis=0)
    return ops.reshape(out, lead + (size,) + trailing)


def gather_permutation(x, permutation, inverse_permutation, axis: int):
    """`take_along_axis(x, permutation, axis)` for a permutation of `axis` (e.g. a sort order).

    Its gradient gathers the upstream gradient with `inverse_permutation` instead of the
    scatter-add that autodiff makes of a gather (non-deterministic on GPU, and slower), as trax
    does for LSH sorting. `permutation` and `inverse_permutation` (integer, same shape) must be
    broadcastable to `x` without enlarging it (size 1 on the trailing feature axes, say), and
    need no gradient.
    """

    @ops.custom_gradient
    def gather(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return gather_rows(upstream, inverse_permutation, axis)

        return gather_rows(x, permutation, axis), grad

    return gather(x)
