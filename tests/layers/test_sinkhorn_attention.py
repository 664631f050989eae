import keras
import numpy as np
import pytest
import tensorflow as tf

from lra_keras.layers import SinkhornAttention
from tests.layers.reference import dense_attention, padding_allowed
from tests.layers.variant_testing import DIM, attend, padding_mask, random_qkv


def built_layer(length, **kwargs):
    layer = SinkhornAttention(num_heads=2, key_dim=4, seed=1, **kwargs)
    layer.build((2, length, DIM), (2, length, DIM))
    return layer


def sorting_matrix(layer, k, mask, training=False):
    p = layer._sorting_matrix(
        keras.ops.convert_to_tensor(k), keras.ops.convert_to_tensor(mask), training=training
    )
    return keras.ops.convert_to_numpy(p).astype(np.float64)


BIAS = keras.initializers.RandomNormal(seed=3)


def numpy_sortnet_matrix(layer, k, mask, block, iterations=None):
    """The paper's sorting matrix, from the layer's SortNet weights, in float64 numpy.

    Block summaries (the mean of each block's real keys) go through the two-layer ReLU
    SortNet to one logit per block; real blocks sort among themselves, a padded block maps to
    itself; then `R / temperature` is balanced by rounds of row and column normalisation.
    """
    bsz, length, heads, d = k.shape
    pad = (-length) % block
    nb = (length + pad) // block
    keys = np.pad(k * mask[:, :, None, None], ((0, 0), (0, pad), (0, 0), (0, 0)))
    m = np.pad(mask, ((0, 0), (0, pad))).reshape(bsz, nb, block)
    summed = keys.reshape(bsz, nb, block, heads, d).sum(2)  # [B, nb, H, d]
    emb = summed / np.maximum(m.sum(-1), 1)[:, :, None, None]
    w_p, b_p = (w.numpy().astype(np.float64) for w in layer._sort_hidden.weights)
    w_b, b_b = (w.numpy().astype(np.float64) for w in layer._sort_logits.weights)
    hidden = np.maximum(np.einsum("bnhd,hde->bhne", emb, w_p) + b_p.reshape(1, heads, 1, -1), 0)
    logits = np.einsum("bhne,hej->bhnj", hidden, w_b) + b_b.reshape(1, heads, 1, -1)
    real = m.any(-1)  # [B, nb]
    eye = np.eye(nb, dtype=bool)
    allowed = (real[:, :, None] & real[:, None, :]) | (~real[:, :, None] & eye)
    r = np.where(allowed[:, None], logits / layer.temperature, -np.inf)
    for _ in range(iterations or layer.sinkhorn_iterations):
        r = r - np.log(np.exp(r).sum(-1, keepdims=True))
        r = r - np.log(np.exp(r).sum(-2, keepdims=True))
    return np.exp(r)


def real_blocks(mask, block):
    """[B, nb] boolean: blocks holding at least one real token."""
    pad = (-mask.shape[1]) % block
    m = np.pad(mask, ((0, 0), (0, pad)))
    return m.reshape(mask.shape[0], -1, block).any(-1)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("length,block", [(13, 4), (21, 4)])
def test_sorting_matrix_is_doubly_stochastic_over_real_blocks(length, block, training):
    q, k, v = random_qkv(length, seed=2)
    mask = padding_mask(length)
    # Gumbel noise widens the logit spread: 7 rounds (the default) then leave rows off by up
    # to 5e-3 here, 20 rounds up to 9e-3 (Sinkhorn converges slowly near a permutation; not a
    # bug), so the noisy case runs 60 rounds.
    layer = built_layer(length, block_size=block, sinkhorn_iterations=60 if training else 7)
    p = sorting_matrix(layer, k, mask, training)
    real = real_blocks(mask, block)
    assert p.shape == (2, 2, real.shape[1], real.shape[1])
    assert not real[1].all()  # The second row does have padded blocks.
    for b in range(2):
        sub = p[b][:, real[b]][:, :, real[b]]
        np.testing.assert_allclose(sub.sum(-1), 1.0, atol=1e-3)
        np.testing.assert_allclose(sub.sum(-2), 1.0, atol=1e-3)
        # Real and padded blocks never mix; a padded block maps to itself.
        np.testing.assert_array_equal(p[b][:, real[b]][:, :, ~real[b]], 0.0)
        np.testing.assert_array_equal(p[b][:, ~real[b]][:, :, real[b]], 0.0)
        pad = np.flatnonzero(~real[b])
        np.testing.assert_allclose(p[b][:, pad, pad], 1.0)
    # Not trivially the identity: the sort really mixes blocks.
    assert np.abs(p[0] - np.eye(p.shape[-1])).max() > 0.05


