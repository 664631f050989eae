"""Independent numpy references for the attention tests: dense masked softmax attention."""

from __future__ import annotations

import numpy as np


def dense_attention(q, k, v, allowed, scale=None):
    """Dense masked softmax attention in float64.

    Args:
        q: [B, T, H, d]; k: [B, S, H, d]; v: [B, S, H, dv].
        allowed: boolean, broadcastable to [B, H, T, S]; True = query may attend to key.
        scale: logit scale, 1/sqrt(d) by default.

    Returns:
        [B, T, H, dv]; rows with no allowed key are zero.
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    allowed = np.broadcast_to(np.asarray(allowed, bool), logits.shape)
    logits = np.where(allowed, logits, -np.inf)
    row_max = np.max(np.where(allowed, logits, -1e300), axis=-1, keepdims=True)
    weights = np.where(allowed, np.exp(logits - row_max), 0.0)
    denom = weights.sum(-1, keepdims=True)
    probs = np.divide(weights, denom, out=np.zeros_like(weights), where=denom > 0)
    return np.einsum("bhqk,bkhd->bqhd", probs, v)


def padding_allowed(query_mask, key_mask, causal=False):
    """[B, 1, T, S] boolean from [B, T] and [B, S] padding masks (and causality)."""
    query_mask = np.asarray(query_mask, bool)
    key_mask = np.asarray(key_mask, bool)
    allowed = key_mask[:, None, None, :] & np.ones_like(query_mask)[:, None, :, None]
    if causal:
        t, s = query_mask.shape[1], key_mask.shape[1]
        allowed = allowed & (np.arange(s)[None, :] <= np.arange(t)[:, None])
    return allowed


def lengths_mask(lengths, length):
    """[B, length] boolean mask with the first lengths[b] positions True."""
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]
