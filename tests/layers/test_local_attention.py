import numpy as np
import pytest

from lra_keras.layers import LocalAttention
from tests.layers.reference import dense_attention, padding_allowed
from tests.layers.variant_testing import (
    assert_layer_equals_full,
    attend,
    padding_mask,
    random_qkv,
)


def local_allowed(length, block):
    i = np.arange(length)
    return i[:, None] // block == i[None, :] // block


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length,block", [(11, 4), (12, 4), (7, 3)])
def test_matches_dense_block_mask(length, block, causal):
    q, k, v = random_qkv(length)
    mask = padding_mask(length)
    layer = LocalAttention(num_heads=2, key_dim=4, block_size=block)
    allowed = padding_allowed(mask, mask, causal) & local_allowed(length, block)
    ref = dense_attention(q, k, v, allowed)
    np.testing.assert_allclose(attend(layer, q, k, v, mask, causal)[mask], ref[mask], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_block_at_least_length_is_full(causal):
    assert_layer_equals_full(LocalAttention(num_heads=2, key_dim=4, block_size=11), 11, causal)
    assert_layer_equals_full(LocalAttention(num_heads=2, key_dim=4, block_size=64), 11, causal)


def test_perturbing_one_block_changes_only_that_block():
    length, block = 11, 4
    q, k, v = random_qkv(length)
    mask = np.ones((2, length), bool)
    layer = LocalAttention(num_heads=2, key_dim=4, block_size=block)
    y = attend(layer, q, k, v, mask)
    k2, v2 = k.copy(), v.copy()
    k2[:, 4:8] += 1.0
    v2[:, 4:8] += 1.0
    y2 = attend(layer, q, k2, v2, mask)
    np.testing.assert_array_equal(y2[:, :4], y[:, :4])
    np.testing.assert_array_equal(y2[:, 8:], y[:, 8:])
    assert np.abs(y2[:, 4:8] - y[:, 4:8]).max() > 1e-3


def test_bad_block_size():
    with pytest.raises(ValueError, match="block_size"):
        LocalAttention(num_heads=2, key_dim=4, block_size=0)
