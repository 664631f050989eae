import numpy as np
import pytest

from lra_keras.layers import ImageLocalAttention
from tests.layers.reference import dense_attention, padding_allowed
from tests.layers.variant_testing import (
    DIM,
    assert_layer_equals_full,
    attend,
    padding_mask,
    random_qkv,
)


def image_local_allowed(h, w, query_shape, flange, causal):
    """Block-and-flange pattern: query block rows/cols extended by the flange (no rows
    below when causal), plus raster-order causality."""
    qh, qw = query_shape
    fh, fw = flange
    r, c = np.divmod(np.arange(h * w), w)
    row0, col0 = (r // qh) * qh, (c // qw) * qw  # each query's block origin
    rows_ok = (r[None, :] >= row0[:, None] - fh) & (
        r[None, :] < row0[:, None] + qh + (0 if causal else fh)
    )
    cols_ok = (c[None, :] >= col0[:, None] - fw) & (c[None, :] < col0[:, None] + qw + fw)
    allowed = rows_ok & cols_ok
    if causal:
        allowed &= np.arange(h * w)[None, :] <= np.arange(h * w)[:, None]
    return allowed


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "image,query_shape,flange",
    [
        ((5, 7), (2, 3), (1, 2)),
        ((3, 5), (2, 2), (1, 1)),
        ((4, 6), (3, 2), (0, 0)),
        ((6, 4), (2, 4), (2, 0)),
    ],
)
def test_matches_dense_block_and_flange(image, query_shape, flange, causal):
    length = image[0] * image[1]
    q, k, v = random_qkv(length)
    mask = padding_mask(length)
    layer = ImageLocalAttention(
        num_heads=2, key_dim=4, image_shape=image, query_shape=query_shape, memory_flange=flange
    )
    allowed = padding_allowed(mask, mask) & image_local_allowed(*image, query_shape, flange, causal)
    ref = dense_attention(q, k, v, allowed)
    np.testing.assert_allclose(attend(layer, q, k, v, mask, causal)[mask], ref[mask], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length,block", [(11, 4), (12, 3)])
def test_1d_is_block_plus_previous_block(length, block, causal):
    q, k, v = random_qkv(length)
    mask = padding_mask(length)
    layer = ImageLocalAttention(num_heads=2, key_dim=4, block_length=block)
    i = np.arange(length) // block
    pattern = (i[None, :] == i[:, None]) | (i[None, :] == i[:, None] - 1)
    allowed = padding_allowed(mask, mask, causal) & pattern
    ref = dense_attention(q, k, v, allowed)
    np.testing.assert_allclose(attend(layer, q, k, v, mask, causal)[mask], ref[mask], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_query_block_covering_image_is_full(causal):
    layer = ImageLocalAttention(
        num_heads=2, key_dim=4, image_shape=(3, 4), query_shape=(8, 8), memory_flange=(1, 1)
    )
    assert_layer_equals_full(layer, 12, causal)
    assert_layer_equals_full(
        ImageLocalAttention(num_heads=2, key_dim=4, block_length=20), 11, causal
    )


def test_length_must_match_image():
    layer = ImageLocalAttention(num_heads=2, key_dim=4, image_shape=(3, 4))
    x = np.zeros((1, 13, DIM), "float32")
    with pytest.raises(ValueError, match="image_shape.*12.*13"):
        layer(x, x)
    with pytest.raises(ValueError, match="query_shape"):
        ImageLocalAttention(num_heads=2, key_dim=4, image_shape=(3, 4), query_shape=(0, 2))
    with pytest.raises(ValueError, match="image_shape"):
        ImageLocalAttention(num_heads=2, key_dim=4, image_shape=12)
