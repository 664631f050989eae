"""Exact softmax attention in O(L) memory: online softmax over query and key chunks.

Entry points with one signature, on heads-first tensors `q [B, H, T, d]`, `k [B, H, S, d]`,
`v [B, H, S, dv]` and a boolean padding mask `key_mask [B, S]`:

- `chunked_attention_reference` (here): pure `keras.ops`, Python-unrolled over the static chunk
  counts and differentiated by the backend's autodiff (which keeps every tile for the backward
  pass). The tests' reference, and the path of backends without a kernel.
- `chunked_attention_tf.chunked_attention_tf`: a FlashAttention-style `tf.custom_gradient` in
  sequential `tf.while_loop`s (the forward keeps only the output and the row log-sum-exp; the
  backward recomputes each tile); it takes unknown lengths.
- `chunked_attention_jax.chunked_attention_jax`: the same algorithm as a `jax.custom_vjp` over
  `jax.lax.scan`s of tiles (FlashAttention-2's forward, a recomputing backward).
- `chunked_attention`: picks the kernel of the current Keras backend, else the reference. The
  backend modules are imported only when used, so this package never imports TensorFlow on
  another backend.

Any length works: T and S are padded internally to chunk multiples, the padded keys are masked
and the output is sliced back. Chunk sizes larger than a (static) length shrink to it.
Logits, exponentials, normalisers and accumulators are float32; the output is cast back to the
input dtype. A query with no allowed key at all (every key padded, or causally hidden) gets a
zero output row (full attention's -1e9 bias would give it the uniform average of the values).

Attention dropout (`dropout_rate > 0` with a `dropout_seed`) drops each tile's normalised
probabilities with the stateless mask of `attention_dropout.keep_mask`, regenerated identically
in the backward pass, so the result equals dense attention with that mask (`full` draws the
same one).

Causality aligns the first query with the first key (key j is visible to query i iff j <= i), as
`attention_utils.causal_mask` does; key chunks entirely above the diagonal are skipped.

Reference: Rabe & Staats, "Self-attention Does Not Need O(n^2) Memory", 2021; Dao et al.,
"FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness", NeurIPS 2022;
Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from lra_keras.layers.attention import attention_dropout, attention_utils

NEG_INF = attention_utils.NEG_INF


def check_inputs(q, k, v, key_mask, query_chunk_size, key_chunk_size, dropout_rate=0.0, seed=None):
    """Validates the kernels' arguments before anything is computed."""
    for arg, x in (("q", q), ("k", k), ("v", v)):
        if len(x.shape) != 4:
            raise ValueError(
                f"chunked_attention: `{arg}` must have shape [batch, heads, length, dim], "
                f"got shape {tuple(x.shape)}."
            )
    if len(key_mask.shape) != 2:
        raise ValueError(
            "chunked_attention: `key_mask` must be a [batch, key_length] boolean mask, "
            f"got shape {tuple(key_mask.shape)}."
        )
    check_chunk_sizes(query_chunk_size, key_chunk_size)
    s, sv = k.shape[2], v.shape[2]
    if s is not None and sv is not None and s != sv:
        raise ValueError(
            f"chunked_attention: `k` and `v` must have the same length, got {s} and {sv}."
        )
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(
            f"chunked_attention: `dropout_rate` must be in [0, 1), got {dropout_rate!r}."
        )
    if dropout_rate and seed is None:
        raise ValueError("chunked_attention: `dropout_rate > 0` needs a `seed` (integer scalar).")


def check_chunk_sizes(query_chunk_size, key_chunk_size, allow_none: bool = False) -> None:
    """Refuses a chunk size that is not a positive integer (or None, where it is chosen)."""
    for arg, size in (("query_chunk_size", query_chunk_size), ("key_chunk_size", key_chunk_size)):
        if size is None and allow_none:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(
                f"chunked_attention: `{arg}` must be a positive integer, got {size!r}."
            )


def pad_to_multiple(x, axis: int, multiple: int):
    """Zero-pads `axis` of `x` to a multiple of `multiple`; the length may be unknown."""
    if x.shape[axis] is not None:
        return attention_utils.pad_axis_to_multiple(x, axis, multiple)
    extra = (-ops.shape(x)[axis]) % multiple
    pad = [(0, 0)] * len(x.shape)
    pad[axis] = (0, extra)
    return ops.pad(x, pad)


