"""The TensorFlow kernel of chunked exact attention: O(L) memory in the forward and backward pass.

A FlashAttention-style `tf.custom_gradient`: the forward keeps only the output and the row
log-sum-exp; the backward recomputes each tile's probabilities from the saved log-sum-exp
(dS = P * (dP - rowsum(dO * O))). Both run in `tf.while_loop`s with `PARALLEL_TILES` iterations
in flight: TensorFlow's default (10) runs so many chunks at once that it gives back most of the
memory saving (DESIGN.md section 1), while one at a time leaves a second core idle between
the small tile ops. The loops run over dynamic chunk counts, so unknown lengths (a
`tf.function` traced with `None` lengths) work; they compile under `jit_compile=True`.
Arguments, result and conventions are those of `chunked_attention.chunked_attention_reference`.
"""

from __future__ import annotations

import tensorflow as tf

from lra_keras.layers.attention import attention_dropout
from lra_keras.layers.kernels import chunked_attention as common

# Loop iterations in flight: 2 keeps the working set at a few tiles and lets the next tile's
# products overlap this one's bookkeeping. Measured (forward+backward, 8K, 512-tiles, 2 cores,
# three runs): 1.14-1.24x of dense attention's time, against 1.26-1.60x with 1.
PARALLEL_TILES = 2


def _chunks(x, c: int):
    """[B, H, n*c, ...] -> [n, B, H, c, ...] so a loop index can `tf.gather` a whole chunk."""
    rest = list(x.shape[3:])
    shape = tf.shape(x)
    x = tf.reshape(x, tf.concat([shape[:2], [-1, c], shape[3:]], axis=0))
    return tf.transpose(x, [2, 0, 1, 3] + list(range(4, 4 + len(rest))))


def _unchunks(x):
    """[n, B, H, c, d] -> [B, H, n*c, d]."""
    shape = tf.shape(x)
    return tf.reshape(
        tf.transpose(x, [1, 2, 0, 3, 4]), tf.stack([shape[1], shape[2], -1, shape[4]])
    )


def _bias(bias_chunks, i, j, cq: int, ck: int, causal: bool):
    """Additive `[B, 1, cq or 1, ck]` bias of tile (i, j): 0 where allowed, -inf elsewhere."""
    bias = tf.gather(bias_chunks, j)[:, None, None, :]
    if causal:
        q_pos = i * cq + tf.range(cq)
        k_pos = j * ck + tf.range(ck)
        bias = bias + tf.where(k_pos[None, :] <= q_pos[:, None], 0.0, -float("inf"))[None, None]
    return bias


def _bias_chunks(valid, ck: int):
    bias = tf.where(valid, 0.0, -float("inf"))
    return tf.transpose(tf.reshape(bias, [tf.shape(valid)[0], -1, ck]), [1, 0, 2])


def _num_chunks(x, c: int):
    return tf.shape(x)[2] // c


