"""The kernelised (linear) attention routine shared by `linear` and `performer`.

Both variants compute `o_i = sum_j w_ij phi(q_i).phi(k_j) v_j / (sum_j w_ij phi(q_i).phi(k_j)
+ eps)` over the allowed keys j (all real keys, or real keys j <= i when causal), where
`w_ij = exp(l_j - c_i)` re-weights key j by an optional per-key log-scale `l_j` relative to a
per-query reference `c_i` (the largest `l_j` the query can see). The linear transformer has no
log-scale (`w_ij = 1`); Performer's softmax kernel stabilises each key's features by their own
maximum `l_j` and needs the weight to undo it. Because `c_i` is a maximum over the keys query i
sees, nothing after i enters its output: the causal form is strictly causal, and every weight is
at most 1, so nothing overflows.

The causal form is a prefix sum computed chunk by chunk: within a chunk of `chunk_size`
positions the masked quadratic form, across chunks the running sums `S = sum_j w phi(k_j) v_j^T`
and `z = sum_j w phi(k_j)` of the earlier chunks. The per-chunk sums are combined by one small
`[chunks, chunks]` weighted einsum (the exclusive prefix sum, with the rescaling between chunk
references), so memory is `O(L c + (L / c) m d_v)` instead of the `O(L m d_v)` of a per-position
cumsum, with no loop (static shapes, XLA- and gradient-friendly).
"""

from __future__ import annotations

from keras import ops

from lra_keras.layers.attention import attention_utils


def _safe_divide(num, den, eps: float):
    if eps > 0.0:
        return num / (den + eps)
    # Without eps, an empty row (no real key) has den = 0 and num = 0: its output is 0. A NaN
    # normaliser (a non-finite input) is not empty: it must propagate, not become a zero row.
    nonempty = ops.logical_not(den <= 0.0)
    return ops.where(nonempty, num, 0.0) / ops.where(nonempty, den, 1.0)


def _exp_masked(exponent, allowed):
    # exp of a masked-out entry could overflow (a future key may be far larger than the
    # reference); choosing NEG_INF before the exp keeps both values and gradients finite.
    return ops.exp(ops.where(allowed, exponent, attention_utils.NEG_INF))


def linear_attention(
    phi_q,
    phi_k,
    v,
    *,
    causal: bool,
    key_log_scale=None,
    chunk_size: int = 64,
    eps: float = 1e-6,
):
    """Kernelised attention `phi(Q) phi(K)^T V`, row-normalised, in float32.

    Args:
        phi_q: query features `[B, T, H, m]`, non-negative.
        phi_k: key features `[B, S, H, m]`, non-negative and zero at padded keys.
        v: values `[B, S, H, dv]`.
        causal: bool. Query i sees keys j <= i (also for T != S: positions are aligned at 0).
        key_log_scale: optional `[B, S, H]` log-weight `l_j` of each key (the true features are
            `exp(l_j) phi_k[j]`); `attention_utils.NEG_INF` at padded keys. It is treated as a
            constant (no gradient flows through it).
        chunk_size: int. Chunk length of the causal prefix sums.
        eps: float. Added to the normaliser; 0 means an exact division with empty rows set to 0.

    Returns:
        float32 `[B, T, H, dv]`.
    """
    phi_q = attention_utils.to_float32(phi_q)
    phi_k = attention_utils.to_float32(phi_k)
    v = attention_utils.to_float32(v)
    if key_log_scale is not None:
        key_log_scale = ops.stop_gradient(attention_utils.to_float32(key_log_scale))
    if causal:
        return _causal_linear_attention(phi_q, phi_k, v, key_log_scale, int(chunk_size), eps)

    if key_log_scale is not None:
        reference = ops.max(key_log_scale, axis=1, keepdims=True)
        phi_k = phi_k * ops.exp(key_log_scale - reference)[..., None]
    kv = ops.einsum("bshm,bshd->bhmd", phi_k, v)
    z = ops.sum(phi_k, axis=1)
    num = ops.einsum("bthm,bhmd->bthd", phi_q, kv)
    den = ops.einsum("bthm,bhm->bth", phi_q, z)[..., None]
    return _safe_divide(num, den, eps)


