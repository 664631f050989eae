import keras
import numpy as np
import pytest

from lra_keras.layers import SetAttention
from tests.layers.reference import dense_attention
from tests.layers.variant_testing import DIM, attend, padding_mask, random_qkv


def numpy_projection(layer, x):
    kernel, *bias = (np.asarray(w) for w in layer.weights)
    return np.einsum("bmhd,hdge->bmge", x, kernel) + (bias[0] if bias else 0.0)


@pytest.mark.parametrize("length", [13, 6])
def test_attend_matches_two_stage_dense_reference(length):
    layer = SetAttention(num_heads=2, key_dim=4, num_inducing_points=3, seed=0)
    q, k, v = random_qkv(length)
    mask = padding_mask(length)
    out = attend(layer, q, k, v, mask)
    points = np.broadcast_to(np.asarray(layer.inducing_points), (2, 3, 2, 4))
    # Stage 1: the inducing points over the real keys only.
    induced = dense_attention(points, k, v, mask[:, None, None, :])
    k2 = numpy_projection(layer._inducing_key_dense, induced)
    v2 = numpy_projection(layer._inducing_value_dense, induced)
    # Stage 2: every query over all m induced slots.
    expected = dense_attention(q, k2, v2, True)
    np.testing.assert_allclose(out[mask], expected[mask], atol=1e-5)


def test_permuting_real_tokens_permutes_outputs():
    length = 13
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, length, DIM)).astype("float32")
    mask = padding_mask(length)
    layer = SetAttention(num_heads=2, key_dim=4, num_inducing_points=4, seed=1)
    y = keras.ops.convert_to_numpy(layer(x, x, query_mask=mask, value_mask=mask))
    perm = np.stack([np.arange(length)] * 2)
    for b in range(2):
        real = int(mask[b].sum())
        perm[b, :real] = rng.permutation(real)
    xp = np.take_along_axis(x, perm[:, :, None], axis=1)
    yp = keras.ops.convert_to_numpy(layer(xp, xp, query_mask=mask, value_mask=mask))
    np.testing.assert_allclose(yp, np.take_along_axis(y, perm[:, :, None], axis=1), atol=1e-5)
    assert not np.allclose(yp[mask], y[mask], atol=1e-3)  # the permutation did move tokens


def test_bad_num_inducing_points_raises():
    with pytest.raises(ValueError, match="num_inducing_points"):
        SetAttention(num_heads=2, key_dim=4, num_inducing_points=0)


def test_real_outputs_ignore_non_finite_padding():
    # Padded keys are excluded from stage 1 by `where`, not only by a softmax bias, so even
    # infinite padded contents (inf - 1e9 = inf) leave the real rows unchanged.
    length = 13
    x = np.random.default_rng(5).normal(size=(2, length, DIM)).astype("float32")
    mask = padding_mask(length)
    layer = SetAttention(num_heads=2, key_dim=4, num_inducing_points=4, seed=2)
    y = keras.ops.convert_to_numpy(layer(x, x, query_mask=mask, value_mask=mask))
    bad = np.where(mask[:, :, None], x, np.inf).astype("float32")
    y_bad = keras.ops.convert_to_numpy(layer(x, bad, query_mask=mask, value_mask=mask))
    np.testing.assert_allclose(y_bad[mask], y[mask], atol=1e-6)
