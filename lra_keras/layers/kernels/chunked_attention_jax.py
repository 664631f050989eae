"""The JAX kernels of exact attention: FlashAttention-2-style chunked attention, cuDNN fusion.

`chunked_attention_jax` is a `jax.custom_vjp` over `jax.lax.scan`s of tiles. The forward
(FlashAttention-2's order: an outer scan over query chunks, an inner loop over the key chunks a
query chunk sees) keeps only the output and the row log-sum-exp; the backward scans over key
chunks, recomputes each tile's probabilities (and dropout mask) from the saved log-sum-exp, and
accumulates dK and dV per chunk and dQ in place. Nothing quadratic is ever saved for the
backward pass, so XLA's compiled memory grows linearly with the length (`benchmarks/gpu.py`
and `benchmarks/chunked_memory.py --backend jax` measure it). Arguments, result and
conventions are those of `chunked_attention.chunked_attention_reference`.

`fused_attention_jax` runs cuDNN's fused flash attention (`jax.nn.dot_product_attention`,
`implementation="cudnn"`) where it applies (`fused_attention_supported`): a GPU, float16 or
bfloat16, equal head sizes that are a multiple of 8 up to 128, no dropout. cuDNN takes padding
as per-example lengths, so a key mask that is not a prefix of real tokens (or leaves a row with
no key) falls back, at run time, to the caller's exact path with the same values.

Reference: Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work
Partitioning", ICLR 2024.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lra_keras.layers.attention import attention_dropout
from lra_keras.layers.kernels import chunked_attention as common

NEG_INF = common.NEG_INF
# `jax.nn.dot_product_attention`'s implementation for the fused path; the tests set "xla" to
# run the layers' fused path on a CPU.
FUSED_IMPLEMENTATION = "cudnn"


def _chunks(x, c: int):
    """[B, H, n*c, ...] -> [n, B, H, c, ...]."""
    b, h, length = x.shape[:3]
    x = x.reshape((b, h, length // c, c) + x.shape[3:])
    return jnp.moveaxis(x, 2, 0)


def _unchunks(x):
    """[n, B, H, c, ...] -> [B, H, n*c, ...]."""
    n, b, h, c = x.shape[:4]
    return jnp.moveaxis(x, 0, 2).reshape((b, h, n * c) + x.shape[4:])


def _allowed(valid_chunks, i, j, cq: int, ck: int, causal: bool):
    """Boolean `[B, 1, cq or 1, ck]` mask of tile (i, j): real keys, and j <= i if causal."""
    allowed = valid_chunks[j][:, None, None, :]
    if causal:
        q_pos = i * cq + jnp.arange(cq)
        k_pos = j * ck + jnp.arange(ck)
        allowed = allowed & (k_pos[None, :] <= q_pos[:, None])[None, None]
    return allowed


def _dropped(p, seed, rate, i, j, cq, ck):
    return attention_dropout.apply_attention_dropout(p, seed, rate, i * cq, j * ck)


def _forward(q, k, v, valid, seed, causal, cq, ck, rate):
    nq, nk = q.shape[2] // cq, k.shape[2] // ck
    k_chunks, v_chunks = _chunks(k, ck), _chunks(v, ck)
    valid_chunks = jnp.moveaxis(valid.reshape(valid.shape[0], nk, ck), 1, 0)

    def query_step(_, xs):
        i, qi = xs

        def key_step(j, carry):
            m, denom, acc = carry
            allowed = _allowed(valid_chunks, i, j, cq, ck, causal)
            s = jnp.einsum("bhqd,bhkd->bhqk", qi, k_chunks[j])
            s = jnp.where(allowed, s, NEG_INF)
            m_new = jnp.maximum(m, s.max(axis=-1, keepdims=True))
            p = jnp.where(allowed, jnp.exp(s - m_new), 0.0)
            alpha = jnp.exp(m - m_new)
            denom = alpha * denom + p.sum(axis=-1, keepdims=True)
            pv = jnp.einsum("bhqk,bhkd->bhqd", _dropped(p, seed, rate, i, j, cq, ck), v_chunks[j])
            return m_new, denom, alpha * acc + pv

        n_keys = jnp.minimum(nk, ((i + 1) * cq - 1) // ck + 1) if causal else nk
        zeros = jnp.zeros(qi.shape[:-1] + (1,), "float32")
        acc0 = jnp.zeros(qi.shape[:-1] + (v.shape[-1],), "float32")
        m, denom, acc = lax.fori_loop(0, n_keys, key_step, (zeros + NEG_INF, zeros, acc0))
        safe = jnp.where(denom > 0, denom, 1.0)
        return None, (acc / safe, (m + jnp.log(safe))[..., 0])

    _, (out, lse) = lax.scan(query_step, None, (jnp.arange(nq), _chunks(q, cq)))
    return _unchunks(out), _unchunks(lse)


def _backward(q, k, v, valid, seed, out, lse, d_out, causal, cq, ck, rate):
    nq, nk = q.shape[2] // cq, k.shape[2] // ck
    # D_i = rowsum(dO * O) = sum_j P_ij dP_ij (with dropout too: the mask cancels in the sum).
    delta = jnp.sum(d_out * out, axis=-1)
    q_chunks, do_chunks = _chunks(q, cq), _chunks(d_out, cq)
    lse_chunks, delta_chunks = _chunks(lse[..., None], cq), _chunks(delta[..., None], cq)
    valid_chunks = jnp.moveaxis(valid.reshape(valid.shape[0], nk, ck), 1, 0)

    def key_step(dq, xs):
        j, kj, vj = xs

        def query_step(i, carry):
            dq, dkj, dvj = carry
            qi, doi = q_chunks[i], do_chunks[i]
            allowed = _allowed(valid_chunks, i, j, cq, ck, causal)
            s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj)
            p = jnp.where(allowed, jnp.exp(s - lse_chunks[i]), 0.0)
            dvj = dvj + jnp.einsum("bhqk,bhqd->bhkd", _dropped(p, seed, rate, i, j, cq, ck), doi)
            dp = jnp.einsum("bhqd,bhkd->bhqk", doi, vj)
            dp = _dropped(dp, seed, rate, i, j, cq, ck)
            ds = p * (dp - delta_chunks[i])
            dkj = dkj + jnp.einsum("bhqk,bhqd->bhkd", ds, qi)
            dq = dq.at[i].add(jnp.einsum("bhqk,bhkd->bhqd", ds, kj))
            return dq, dkj, dvj

        first_query = (j * ck) // cq if causal else 0
        dq, dkj, dvj = lax.fori_loop(
            first_query, nq, query_step, (dq, jnp.zeros_like(kj), jnp.zeros_like(vj))
        )
        return dq, (dkj, dvj)

    dq, (dk, dv) = lax.scan(
        key_step, jnp.zeros_like(q_chunks), (jnp.arange(nk), _chunks(k, ck), _chunks(v, ck))
    )
    return _unchunks(dq), _unchunks(dk), _unchunks(dv)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _flash(q, k, v, valid, seed, causal, cq, ck, rate):
    return _forward(q, k, v, valid, seed, causal, cq, ck, rate)[0]


def _flash_fwd(q, k, v, valid, seed, causal, cq, ck, rate):
    out, lse = _forward(q, k, v, valid, seed, causal, cq, ck, rate)
    return out, (q, k, v, valid, seed, out, lse)


def _flash_bwd(causal, cq, ck, rate, residuals, d_out):
    q, k, v, valid, seed, out, lse = residuals
    dq, dk, dv = _backward(q, k, v, valid, seed, out, lse, d_out, causal, cq, ck, rate)
    return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
# Compiled once per shape for eager calls (an eager `lax.scan` would be traced and compiled
# again on every call); inside an outer `jit` it is inlined.
_flash_jit = jax.jit(_flash, static_argnums=(5, 6, 7, 8))


def chunked_attention_jax(
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
    """Chunked exact attention for JAX, O(L) memory in the forward and backward pass.

    Same arguments and result as `chunked_attention_reference` (chunk sizes left None follow
    the whole-call budget of `chunked_attention.default_chunk_sizes`).
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
    seed = jnp.asarray(0 if not dropout_rate else dropout_seed, "int32")
    out = _flash_jit(q, k, v, valid, seed, bool(causal), cq, ck, float(dropout_rate))
    return common.finish(out, q0, dtype)