def chunk_sizes(t, s, query_chunk_size: int, key_chunk_size: int) -> tuple[int, int]:
    """Chunk sizes, shrunk to a static length when it is shorter."""
    cq = query_chunk_size if t is None else max(1, min(query_chunk_size, t))
    ck = key_chunk_size if s is None else max(1, min(key_chunk_size, s))
    return cq, ck


def prepare(q, k, v, key_mask, query_chunk_size, key_chunk_size, scale):
    """Casts to float32, scales q, pads both lengths to chunk multiples; masks padded keys."""
    cq, ck = chunk_sizes(q.shape[2], k.shape[2], query_chunk_size, key_chunk_size)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    q = attention_utils.to_float32(q) * scale
    k = attention_utils.to_float32(k)
    v = attention_utils.to_float32(v)
    q = pad_to_multiple(q, 2, cq)
    k = pad_to_multiple(k, 2, ck)
    v = pad_to_multiple(v, 2, ck)
    # Padded as float (0 = padded) so no backend has to pad a boolean tensor.
    valid = ops.cast(ops.cast(key_mask, "bool"), "float32")
    valid = pad_to_multiple(valid, 1, ck) > 0.5
    return q, k, v, valid, cq, ck


def finish(out, q, dtype):
    """Slices the padded output back to the query length and casts it to `dtype`."""
    t = q.shape[2] if q.shape[2] is not None else ops.shape(q)[2]
    return ops.cast(out[:, :, :t], dtype)