def _causal_linear_attention(phi_q, phi_k, v, key_log_scale, chunk_size, eps):
    t, s = attention_utils.dim(phi_q, 1), attention_utils.dim(phi_k, 1)
    if chunk_size <= 0:
        raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size}.")
    if isinstance(t, int) and isinstance(s, int):
        length = max(t, s)
        c = min(chunk_size, length)
    else:
        # An unknown length: chunks of chunk_size (the same sums, in more padding at worst).
        length = ops.maximum(t, s)
        c = chunk_size
    n = -(-length // c)
    padded = n * c
    if key_log_scale is None:
        key_log_scale = ops.zeros_like(phi_k[..., 0])

    def chunks(x, value=0.0):
        # [B, L, H, ...] -> [B, H, n, c, ...], padded at the end to n * c positions.
        x = ops.pad(
            x,
            [(0, 0), (0, padded - attention_utils.dim(x, 1))] + [(0, 0)] * (len(x.shape) - 2),
            constant_values=value,
        )
        shape = attention_utils.shape_of(x)
        x = ops.reshape(x, attention_utils.reshape_target([shape[0], n, c] + shape[2:]))
        perm = (0, 3, 1, 2) + tuple(range(4, len(x.shape)))
        return ops.transpose(x, perm)

    q = chunks(phi_q)  # [B, H, n, c, m]
    k = chunks(phi_k)  # [B, H, n, c, m]
    vc = chunks(v)  # [B, H, n, c, dv]
    ls = chunks(key_log_scale, attention_utils.NEG_INF)  # [B, H, n, c]

    within = attention_utils.causal_mask(c, c)  # [c, c], key j <= query i
    before = ops.arange(n)[None, :] < ops.arange(n)[:, None]  # [n, n], chunk p < chunk n
    upto = ops.arange(n)[None, :] <= ops.arange(n)[:, None]  # [n, n], chunk p <= chunk n

    # References: M[n] = max l over chunks <= n (non-decreasing), M_prev[n] = M[n - 1], and
    # the per-query c_i = max(M_prev, max l over this chunk's keys <= i).
    chunk_max = ops.max(ls, axis=-1)  # [B, H, n]
    ref = ops.max(ops.where(upto, chunk_max[..., None, :], attention_utils.NEG_INF), axis=-1)
    ref_prev = ops.max(ops.where(before, chunk_max[..., None, :], attention_utils.NEG_INF), axis=-1)
    running = ops.max(ops.where(within, ls[..., None, :], attention_utils.NEG_INF), axis=-1)
    query_ref = ops.maximum(running, ref_prev[..., None])  # [B, H, n, c]

    # Within a chunk: the masked quadratic form.
    weights = _exp_masked(ls[..., None, :] - query_ref[..., None], within)
    scores = ops.einsum("bhnim,bhnjm->bhnij", q, k) * weights
    num = ops.einsum("bhnij,bhnjd->bhnid", scores, vc)
    den = ops.sum(scores, axis=-1)

    # Across chunks: each chunk's sums in its own reference M[n], then the exclusive prefix sum
    # rescaled to M_prev[n].
    key_weight = ops.exp(ls - ref[..., None])[..., None]
    k_scaled = k * key_weight
    kv = ops.einsum("bhnjm,bhnjd->bhnmd", k_scaled, vc)
    z = ops.sum(k_scaled, axis=3)  # [B, H, n, m]
    carry = _exp_masked(ref[..., None, :] - ref_prev[..., None], before)  # [B, H, n, p]
    kv_prev = ops.einsum("bhnp,bhpmd->bhnmd", carry, kv)
    z_prev = ops.einsum("bhnp,bhpm->bhnm", carry, z)
    to_query = ops.exp(ref_prev[..., None] - query_ref)  # [B, H, n, c], <= 1
    num = num + ops.einsum("bhnim,bhnmd->bhnid", q, kv_prev) * to_query[..., None]
    den = den + ops.einsum("bhnim,bhnm->bhni", q, z_prev) * to_query

    out = _safe_divide(num, den[..., None], eps)  # [B, H, n, c, dv]
    batch, heads, _, _, dv = attention_utils.shape_of(out)
    out = ops.reshape(
        ops.transpose(out, (0, 2, 3, 1, 4)),
        attention_utils.reshape_target([batch, padded, heads, dv]),
    )
    return out[:, :t]
