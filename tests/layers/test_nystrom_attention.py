import keras
import numpy as np
import pytest

from lra_keras.layers import NystromAttention
from lra_keras.layers.attention.nystrom_attention import iterative_pinv
from tests.layers.reference import dense_attention, lengths_mask, padding_allowed
from tests.layers.variant_testing import attend


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def numpy_nystrom(q, k, v, mask, num_landmarks, conv_kernel=None):
    """The Nystromformer formula per example and head, in float64 with numpy's pinv.

    Landmarks: segments of ceil(L / m) positions; a landmark is the mean of the real tokens in
    its segment; segments without a real token give no landmark.
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    batch, length, heads, d = q.shape
    m = min(num_landmarks, length)
    seg = -(-length // m)
    out = np.zeros(v.shape)
    for b in range(batch):
        real = np.flatnonzero(mask[b])
        groups = [real[real // seg == j] for j in range(m)]
        groups = [g for g in groups if len(g)]
        for h in range(heads):
            qh, kh, vh = q[b, :, h], k[b, :, h], v[b, :, h]
            ql = np.stack([qh[g].mean(0) for g in groups])
            kl = np.stack([kh[g].mean(0) for g in groups])
            k1 = softmax(qh @ kl.T / np.sqrt(d))
            a = softmax(ql @ kl.T / np.sqrt(d))
            # Six iterations reach numpy's pinv only on a well-conditioned A (the method's
            # premise); the inputs below are chosen so, and this guards that choice.
            assert np.linalg.cond(a) < 10, np.linalg.cond(a)
            k3 = softmax(ql @ kh[real].T / np.sqrt(d))
            out[b, :, h] = k1 @ np.linalg.pinv(a) @ (k3 @ vh[real])
            if conv_kernel is not None:
                vm = vh * mask[b][:, None]
                w = conv_kernel[:, h]
                half = len(w) // 2
                padded = np.pad(vm, ((half, half), (0, 0)))
                for t in range(length):
                    out[b, t, h] += (padded[t : t + len(w)] * w[:, None]).sum(0)
    return out


def well_conditioned_qkv(length, segment=1, heads=2, key_dim=16, batch=2, seed=0):
    """Queries near one random centre per `segment` tokens, keys near the queries, 16 dims per
    head: the landmarks differ, so A is diagonally dominant and well-conditioned."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(batch, -(-length // segment), heads, key_dim))
    q = np.repeat(centres, segment, axis=1)[:, :length]
    q = q + (0.5 if segment > 1 else 0.0) * rng.normal(size=q.shape)
    k = q + 0.3 * rng.normal(size=q.shape)
    v = rng.normal(size=(batch, length, heads, key_dim))
    return tuple(a.astype("float32") for a in (q, k, v))


def test_iterative_pinv_matches_numpy():
    rng = np.random.default_rng(0)
    # Per batch and head matrices of very different scales: Z0 is taken per matrix.
    scales = np.array([[1.0, 30.0], [0.05, 4.0]])[..., None, None]
    a = scales * (np.eye(6) * 3.0 + rng.uniform(size=(2, 2, 6, 6)))
    got = keras.ops.convert_to_numpy(iterative_pinv(a.astype("float32"), 6))
    want = np.linalg.pinv(a)
    err = np.linalg.norm(got - want, axis=(-2, -1)) / np.linalg.norm(want, axis=(-2, -1))
    assert err.max() < 1e-2, err


def test_iterative_pinv_of_a_softmax_matrix():
    rng = np.random.default_rng(1)
    a = softmax(3.0 * np.eye(8) + rng.normal(size=(3, 8, 8)))
    assert np.linalg.cond(a).max() < 10
    got = keras.ops.convert_to_numpy(iterative_pinv(a.astype("float32"), 6))
    want = np.linalg.pinv(a)
    err = np.linalg.norm(got - want, axis=(-2, -1)) / np.linalg.norm(want, axis=(-2, -1))
    assert err.max() < 1e-2, err


@pytest.mark.parametrize("conv", [None, 3])
@pytest.mark.parametrize("length,landmarks", [(13, 4), (12, 4), (9, 3)])
def test_matches_numpy_formula(length, landmarks, conv):
    q, k, v = well_conditioned_qkv(length, segment=-(-length // landmarks))
    # The second row's padding leaves some segments partly and some wholly padded.
    mask = lengths_mask([length, length // 2 - 1], length)
    layer = NystromAttention(
        num_heads=2, key_dim=16, num_landmarks=landmarks, conv_kernel_size=conv, seed=1
    )
    got = attend(layer, q, k, v, mask)
    kernel = None if conv is None else keras.ops.convert_to_numpy(layer.conv_kernel)
    want = numpy_nystrom(q, k, v, mask, landmarks, kernel)
    np.testing.assert_allclose(got[mask], want[mask], atol=1e-4, rtol=1e-4)


def test_one_token_per_landmark_is_close_to_full_attention():
    length = 11
    q, k, v = well_conditioned_qkv(length, seed=2)
    mask = lengths_mask([length, 7], length)
    layer = NystromAttention(num_heads=2, key_dim=16, num_landmarks=length)
    got = attend(layer, q, k, v, mask)
    want = dense_attention(q, k, v, padding_allowed(mask, mask))
    np.testing.assert_allclose(got[mask], want[mask], atol=1e-5)
    # More landmarks than tokens is clamped to one token per landmark.
    more = attend(NystromAttention(num_heads=2, key_dim=16, num_landmarks=64), q, k, v, mask)
    np.testing.assert_allclose(more[mask], got[mask], atol=1e-6)


def test_padded_contents_do_not_leak_even_non_finite():
    length = 13
    q, k, v = well_conditioned_qkv(length, seed=3)
    mask = lengths_mask([length, 5], length)
    layer = NystromAttention(num_heads=2, key_dim=16, num_landmarks=4, conv_kernel_size=5)
    y = attend(layer, q, k, v, mask)
    bad = [np.where(mask[..., None, None], a, np.inf).astype("float32") for a in (q, k, v)]
    y2 = attend(layer, *bad, mask)
    assert np.all(np.isfinite(y2))
    np.testing.assert_array_equal(y2[mask], y[mask])


def test_fully_padded_example_is_finite():
    q, k, v = well_conditioned_qkv(13)
    mask = lengths_mask([13, 0], 13)
    y = attend(NystromAttention(num_heads=2, key_dim=16, num_landmarks=4), q, k, v, mask)
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize(
    "kwargs,arg",
    [
        ({"num_landmarks": 0}, "num_landmarks"),
        ({"pinv_iterations": -1}, "pinv_iterations"),
        ({"conv_kernel_size": 4}, "conv_kernel_size"),
    ],
)
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        NystromAttention(num_heads=2, key_dim=16, **kwargs)