def test_gumbel_noise_only_in_training():
    length = 13
    _, k, _ = random_qkv(length, seed=3)
    mask = padding_mask(length)
    layer = built_layer(length, block_size=4)
    p1, p2 = (sorting_matrix(layer, k, mask) for _ in range(2))
    np.testing.assert_array_equal(p1, p2)
    t1, t2 = (sorting_matrix(layer, k, mask, training=True) for _ in range(2))
    assert np.abs(t1 - p1).max() > 1e-3 and np.abs(t1 - t2).max() > 1e-3


def test_sorting_ignores_padded_content():
    length = 13
    _, k, _ = random_qkv(length, seed=4)
    mask = padding_mask(length)
    layer = built_layer(length, block_size=4)
    noisy = np.where(mask[:, :, None, None], k, 100.0).astype("float32")
    np.testing.assert_allclose(
        sorting_matrix(layer, noisy, mask), sorting_matrix(layer, k, mask), atol=1e-6
    )


@pytest.mark.parametrize("length,block", [(13, 4), (12, 3), (5, 8)])
def test_identity_sort_is_local_attention(length, block):
    # With P = I the sorted block IS the own block, so every key of the own block appears twice
    # in the softmax with equal logits: the weighted average is unchanged, i.e. exactly local
    # attention with the same block size (each query sees its own block's real keys).
    q, k, v = random_qkv(length, seed=5)
    mask = padding_mask(length)
    layer = built_layer(length, block_size=block)
    b = min(block, length)
    nb = -(-length // b)
    eye = keras.ops.convert_to_tensor(np.broadcast_to(np.eye(nb, dtype="float32"), (2, 2, nb, nb)))
    out = layer._attend_sorted(*map(keras.ops.convert_to_tensor, (q, k, v, mask)), eye)
    i = np.arange(length)
    allowed = padding_allowed(mask, mask) & (i[:, None] // b == i[None, :] // b)
    ref = dense_attention(q, k, v, allowed)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out)[mask], ref[mask], atol=1e-5)


def numpy_sinkhorn_attention(q, k, v, mask, p, block, sortcut=None):
    """Dense numpy form of [sorted block, own block] (or SortCut) attention for a given P."""
    bsz, length, heads, d = q.shape
    pad = (-length) % block
    nb = (length + pad) // block
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    k = k * mask[:, :, None, None]
    v = v * mask[:, :, None, None]

    def blocks(x):
        x = np.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))
        return x.reshape(bsz, nb, block, heads, -1)

    qb, kb, vb = blocks(q), blocks(k), blocks(v)
    mb = np.pad(mask, ((0, 0), (0, pad))).reshape(bsz, nb, block)
    out = np.zeros(qb.shape[:-1] + (v.shape[-1],))
    for b in range(bsz):
        for h in range(heads):
            sk = np.einsum("ij,jtd->itd", p[b, h], kb[b, :, :, h])
            sv = np.einsum("ij,jtd->itd", p[b, h], vb[b, :, :, h])
            sm = np.einsum("ij,jt->it", p[b, h], mb[b]) > 0.5
            for n in range(nb):
                if sortcut is None:
                    keys_s, vals_s, m_s = sk[n], sv[n], sm[n]
                else:
                    c = min(sortcut, nb)
                    keys_s = sk[:c].reshape(c * block, -1)
                    vals_s = sv[:c].reshape(c * block, -1)
                    m_s = sm[:c].reshape(-1)
                keys = np.concatenate([keys_s, kb[b, n, :, h]])
                vals = np.concatenate([vals_s, vb[b, n, :, h]])
                allowed = np.concatenate([m_s, mb[b, n]])
                logits = qb[b, n, :, h] @ keys.T / np.sqrt(d)
                logits = np.where(allowed[None], logits, -1e30)
                w = np.exp(logits - logits.max(-1, keepdims=True))
                out[b, n, :, h] = (w / w.sum(-1, keepdims=True)) @ vals
    return out.reshape(bsz, nb * block, heads, -1)[:, :length]


