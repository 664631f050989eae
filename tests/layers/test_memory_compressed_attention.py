import keras
import numpy as np
import pytest

from lra_keras.layers import FullAttention, MemoryCompressedAttention
from tests.layers.reference import dense_attention
from tests.layers.variant_testing import DIM, attend, padding_mask, random_qkv


def numpy_slots(x, mask, kernel, bias, rate):
    """Strided conv (kernel = stride = rate) of x [B, S, H, d] zeroed at padding, in numpy."""
    b, s, h, d = x.shape
    n = -(-s // rate)
    xz = np.zeros((b, n * rate, h, d))
    xz[:, :s] = np.where(mask[:, :, None, None], x, 0.0)
    blocks = xz.reshape(b, n, rate, h, d)
    slots = np.einsum("bnchd,chde->bnhe", blocks, kernel) + bias
    mz = np.zeros((b, n * rate), bool)
    mz[:, :s] = mask
    return slots, mz.reshape(b, n, rate).any(-1)


def reference(layer, q, k, v, mask, causal):
    """Dense softmax over [slots, raw keys] with the documented pattern built independently."""
    c = layer.compression_rate
    weights = [
        np.asarray(w) for w in (layer.key_compression_kernel, layer.value_compression_kernel)
    ]
    biases = [np.asarray(b) for b in (layer.key_compression_bias, layer.value_compression_bias)]
    ks, slot_real = numpy_slots(k, mask, weights[0], biases[0], c)
    vs, _ = numpy_slots(v, mask, weights[1], biases[1], c)
    t, n = q.shape[1], ks.shape[1]
    i, j = np.arange(t)[:, None], np.arange(n)[None, :]
    slot_ok = slot_real[:, None, None, :] & (((j + 1) * c - 1 <= i) if causal else True)
    # Causally, query i also sees the raw keys p <= i of its own slot while it is incomplete.
    p = np.arange(t)[None, :]
    own_slot = (p // c == i // c) & (p <= i) & (i % c < c - 1)
    own_ok = mask[:, None, None, :] & (own_slot & causal)
    allowed = np.concatenate([np.broadcast_to(slot_ok, (q.shape[0], 1, t, n)), own_ok], -1)
    keys = np.concatenate([ks, np.where(mask[:, :, None, None], k, 0.0)], 1)
    values = np.concatenate([vs, np.where(mask[:, :, None, None], v, 0.0)], 1)
    return dense_attention(q, keys, values, allowed)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rate,length", [(3, 13), (4, 13), (2, 10)])
def test_attend_matches_dense_reference(causal, rate, length):
    layer = MemoryCompressedAttention(num_heads=2, key_dim=4, compression_rate=rate, seed=1)
    q, k, v = random_qkv(length)
    mask = padding_mask(length)
    layer.build((2, length, DIM), (2, length, DIM))
    # Non-zero biases, so a slot made only of padding would show if it were not masked.
    layer.key_compression_bias.assign(np.full((2, 4), 0.7, "float32"))
    layer.value_compression_bias.assign(np.full((2, 4), -0.3, "float32"))
    out = attend(layer, q, k, v, mask, causal=causal)
    expected = reference(layer, q, k, v, mask, causal)
    np.testing.assert_allclose(out[mask], expected[mask], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_rate_one_with_identity_conv_is_full_attention(causal):
    length = 11
    x = np.random.default_rng(2).normal(size=(2, length, DIM)).astype("float32")
    mask = padding_mask(length)
    full = FullAttention(num_heads=2, key_dim=4)
    y_full = full(x, x, query_mask=mask, value_mask=mask, use_causal_mask=causal)
    layer = MemoryCompressedAttention(num_heads=2, key_dim=4, compression_rate=1)
    layer(x, x, query_mask=mask, value_mask=mask)
    layer.load_mha_weights(full)
    eye = np.broadcast_to(np.eye(4, dtype="float32"), (1, 2, 4, 4))
    layer.key_compression_kernel.assign(eye)
    layer.value_compression_kernel.assign(eye)
    y = layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=causal)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(y_full), atol=1e-5
    )


def test_every_real_query_has_a_key_under_causality():
    # Query 0 sees only itself (no complete slot yet), so it returns its own value exactly.
    layer = MemoryCompressedAttention(num_heads=2, key_dim=4, compression_rate=3)
    q, k, v = random_qkv(13)
    mask = padding_mask(13)
    out = attend(layer, q, k, v, mask, causal=True)
    np.testing.assert_allclose(out[:, 0], v[:, 0], atol=1e-6)
    assert np.all(np.isfinite(out))


def test_causal_cross_attention_and_bad_rate_raise():
    layer = MemoryCompressedAttention(num_heads=2, key_dim=4)
    x = np.zeros((1, 7, DIM), "float32")
    with pytest.raises(ValueError, match="self-attention only"):
        layer(x, x[:, :5], use_causal_mask=True)
    with pytest.raises(ValueError, match="compression_rate"):
        MemoryCompressedAttention(num_heads=2, key_dim=4, compression_rate=0)


def test_causal_query_reads_its_whole_past_and_nothing_after():
    # The causal rule covers positions 0..i exactly (complete slots + own partial slot), so
    # changing the token at p moves every output at i >= p and none before it.
    length, rate = 10, 3
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, length, DIM)).astype("float32")
    layer = MemoryCompressedAttention(num_heads=2, key_dim=4, compression_rate=rate, seed=2)
    y = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=True))
    for p in range(length):
        changed = x.copy()
        changed[:, p] = rng.normal(size=DIM)
        y2 = keras.ops.convert_to_numpy(layer(changed, changed, use_causal_mask=True))
        np.testing.assert_allclose(y2[:, :p], y[:, :p], atol=1e-6)
        assert np.all(np.abs(y2[0, p:] - y[0, p:]).max(-1) > 1e-4), p