def _forward(q, k, v, valid, seed, causal, cq, ck, rate):
    """Output `[B, H, Tp, dv]` and row log-sum-exp `[B, H, Tp]`, one tile alive at a time."""
    nq, nk = _num_chunks(q, cq), _num_chunks(k, ck)
    q_chunks, k_chunks, v_chunks = _chunks(q, cq), _chunks(k, ck), _chunks(v, ck)
    bias_chunks = _bias_chunks(valid, ck)
    dv = v.shape[-1]

    def query_step(i, out_ta, lse_ta):
        qi = tf.gather(q_chunks, i)
        n_keys = tf.minimum(nk, ((i + 1) * cq - 1) // ck + 1) if causal else nk

        def key_step(j, m, denom, acc):
            s = tf.matmul(qi, tf.gather(k_chunks, j), transpose_b=True)
            s = s + _bias(bias_chunks, i, j, cq, ck, causal)
            m_new = tf.maximum(m, tf.reduce_max(s, axis=-1, keepdims=True))
            m_safe = tf.where(tf.math.is_inf(m_new), 0.0, m_new)
            p = tf.exp(s - m_safe)
            alpha = tf.exp(m - m_safe)
            denom = alpha * denom + tf.reduce_sum(p, axis=-1, keepdims=True)
            dropped = attention_dropout.apply_attention_dropout(p, seed, rate, i * cq, j * ck)
            acc = alpha * acc + tf.matmul(dropped, tf.gather(v_chunks, j))
            return j + 1, m_new, denom, acc

        zeros = tf.zeros_like(qi[..., :1])
        acc0 = tf.zeros(tf.concat([tf.shape(qi)[:-1], [dv]], axis=0), "float32")
        _, m, denom, acc = tf.while_loop(
            lambda j, *_: j < n_keys,
            key_step,
            (tf.constant(0), zeros - float("inf"), zeros, acc0),
            parallel_iterations=PARALLEL_TILES,
        )
        safe_denom = tf.where(denom > 0, denom, 1.0)
        lse = tf.where(denom > 0, m + tf.math.log(safe_denom), float("inf"))
        out_ta = out_ta.write(i, acc / safe_denom)
        lse_ta = lse_ta.write(i, lse[..., 0])
        return i + 1, out_ta, lse_ta

    out_ta = tf.TensorArray("float32", size=nq, element_shape=[q.shape[0], q.shape[1], cq, dv])
    lse_ta = tf.TensorArray("float32", size=nq, element_shape=[q.shape[0], q.shape[1], cq])
    _, out_ta, lse_ta = tf.while_loop(
        lambda i, *_: i < nq,
        query_step,
        (tf.constant(0), out_ta, lse_ta),
        parallel_iterations=PARALLEL_TILES,
    )
    out = _unchunks(out_ta.stack())
    lse = _unchunks(lse_ta.stack()[..., None])[..., 0]
    return out, lse


def _backward(q, k, v, valid, seed, out, lse, d_out, causal, cq, ck, rate):
    """dq, dk, dv; each tile's probabilities (and dropout mask) are recomputed.

    The outer loop runs over key chunks (dk and dv of a chunk accumulate locally), the inner
    loop over the query chunks that see it, adding into dq in place.
    """
    nq, nk = _num_chunks(q, cq), _num_chunks(k, ck)
    # D_i = sum_d dO * O = sum_j P_ij dP_ij, the softmax Jacobian's correction term (it holds
    # with dropout too: sum_j P_ij M_ij dO_i.v_j / (1 - r) = dO_i . O_i).
    delta = tf.reduce_sum(d_out * out, axis=-1)
    q_chunks = _chunks(q, cq)
    do_chunks = _chunks(d_out, cq)
    lse_chunks = _chunks(lse[..., None], cq)
    delta_chunks = _chunks(delta[..., None], cq)
    k_chunks, v_chunks = _chunks(k, ck), _chunks(v, ck)
    bias_chunks = _bias_chunks(valid, ck)

    def key_step(j, dq, dk_ta, dv_ta):
        kj, vj = tf.gather(k_chunks, j), tf.gather(v_chunks, j)
        first_query = (j * ck) // cq if causal else 0

        def query_step(i, dq, dkj, dvj):
            qi, doi = tf.gather(q_chunks, i), tf.gather(do_chunks, i)
            s = tf.matmul(qi, kj, transpose_b=True) + _bias(bias_chunks, i, j, cq, ck, causal)
            p = tf.exp(s - tf.gather(lse_chunks, i))
            # One mask per tile, for the probabilities and for d/dP of the dropped mixing.
            keep = attention_dropout.tile_keep_mask(p, seed, rate, i * cq, j * ck)
            dvj += tf.matmul(attention_dropout.drop(p, keep, rate), doi, transpose_a=True)
            dp = tf.matmul(doi, vj, transpose_b=True)
            dp = attention_dropout.drop(dp, keep, rate)
            ds = p * (dp - tf.gather(delta_chunks, i))
            dkj += tf.matmul(ds, qi, transpose_a=True)
            dq = tf.tensor_scatter_nd_add(dq, tf.reshape(i, [1, 1]), tf.matmul(ds, kj)[None])
            return i + 1, dq, dkj, dvj

        _, dq, dkj, dvj = tf.while_loop(
            lambda i, *_: i < nq,
            query_step,
            (tf.convert_to_tensor(first_query), dq, tf.zeros_like(kj), tf.zeros_like(vj)),
            parallel_iterations=PARALLEL_TILES,
        )
        return j + 1, dq, dk_ta.write(j, dkj), dv_ta.write(j, dvj)

    b, h = k.shape[0], k.shape[1]
    dk_ta = tf.TensorArray("float32", size=nk, element_shape=[b, h, ck, k.shape[-1]])
    dv_ta = tf.TensorArray("float32", size=nk, element_shape=[b, h, ck, v.shape[-1]])
    _, dq, dk_ta, dv_ta = tf.while_loop(
        lambda j, *_: j < nk,
        key_step,
        (tf.constant(0), tf.zeros_like(q_chunks), dk_ta, dv_ta),
        parallel_iterations=PARALLEL_TILES,
    )
    return _unchunks(dq), _unchunks(dk_ta.stack()), _unchunks(dv_ta.stack())


def _attention_core(q, k, v, valid, seed, causal: bool, cq: int, ck: int, rate: float):
    """Padded, scaled float32 inputs -> padded float32 output, with the recomputing gradient."""

    @tf.custom_gradient
    def attend(q, k, v):
        out, lse = _forward(q, k, v, valid, seed, causal, cq, ck, rate)

        def grad(d_out):
            return _backward(q, k, v, valid, seed, out, lse, d_out, causal, cq, ck, rate)

        return out, grad

    return attend(q, k, v)


def chunked_attention_tf(
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
    """Chunked exact attention for TensorFlow, O(L) memory in the forward and backward pass.

    Same arguments and result as `chunked_attention_reference` (chunk sizes left None follow
    the whole-call budget of `chunked_attention.default_chunk_sizes`); the lengths may be
    unknown.
    """
    query_chunk_size, key_chunk_size = common.resolve_chunk_sizes(
        q, k, query_chunk_size, key_chunk_size
    )
    common.check_inputs(
        q, k, v, key_mask, query_chunk_size, key_chunk_size, dropout_rate, dropout_seed
    )
    dtype = q.dtype
    q0 = q
    q, k, v, valid, cq, ck = common.prepare(
        q, k, v, key_mask, query_chunk_size, key_chunk_size, scale
    )
    valid = tf.convert_to_tensor(valid)
    seed = None if not dropout_rate else tf.convert_to_tensor(dropout_seed)
    out = _attention_core(q, k, v, valid, seed, bool(causal), cq, ck, float(dropout_rate))
    return common.finish(out, q0, dtype)