@pytest.mark.parametrize("length,block", [(13, 4), (21, 4), (12, 3)])
def test_sorting_matrix_matches_the_papers_sortnet(length, block):
    _, k, _ = random_qkv(length, seed=7)
    mask = padding_mask(length)
    layer = built_layer(length, block_size=block, temperature=0.3, bias_initializer=BIAS)
    ref = numpy_sortnet_matrix(layer, k, mask, block)
    np.testing.assert_allclose(sorting_matrix(layer, k, mask), ref, atol=1e-5)
    # Not uniform mixing: some block takes well over its uniform share of a sorted block.
    assert ref[0].max() > 1.5 / ref.shape[-1]


@pytest.mark.parametrize("sortcut", [None, 1, 2, 9])
@pytest.mark.parametrize("length,block", [(13, 4), (11, 2)])
def test_matches_numpy_reference(length, block, sortcut):
    q, k, v = random_qkv(length, seed=6)
    mask = padding_mask(length)
    layer = built_layer(
        length, block_size=block, sortcut_blocks=sortcut, temperature=0.3, bias_initializer=BIAS
    )
    p = numpy_sortnet_matrix(layer, k, mask, block)
    ref = numpy_sinkhorn_attention(q, k, v, mask, p, block, sortcut)
    np.testing.assert_allclose(attend(layer, q, k, v, mask)[mask], ref[mask], atol=1e-5)


def test_causal_refused_and_bad_arguments():
    with pytest.raises(ValueError, match="block_size"):
        SinkhornAttention(num_heads=2, key_dim=4, block_size=0)
    with pytest.raises(ValueError, match="temperature"):
        SinkhornAttention(num_heads=2, key_dim=4, temperature=0.0)
    with pytest.raises(ValueError, match="sinkhorn_iterations"):
        SinkhornAttention(num_heads=2, key_dim=4, sinkhorn_iterations=0)
    with pytest.raises(ValueError, match="sortcut_blocks"):
        SinkhornAttention(num_heads=2, key_dim=4, sortcut_blocks=0)
    x = np.zeros((1, 9, DIM), "float32")
    with pytest.raises(ValueError, match="'sinkhorn'.*causal"):
        SinkhornAttention(num_heads=2, key_dim=4, block_size=4)(x, x, use_causal_mask=True)


def test_sortnet_gets_gradients():
    length = 13
    x = np.random.default_rng(0).normal(size=(2, length, DIM)).astype("float32")
    layer = SinkhornAttention(num_heads=2, key_dim=4, block_size=4, seed=1)
    with tf.GradientTape() as tape:
        y = layer(x, x, training=True)
        loss = tf.reduce_sum(y**2)
    sortnet = layer._sort_hidden.weights + layer._sort_logits.weights
    for grad in tape.gradient(loss, sortnet):
        assert grad is not None and np.abs(grad.numpy()).max() > 0


def test_static_length_is_required_and_checked():
    assert SinkhornAttention.needs_static_length
    layer = SinkhornAttention(num_heads=2, key_dim=4, block_size=4)
    with pytest.raises(ValueError, match="SinkhornAttention.*static.*block_size"):
        layer(keras.Input((None, DIM)), keras.Input((None, DIM)))
    layer = built_layer(13, block_size=4)
    assert layer.num_blocks == 4
    layer(np.zeros((1, 16, DIM), "float32"), np.zeros((1, 16, DIM), "float32"))  # Also 4.
    x = np.zeros((1, 17, DIM), "float32")
    with pytest.raises(ValueError, match="built for 4 blocks.*17 gives 5"):
        layer(x, x)


def test_seeded_initializers_give_distinct_weights():
    layer = SinkhornAttention(
        num_heads=2,
        key_dim=4,
        block_size=4,
        kernel_initializer=keras.initializers.GlorotUniform(seed=1),
    )
    x = np.zeros((1, 16, DIM), "float32")
    layer(x, x)
    kernels = [w.numpy().ravel() for w in layer.weights if w.path.endswith("kernel")]
    assert len(kernels) == 6
    for i in range(6):
        for j in range(i + 1, 6):
            n = min(kernels[i].size, kernels[j].size)
            assert not np.allclose(kernels[i][:n], kernels[j][:n]), (i, j)


def test_columns_are_exactly_normalised_even_for_large_logits():
    # The last Sinkhorn step normalises columns; with a large logit spread 7 rounds leave the
    # rows unbalanced (documented), but columns always sum to 1.
    length = 13
    _, k, _ = random_qkv(length, seed=2)
    mask = np.ones((2, length), bool)
    p = sorting_matrix(built_layer(length, block_size=4), 8.0 * k, mask)
    np.testing.assert_allclose(p.sum(-2), 1.0, atol=1e-5)
