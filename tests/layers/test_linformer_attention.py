"""LinformerAttention against dense attention (E = F = I) and a numpy low-rank reference."""

import keras
import numpy as np
import pytest

from lra_keras.layers import LinformerAttention
from tests.layers.reference import dense_attention, lengths_mask

B, H, D, DV, DIM = 2, 2, 4, 3, 6


def make(max_length, projection_dim, share_kv=True, length=None):
    layer = LinformerAttention(
        num_heads=H,
        key_dim=D,
        value_dim=DV,
        max_length=max_length,
        projection_dim=projection_dim,
        share_kv=share_kv,
    )
    layer.build((B, length or max_length, DIM), (B, length or max_length, DIM))
    return layer


def attend(layer, q, k, v, key_mask):
    out = layer._attend(
        q,
        k,
        v,
        query=None,
        query_mask=np.ones(q.shape[:2], bool),
        key_mask=key_mask,
        causal=False,
        training=False,
    )
    return keras.ops.convert_to_numpy(out)


def random_qkv(length, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, length, H, D)).astype("float32")
    k = rng.normal(size=(B, length, H, D)).astype("float32")
    v = rng.normal(size=(B, length, H, DV)).astype("float32")
    return q, k, v


def low_rank_reference(q, k, v, e, f, key_mask):
    """softmax(Q (E K)^T / sqrt(d)) (F V), padded rows of K and V zeroed; E, F are [k, L]."""
    keep = np.asarray(key_mask, np.float64)[:, :, None, None]
    k_low = np.einsum("ps,bshd->bphd", e, k * keep)
    v_low = np.einsum("ps,bshd->bphd", f, v * keep)
    logits = np.einsum("bthd,bphd->bhtp", q, k_low) / np.sqrt(D)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhtp,bphd->bthd", probs, v_low)


def test_identity_projections_give_full_attention():
    layer = make(13, 13)
    layer.key_projection.assign(np.eye(13, dtype="float32"))
    q, k, v = random_qkv(13)
    mask = np.ones((B, 13), bool)
    np.testing.assert_allclose(
        attend(layer, q, k, v, mask), dense_attention(q, k, v, True), atol=1e-5
    )


@pytest.mark.parametrize("share_kv", [True, False])
@pytest.mark.parametrize("length", [13, 9])
def test_equals_numpy_low_rank_reference(share_kv, length):
    layer = make(13, 5, share_kv=share_kv, length=length)
    rng = np.random.default_rng(3)
    e = rng.normal(size=(13, 5)).astype("float32")
    layer.key_projection.assign(e)
    f = e
    if not share_kv:
        f = rng.normal(size=(13, 5)).astype("float32")
        layer.value_projection.assign(f)
    q, k, v = random_qkv(length, seed=1)
    key_mask = lengths_mask([length, length // 2], length)
    want = low_rank_reference(q, k, v, e[:length].T, f[:length].T, key_mask)
    np.testing.assert_allclose(attend(layer, q, k, v, key_mask), want, atol=1e-5)
    # Whatever sits at padded positions does not matter.
    k2 = np.where(key_mask[..., None, None], k, 30.0).astype("float32")
    v2 = np.where(key_mask[..., None, None], v, -30.0).astype("float32")
    np.testing.assert_allclose(attend(layer, q, k2, v2, key_mask), want, atol=1e-5)


def test_weights_and_errors():
    assert len(make(13, 4).weights) == 9  # one shared projection + 8 projection weights
    assert len(make(13, 4, share_kv=False).weights) == 10
    layer = LinformerAttention(num_heads=H, key_dim=D, max_length=8, projection_dim=4)
    x = np.zeros((1, 9, DIM), "float32")
    with pytest.raises(ValueError, match="longer than `max_length`=8"):
        layer(x, x)
    built = make(8, 4)
    with pytest.raises(ValueError, match="longer than `max_length`=8"):
        built(x, x)
    with pytest.raises(ValueError, match="max_length"):
        LinformerAttention(num_heads=H, key_dim=D, max_length=0)
    with pytest.raises(ValueError, match="projection_dim"):
        LinformerAttention(num_heads=H, key_dim=D, max_length=8, projection_dim=0)
