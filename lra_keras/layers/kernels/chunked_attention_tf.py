"""Exact softmax attention in O(L) memory: online softmax over query and key chunks.

Three entry points with one signature, all on heads-first tensors `q [B, H, T, d]`,
`k [B, H, S, d]`, `v [B, H, S, dv]` and a boolean padding mask `key_mask [B, S]`:

- `chunked_attention_reference`: pure `keras.ops`, Python-unrolled over the static chunk counts;
  differentiated by the backend's autodiff (which keeps every tile for the backward pass). Used
  by the tests and by the JAX and PyTorch backends.
- `chunked_attention_tf`: a FlashAttention-style `tf.custom_gradient`. The forward keeps only
  the output and the row log-sum-exp; the backward recomputes each tile's probabilities from the
  saved log-sum-exp. Both run in `tf.while_loop(..., parallel_iterations=1)`: TensorFlow's
  executor otherwise runs several chunks at once and gives back most of the memory saving
  (DESIGN.md section 1).
- `chunked_attention`: picks the TensorFlow kernel on the TensorFlow backend, else the reference.

Any length works: T and S are padded internally to chunk multiples, the padded keys are masked
and the output is sliced back. Chunk sizes larger than a length shrink to it. Logits, exponentials,
normalisers and accumulators are float32; the output is cast back to the input dtype. A query
with no allowed key at all (every key padded, or causally hidden) gets a zero output row (full
attention's -1e9 bias would give it the uniform average of the values instead).

Causality aligns the first query with the first key (key j is visible to query i iff j <= i), as
`attention_utils.causal_mask` does; key chunks entirely above the diagonal are skipped.

Reference: Rabe & Staats, "Self-attention Does Not Need O(n^2) Memory", 2021; Dao et al.,
"FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness", NeurIPS 2022.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils

NEG_INF = attention_utils.NEG_INF


def _check_inputs(q, k, v, key_mask, query_chunk_size, key_chunk_size):
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
    for arg, size in (("query_chunk_size", query_chunk_size), ("key_chunk_size", key_chunk_size)):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(
                f"chunked_attention: `{arg}` must be a positive integer, got {size!r}."
            )
    t, s = q.shape[2], k.shape[2]
    if t is None or s is None:
        raise ValueError(
            "chunked_attention: the query and key lengths must be known when tracing (the chunk "
            f"counts are static), got query length {t} and key length {s}."
        )
    if v.shape[2] != s:
        raise ValueError(
            f"chunked_attention: `k` and `v` must have the same length, got {s} and {v.shape[2]}."
        )


def _prepare(q, k, v, key_mask, query_chunk_size, key_chunk_size, scale):
    """Casts to float32, scales q, pads both lengths to chunk multiples; masks padded keys."""
    _check_inputs(q, k, v, key_mask, query_chunk_size, key_chunk_size)
    t, s = q.shape[2], k.shape[2]
    cq = max(1, min(query_chunk_size, t))
    ck = max(1, min(key_chunk_size, s))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    q = attention_utils.to_float32(q) * scale
    k = attention_utils.to_float32(k)
    v = attention_utils.to_float32(v)
    q = attention_utils.pad_axis_to_multiple(q, 2, cq)
    k = attention_utils.pad_axis_to_multiple(k, 2, ck)
    v = attention_utils.pad_axis_to_multiple(v, 2, ck)
    # Padded as float (0 = padded) so no backend has to pad a boolean tensor.
    valid = ops.cast(ops.cast(key_mask, "bool"), "float32")
    valid = attention_utils.pad_axis_to_multiple(valid, 1, ck) > 0.5
    return q, k, v, valid, cq, ck


def _finish(out, t, dtype):
    return ops.cast(out[:, :, :t], dtype)


def _num_key_chunks(i: int, cq: int, ck: int, nk: int, causal: bool) -> int:
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
    query_chunk_size: int = 1024,
    key_chunk_size: int = 1024,
    scale: float | None = None,
):
    """Chunked exact attention in `keras.ops` (streaming max, normaliser and accumulator).

    Args:
        q: `[B, H, T, d]` queries.
        k: `[B, H, S, d]` keys.
        v: `[B, H, S, dv]` values.
        key_mask: boolean `[B, S]`, True = real key.
        causal: bool. Key j is visible to query i iff j <= i.
        query_chunk_size: int. Queries per chunk.
        key_chunk_size: int. Keys per chunk.
        scale: logit scale; `1/sqrt(d)` by default.

    Returns:
        `[B, H, T, dv]` in q's dtype; zero rows where a query has no allowed key.
    """
    t, dtype = q.shape[2], q.dtype
    q, k, v, valid, cq, ck = _prepare(q, k, v, key_mask, query_chunk_size, key_chunk_size, scale)
    nq, nk = q.shape[2] // cq, k.shape[2] // ck
    outputs = []
    for i in range(nq):
        qi = q[:, :, i * cq : (i + 1) * cq]
        m = denom = acc = None
        for j in range(_num_key_chunks(i, cq, ck, nk, causal)):
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
            pv = ops.einsum("bhqk,bhkd->bhqd", p, vj)
            if m is None:
                denom, acc = ops.sum(p, axis=-1, keepdims=True), pv
            else:
                alpha = ops.exp(m - m_new)
                denom = alpha * denom + ops.sum(p, axis=-1, keepdims=True)
                acc = alpha * acc + pv
            m = m_new
        outputs.append(acc / ops.where(denom > 0, denom, ops.ones_like(denom)))
    out = outputs[0] if nq == 1 else ops.concatenate(outputs, axis=2)
    return _finish(out, t, dtype)


# ----------------------------------------------------------------------------- TensorFlow kernel


def _tf_chunks(tf, x, n: int, c: int):
    """[B, H, n*c, ...] -> [n, B, H, c, ...] so a loop index can `tf.gather` a whole chunk."""
    rest = list(x.shape[3:])
    x = tf.reshape(x, [-1, x.shape[1], n, c] + rest)
    return tf.transpose(x, [2, 0, 1, 3] + list(range(4, 4 + len(rest))))


def _tf_unchunks(tf, x):
    """[n, B, H, c, d] -> [B, H, n*c, d]."""
    n, _, h, c, d = x.shape
    return tf.reshape(tf.transpose(x, [1, 2, 0, 3, 4]), [-1, h, n * c, d])


def _tf_allowed(tf, valid_chunks, i, j, cq: int, ck: int, causal: bool):
    """Boolean `[B, 1, cq or 1, ck]` mask of tile (i, j): real keys, and j <= i if causal."""
    allowed = tf.gather(valid_chunks, j)[:, None, None, :]
    if causal:
        q_pos = i * cq + tf.range(cq)
        k_pos = j * ck + tf.range(ck)
        allowed = tf.logical_and(allowed, (k_pos[None, :] <= q_pos[:, None])[None, None])
    return allowed


def _tf_forward(tf, q, k, v, valid, causal, cq, ck):
    """Output `[B, H, Tp, dv]` and row log-sum-exp `[B, H, Tp]`, one tile alive at a time."""
    nq, nk = q.shape[2] // cq, k.shape[2] // ck
    q_chunks, k_chunks, v_chunks = (
        _tf_chunks(tf, q, nq, cq),
        _tf_chunks(tf, k, nk, ck),
        _tf_chunks(tf, v, nk, ck),
    )
    valid_chunks = tf.transpose(tf.reshape(valid, [-1, nk, ck]), [1, 0, 2])
    dv = v.shape[-1]

    def query_step(i, out_ta, lse_ta):
        qi = tf.gather(q_chunks, i)
        n_keys = tf.minimum(nk, ((i + 1) * cq - 1) // ck + 1) if causal else nk

        def key_step(j, m, denom, acc):
            allowed = _tf_allowed(tf, valid_chunks, i, j, cq, ck, causal)
            s = tf.matmul(qi, tf.gather(k_chunks, j), transpose_b=True)
            s = tf.where(allowed, s, NEG_INF)
            m_new = tf.maximum(m, tf.reduce_max(s, axis=-1, keepdims=True))
            p = tf.where(allowed, tf.exp(s - m_new), 0.0)
            alpha = tf.exp(m - m_new)
            denom = alpha * denom + tf.reduce_sum(p, axis=-1, keepdims=True)
            acc = alpha * acc + tf.matmul(p, tf.gather(v_chunks, j))
            return j + 1, m_new, denom, acc

        zeros = tf.zeros_like(qi[..., :1])
        acc0 = tf.zeros(tf.concat([tf.shape(qi)[:-1], [dv]], axis=0), "float32")
        _, m, denom, acc = tf.while_loop(
            lambda j, *_: j < n_keys,
            key_step,
            (tf.constant(0), zeros + NEG_INF, zeros, acc0),
            parallel_iterations=1,
        )
        safe_denom = tf.where(denom > 0, denom, 1.0)
        out_ta = out_ta.write(i, acc / safe_denom)
        lse_ta = lse_ta.write(i, (m + tf.math.log(safe_denom))[..., 0])
        return i + 1, out_ta, lse_ta

    out_ta = tf.TensorArray("float32", size=nq, element_shape=[q.shape[0], q.shape[1], cq, dv])
    lse_ta = tf.TensorArray("float32", size=nq, element_shape=[q.shape[0], q.shape[1], cq])
    _, out_ta, lse_ta = tf.while_loop(
        lambda i, *_: i < nq, query_step, (tf.constant(0), out_ta, lse_ta), parallel_iterations=1
    )
    out = _tf_unchunks(tf, out_ta.stack())
    lse = _tf_unchunks(tf, lse_ta.stack()[..., None])[..., 0]
    return out, lse


def _tf_backward(tf, q, k, v, valid, out, lse, d_out, causal, cq, ck):
    """dq, dk, dv; each tile's probabilities are recomputed as exp(s - lse).

    The outer loop runs over key chunks (dk and dv of a chunk accumulate locally), the inner
    loop over the query chunks that see it, adding into dq in place.
    """
    nq, nk = q.shape[2] // cq, k.shape[2] // ck
    # D_i = sum_d dO * O = sum_j P_ij dP_ij, the softmax Jacobian's correction term.
    delta = tf.reduce_sum(d_out * out, axis=-1)
    q_chunks = _tf_chunks(tf, q, nq, cq)
    do_chunks = _tf_chunks(tf, d_out, nq, cq)
    lse_chunks = _tf_chunks(tf, lse[..., None], nq, cq)
    delta_chunks = _tf_chunks(tf, delta[..., None], nq, cq)
    k_chunks, v_chunks = _tf_chunks(tf, k, nk, ck), _tf_chunks(tf, v, nk, ck)
    valid_chunks = tf.transpose(tf.reshape(valid, [-1, nk, ck]), [1, 0, 2])

    def key_step(j, dq, dk_ta, dv_ta):
        kj, vj = tf.gather(k_chunks, j), tf.gather(v_chunks, j)
        first_query = (j * ck) // cq if causal else 0

        def query_step(i, dq, dkj, dvj):
            qi, doi = tf.gather(q_chunks, i), tf.gather(do_chunks, i)
            allowed = _tf_allowed(tf, valid_chunks, i, j, cq, ck, causal)
            s = tf.matmul(qi, kj, transpose_b=True)
            p = tf.where(allowed, tf.exp(s - tf.gather(lse_chunks, i)), 0.0)
            dvj += tf.matmul(p, doi, transpose_a=True)
            dp = tf.matmul(doi, vj, transpose_b=True)
            ds = p * (dp - tf.gather(delta_chunks, i))
            dkj += tf.matmul(ds, qi, transpose_a=True)
            dq = tf.tensor_scatter_nd_add(dq, tf.reshape(i, [1, 1]), tf.matmul(ds, kj)[None])
            return i + 1, dq, dkj, dvj

        _, dq, dkj, dvj = tf.while_loop(
            lambda i, *_: i < nq,
            query_step,
            (tf.convert_to_tensor(first_query), dq, tf.zeros_like(kj), tf.zeros_like(vj)),
            parallel_iterations=1,
        )
        return j + 1, dq, dk_ta.write(j, dkj), dv_ta.write(j, dvj)

    b, h = k.shape[0], k.shape[1]
    dk_ta = tf.TensorArray("float32", size=nk, element_shape=[b, h, ck, k.shape[-1]])
    dv_ta = tf.TensorArray("float32", size=nk, element_shape=[b, h, ck, v.shape[-1]])
    _, dq, dk_ta, dv_ta = tf.while_loop(
        lambda j, *_: j < nk,
        key_step,
        (tf.constant(0), tf.zeros_like(q_chunks), dk_ta, dv_ta),
        parallel_iterations=1,
    )
    return _tf_unchunks(tf, dq), _tf_unchunks(tf, dk_ta.stack()), _tf_unchunks(tf, dv_ta.stack())


def _tf_attention_core(q, k, v, valid, causal: bool, cq: int, ck: int):
    """Padded, scaled float32 inputs -> padded float32 output, with the recomputing gradient."""
    import tensorflow as tf  # Lazy, so `lra_keras.layers` imports on every Keras backend.

    @tf.custom_gradient
    def attend(q, k, v):
        out, lse = _tf_forward(tf, q, k, v, valid, causal, cq, ck)

        def grad(d_out):
            return _tf_backward(tf, q, k, v, valid, out, lse, d_out, causal, cq, ck)

        return out, grad

    return attend(q, k, v)


def chunked_attention_tf(
    q,
    k,
    v,
    key_mask,
    causal: bool = False,
    query_chunk_size: int = 1024,
    key_chunk_size: int = 1024,
    scale: float | None = None,
):
    """Chunked exact attention for TensorFlow, O(L) memory in the forward and backward pass.

    Same arguments and result as `chunked_attention_reference`. The forward pass keeps only the
    output and the row log-sum-exp; the backward pass recomputes each tile's probabilities
    (dS = P * (dP - rowsum(dO * O))). Sequential `tf.while_loop`s keep one tile alive at a
    time; they compile under `tf.function(jit_compile=True)`.
    """
    import tensorflow as tf

    t, dtype = q.shape[2], q.dtype
    q, k, v, valid, cq, ck = _prepare(q, k, v, key_mask, query_chunk_size, key_chunk_size, scale)
    valid = tf.convert_to_tensor(valid)
    out = _tf_attention_core(q, k, v, valid, bool(causal), cq, ck)
    return _finish(out, t, dtype)


def chunked_attention(
    q,
    k,
    v,
    key_mask,
    causal: bool = False,
    query_chunk_size: int = 1024,
    key_chunk_size: int = 1024,
    scale: float | None = None,
):
    """Chunked exact attention on the current Keras backend (see the module docstring).

    The TensorFlow backend gets `chunked_attention_tf`; the others `chunked_attention_reference`.
    """
    if keras.backend.backend() == "tensorflow":
        fn = chunked_attention_tf
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
    )
