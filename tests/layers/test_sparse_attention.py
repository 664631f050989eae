import numpy as np
import pytest

from lra_keras.layers import SparseAttention
from tests.layers.reference import dense_attention, padding_allowed
from tests.layers.variant_testing import (
    assert_layer_equals_full,
    attend,
    padding_mask,
    random_qkv,
)


def sparse_allowed(length, pattern, block, summary):
    i = np.arange(length)[:, None]
    j = np.arange(length)[None, :]
    if pattern == "fixed":
        return (i // block == j // block) | (j % block >= block - summary)
    return (np.abs(i - j) < block) | ((i - j) % block == 0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pattern", ["fixed", "strided"])
@pytest.mark.parametrize("length,block,summary", [(19, 4, 2), (10, 3, 1), (5, 8, 3)])
def test_matches_dense_pattern(pattern, length, block, summary, causal):
    q, k, v = random_qkv(length)
    mask = padding_mask(length)
    layer = SparseAttention(
        num_heads=2, key_dim=4, pattern=pattern, block_size=block, num_summary=summary
    )
    allowed = padding_allowed(mask, mask, causal) & sparse_allowed(length, pattern, block, summary)
    ref = dense_attention(q, k, v, allowed)
    np.testing.assert_allclose(attend(layer, q, k, v, mask, causal)[mask], ref[mask], atol=1e-5)


def test_strided_block_at_least_length_is_causal_full():
    layer = SparseAttention(num_heads=2, key_dim=4, pattern="strided", block_size=13)
    assert_layer_equals_full(layer, 13, causal=True)


def test_fixed_with_all_columns_summary_is_full():
    layer = SparseAttention(num_heads=2, key_dim=4, pattern="fixed", block_size=4, num_summary=4)
    assert_layer_equals_full(layer, 11, causal=False)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pattern": "dense"}, "pattern"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 4, "num_summary": 5}, "num_summary"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseAttention(num_heads=2, key_dim=4, **kwargs)