def num_key_chunks(i: int, cq: int, ck: int, nk: int, causal: bool) -> int:
    """Key chunks query chunk `i` sees: all, or (causal) those not entirely above the diagonal."""
    if not causal:
        return nk
    return min(nk, ((i + 1) * cq - 1) // ck + 1)


def chunked_attention_reference(
    q,
    k,
    v,
    key_mask,
    causal: bool = False,
    query_chunk_size: int | None = None,
    key_chunk_size: int | None = None,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_seed=None,
):
    """Chunked exact attention in `keras.ops` (streaming max, normaliser and accumulator).

    Args:
        q: `[B, H, T, d]` queries.
        k: `[B, H, S, d]` keys.
        v: `[B, H, S, dv]` values.
        key_mask: boolean `[B, S]`, True = real key.
        causal: bool. Key j is visible to query i iff j <= i.
        query_chunk_size: int or None. Queries per chunk (None: `default_chunk_sizes`).
        key_chunk_size: int or None. Keys per chunk (None: `default_chunk_sizes`).
        scale: logit scale; `1/sqrt(d)` by default.
        dropout_rate: float. Attention dropout on the normalised probabilities.
        dropout_seed: integer scalar tensor; needed when `dropout_rate > 0`.

    Returns:
        `[B, H, T, dv]` in q's dtype; zero rows where a query has no allowed key.
    """
    query_chunk_size, key_chunk_size = resolve_chunk_sizes(q, k, query_chunk_size, key_chunk_size)
    check_inputs(q, k, v, key_mask, query_chunk_size, key_chunk_size, dropout_rate, dropout_seed)
    if q.shape[2] is None or k.shape[2] is None:
        raise ValueError(
            "chunked_attention_reference: the query and key lengths must be known when tracing "
            f"(it unrolls over the chunks), got {q.shape[2]} and {k.shape[2]}; the TensorFlow "
            "and JAX kernels take unknown lengths."
        )
    dtype = q.dtype
    q0 = q
    q, k, v, valid, cq, ck = prepare(q, k, v, key_mask, query_chunk_size, key_chunk_size, scale)
    nq, nk = q.shape[2] // cq, k.shape[2] // ck
    outputs = []
    for i in range(nq):
        qi = q[:, :, i * cq : (i + 1) * cq]
        m = denom = acc = None
        for j in range(num_key_chunks(i, cq, ck, nk, causal)):
            kj = k[:, :, j * ck : (j + 1) * ck]
            vj = v[:, :, j * ck : (j + 1) * ck]
            allowed = valid[:, None, None, j * ck : (j + 1) * ck]
            if causal and (j + 1) * ck - 1 > i * cq:
                tile_causal = attention_utils.causal_mask(cq, ck, i * cq, j * ck)
                allowed = ops.logical_and(allowed, tile_causal[None, None])
            s = ops.einsum("bhqd,bhkd->bhqk", qi, kj)
            # Masked before the exponential: a where() after it would send NaN gradients
            # through exp(+large) of the discarded branch.
            s = ops.where(allowed, s, NEG_INF)
            tile_max = ops.stop_gradient(ops.max(s, axis=-1, keepdims=True))
            m_new = tile_max if m is None else ops.maximum(m, tile_max)
            p = ops.exp(s - m_new) * ops.cast(allowed, "float32")
            # The normaliser sums the undropped probabilities; only the mixing is dropped.
            dropped = attention_dropout.apply_attention_dropout(
                p, dropout_seed, dropout_rate, i * cq, j * ck
            )
            pv = ops.einsum("bhqk,bhkd->bhqd", dropped, vj)
            if m is None:
                denom, acc = ops.sum(p, axis=-1, keepdims=True), pv
            else:
                alpha = ops.exp(m - m_new)
                denom = alpha * denom + ops.sum(p, axis=-1, keepdims=True)
                acc = alpha * acc + pv
            m = m_new
        outputs.append(acc / ops.where(denom > 0, denom, ops.ones_like(denom)))
    out = outputs[0] if nq == 1 else ops.concatenate(outputs, axis=2)
    return finish(out, q0, dtype)


# The default tiling bounds the working set of the WHOLE call (every batch x head at once):
# the scores of one tile, `batch * heads * query_chunk * key_chunk` float32 entries, stay within
# TILE_BUDGET_ENTRIES (2**20: 4 MiB of scores; the kernels keep about a dozen tile-sized
# temporaries alive, two tiles in flight, so about 50 MiB in all). That is 512 x 512 tiles for
# 4 heads of one example, 64 x 64 for LRA's batch of 32 x 8 heads. A call whose entire score
# tensor `[B, H, T, S]` fits the budget runs as one dense tile (plain ops, no loop); any other
# call is tiled, so memory grows linearly with the length at every batch size.
# Per (batch, head) a tile has at most CACHE_TILE_ENTRIES (512 x 512: 1 MiB of scores per
# head, which stays in cache; measured on the TensorFlow kernel, 2 CPU cores, 4 heads x 64,
# forward+backward, `benchmarks.chunked_tiles`: 512-tiles ran at 1.11x of dense at 4K on one
# core, 1024-tiles at 1.36x). No chunk is cut below MIN_CHUNK_SIZE (32): only where
# batch * heads exceeds 1024 does the 32 x 32 floor put a tile over the budget, and such a
# tile is still smaller than the queries themselves (heads of 32 or more).
# Set the chunk sizes explicitly to trade memory for speed.
TILE_BUDGET_ENTRIES = 2**20
CACHE_TILE_ENTRIES = 512 * 512
MIN_CHUNK_SIZE = 32
# The batch size assumed where it is unknown when tracing (LRA's batch): an unknown batch must
# not lift the bound, and a smaller real batch only gets smaller tiles than it could.
UNKNOWN_BATCH = 32


def _even_chunk(length, most: int) -> int:
    """At most `most`, splitting a static length into equal chunks: 8193 tokens (8K + CLS) in
    chunks of at most 512 take 17 chunks of 482, not 17 of 512 padded to 8704 (13% more
    tile work)."""
    most = max(1, most)
    if length is None:
        return most
    length = max(length, 1)
    return -(-length // -(-length // most))


def batch_heads(batch, heads) -> int:
    """How many (batch, head) pairs one call computes; an unknown batch is `UNKNOWN_BATCH`."""
    return (UNKNOWN_BATCH if batch is None else max(batch, 1)) * max(heads or 1, 1)


def tile_entries_per_head(batch, heads) -> int:
    """Scores one tile may hold per (batch, head) under the whole-call budget."""
    return max(
        MIN_CHUNK_SIZE * MIN_CHUNK_SIZE,
        min(CACHE_TILE_ENTRIES, TILE_BUDGET_ENTRIES // batch_heads(batch, heads)),
    )


def default_chunk_sizes(
    batch, heads, t, s, query_chunk_size=None, key_chunk_size=None
) -> tuple[int, int]:
    """Chunk sizes for a call on `[batch, heads, t|s, d]` tensors (any of them None if unknown).

    The given sizes are kept. Left None, they are chosen so that one tile of the whole call,
    `batch * heads * query_chunk * key_chunk` scores, fits `TILE_BUDGET_ENTRIES` (see there):
    one tile covering both lengths exactly when the whole `[B, H, T, S]` score tensor fits,
    else near-square tiles (the shorter length whole when it fits), each length split into
    equal chunks.
    """
    check_chunk_sizes(query_chunk_size, key_chunk_size, allow_none=True)
    if query_chunk_size is not None and key_chunk_size is not None:
        return query_chunk_size, key_chunk_size
    static = t is not None and s is not None
    given = query_chunk_size is not None or key_chunk_size is not None
    if static and not given and batch_heads(batch, heads) * t * s <= TILE_BUDGET_ENTRIES:
        return max(t, 1), max(s, 1)
    per_head = tile_entries_per_head(batch, heads)
    if query_chunk_size is not None:
        cq = min(query_chunk_size, t) if t is not None else query_chunk_size
        return query_chunk_size, _even_chunk(s, max(MIN_CHUNK_SIZE, per_head // max(cq, 1)))
    if key_chunk_size is not None:
        ck = min(key_chunk_size, s) if s is not None else key_chunk_size
        return _even_chunk(t, max(MIN_CHUNK_SIZE, per_head // max(ck, 1))), key_chunk_size
    side = max(MIN_CHUNK_SIZE, math.isqrt(per_head))
    if t is not None and t <= side:
        cq = max(t, 1)
        return cq, _even_chunk(s, max(MIN_CHUNK_SIZE, per_head // cq))
    if s is not None and s <= side:
        ck = max(s, 1)
        return _even_chunk(t, max(MIN_CHUNK_SIZE, per_head // ck)), ck
    return _even_chunk(t, side), _even_chunk(s, side)


def resolve_chunk_sizes(q, k, query_chunk_size, key_chunk_size) -> tuple:
    """The call's chunk sizes: the given ones, else `default_chunk_sizes` for q's batch, heads
    and the lengths (a malformed q or k is left to `check_inputs` to refuse)."""
    if len(q.shape) != 4 or len(k.shape) != 4:
        return query_chunk_size, key_chunk_size
    b, h, t, s = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    return default_chunk_sizes(b, h, t, s, query_chunk_size, key_chunk_size)


def one_tile_attention(
    q,
    k,
    v,
    key_mask,
    causal: bool = False,
    scale=None,
    dropout_rate=0.0,
    dropout_seed=None,
    heads_last: bool = False,
):
    """Exact attention as one dense tile (static lengths): `full`'s masked softmax, with the
    chunked kernels' conventions (float32 softmax, zero rows where a query has no allowed key,
    the same dropout mask). Differentiated by the backend's autodiff.

    `heads_last=True` takes and returns `[B, T, H, d]` (the layer's layout: no transposes).
    """
    axis = 1 if heads_last else 2
    t, s = q.shape[axis], k.shape[axis]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    valid = ops.cast(key_mask, "bool")
    layout = "bqhd" if heads_last else "bhqd"
    key_layout = layout.replace("q", "k")
    # Scaled before the product, as `full` does: a pass over [T, d], not over [T, S].
    logits = ops.einsum(f"{layout},{key_layout}->bhqk", q * ops.cast(scale, q.dtype), k)
    allowed = valid[:, None, None, :]
    if causal and s:
        allowed = ops.logical_and(allowed, attention_utils.causal_mask(t, s)[None, None])
        # Query i sees keys 0..min(i, S-1): it has one iff a real key is among them.
        seen = ops.cumsum(ops.cast(valid, "int32"), axis=-1)
        has_key = (ops.take(seen, np.minimum(np.arange(t), s - 1), axis=1) > 0)[:, None, :, None]
    else:
        has_key = ops.any(valid, axis=-1)[:, None, None, None]
    probs = attention_utils.masked_softmax(logits, allowed)
    probs = attention_dropout.apply_attention_dropout(probs, dropout_seed, dropout_rate)
    out = ops.einsum(f"bhqk,{key_layout}->{layout}", ops.cast(probs, v.dtype), v)
    if heads_last:
        has_key = ops.transpose(has_key, (0, 2, 1, 3))
    # masked_softmax gives a row with no allowed key the uniform average; these kernels zero it.
    return ops.where(has_key, out, ops.zeros((), out.dtype))


def chunked_attention(
    q,
    k,
    v,
    key_mask,
    causal: bool = False,
    query_chunk_size: int | None = None,
    key_chunk_size: int | None = None,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_seed=None,
):
    """Chunked exact attention on the current Keras backend (see the module docstring).

    Chunk sizes left `None` are chosen from the batch size, heads and lengths so that the whole
    call's tile fits `TILE_BUDGET_ENTRIES` (`default_chunk_sizes`). A call whose
    static lengths fit in one tile runs `one_tile_attention` on every backend; otherwise the
    TensorFlow backend gets `chunked_attention_tf`, JAX `chunked_attention_jax`, the others
    `chunked_attention_reference`; all take the same arguments and give the same result.
    """
    backend = keras.backend.backend()
    query_chunk_size, key_chunk_size = resolve_chunk_sizes(q, k, query_chunk_size, key_chunk_size)
    t, s = q.shape[2], k.shape[2]
    check_inputs(q, k, v, key_mask, query_chunk_size, key_chunk_size, dropout_rate, dropout_seed)
    if t is not None and s is not None and t <= query_chunk_size and s <= key_chunk_size:
        # One tile covers the sequence: its memory is the tile bound already, and plain ops
        # with autodiff skip the kernels' loop and recomputing backward.
        return ops.cast(
            one_tile_attention(q, k, v, key_mask, causal, scale, dropout_rate, dropout_seed),
            q.dtype,
        )
    if backend == "tensorflow":
        from lra_keras.layers.kernels.chunked_attention_tf import chunked_attention_tf as fn
    elif backend == "jax":
        from lra_keras.layers.kernels.chunked_attention_jax import chunked_attention_jax as fn
    else:
        fn = chunked_attention_reference
    return fn(
        q,
        k,
        v,
        key_mask,
        causal=causal,
        query_chunk_size=query_chunk_size,
        key_chunk_size=key_chunk_size,
        scale=scale,
        dropout_rate=dropout_rate,
        dropout_seed=dropout_seed,
    )


# ----------------------------------------------------------------------- fused exact attention


def fused_attention_supported(q, k, v, *, causal: bool, dropout_active: bool) -> bool:
    """Whether the backend has a fused exact kernel for this call (heads-last `[B, T, H, d]`).

    Today: cuDNN flash attention on JAX on a GPU (`chunked_attention_jax`), for float16 and
    bfloat16 with equal head sizes (a multiple of 8, at most 128) and no attention dropout.
    Causal cross-attention is left to the exact paths (cuDNN aligns the diagonal differently
    when the lengths differ).
    """
    if keras.backend.backend() != "jax":
        return False
    if causal and (q.shape[1] is None or q.shape[1] != k.shape[1]):
        return False
    from lra_keras.layers.kernels import chunked_attention_jax

    return chunked_attention_jax.fused_attention_supported(q, k, v, dropout_active)


def fused_attention(q, k, v, key_mask, causal: bool, scale: float, fallback, implementation=None):
    """The backend's fused exact attention on heads-last tensors, or `fallback()` at run time.

    Call only where `fused_attention_supported` (or, with `implementation="xla"` on JAX, to run
    the fused path's unfused reference on any device). Returns `[B, T, H, dv]`.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            f"fused_attention: no fused kernel on the {keras.backend.backend()!r} backend."
        )
    from lra_keras.layers.kernels import chunked_attention_jax

    return chunked_attention_jax.fused_attention_jax(
        q, k, v, key_mask, causal, scale, fallback, implementation=implementation
    )