# ------------------------------------------------------------------------- cuDNN fused attention


def fused_attention_supported(q, k, v, dropout_active: bool) -> bool:
    """Whether cuDNN flash attention can run this call (heads-last `[B, T, H, d]` tensors)."""
    if dropout_active or jax.devices()[0].platform != "gpu":
        return False
    if str(q.dtype) not in ("float16", "bfloat16") or not q.dtype == k.dtype == v.dtype:
        return False
    d, dv = q.shape[-1], v.shape[-1]
    if d != dv or d % 8 or d > 128:
        return False
    try:
        from jax._src.cudnn.fused_attention_stablehlo import check_compute_capability

        return bool(check_compute_capability("8.0"))
    except Exception:  # noqa: BLE001 - no cuDNN (or a JAX without it): not supported.
        return False


def fused_attention_jax(
    q, k, v, key_mask, causal: bool, scale: float, fallback, implementation="cudnn"
):
    """Fused exact attention on heads-last `[B, T, H, d]` tensors, else `fallback()`.

    The fused kernel runs when the key mask is a prefix of real keys with at least one per
    example (checked at run time; `lax.cond` keeps both paths compiled), as cuDNN takes padding
    as lengths. `implementation="xla"` runs JAX's unfused reference of the same call (the tests'
    CPU check that both paths agree). `causal` with different query and key lengths is the
    caller's to refuse (cuDNN's diagonal alignment differs there).
    """
    key_mask = jnp.asarray(key_mask, bool)
    lengths = jnp.sum(key_mask, axis=-1, dtype=jnp.int32)
    prefix = jnp.arange(key_mask.shape[1])[None, :] < lengths[:, None]
    usable = jnp.all(key_mask == prefix) & jnp.all(lengths > 0)

    def fused():
        out = jax.nn.dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            is_causal=causal,
            key_value_seq_lengths=lengths,
            implementation=implementation or FUSED_IMPLEMENTATION,
        )
        return out.astype(fallback_dtype)

    fallback_out = jax.eval_shape(fallback)
    fallback_dtype = fallback_out.dtype
    return lax.cond(usable, fused, fallback)
