import numpy as np
import pytest

from lra_keras.layers import LongformerAttention
from tests.layers.reference import dense_attention, padding_allowed
from tests.layers.variant_testing import (
    assert_layer_equals_full,
    attend,
    padding_mask,
    random_qkv,
)


def longformer_allowed(length, window, dilation, global_tokens, causal):
    i = np.arange(length)[:, None]
    j = np.arange(length)[None, :]
    if causal:
        left, right = window - 1, 0
    else:
        left, right = window - window // 2 - 1, window // 2
    offset = j - i
    allowed = (offset % dilation == 0) & (offset >= -left * dilation) & (offset <= right * dilation)
    glob = np.zeros(length, bool)
    glob[list(global_tokens)] = True
    return allowed | glob[None, :] | glob[:, None]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "window,dilation,global_tokens",
    [(4, 1, ()), (5, 1, (0,)), (3, 2, (0, 7)), (4, 3, (2, -1)), (6, 2, (8, 9, 10)), (1, 1, (3,))],
)
def test_matches_dense_band_and_globals(window, dilation, global_tokens, causal):
    length = 17
    q, k, v = random_qkv(length)
    mask = padding_mask(length)
    layer = LongformerAttention(
        num_heads=2, key_dim=4, window_size=window, dilation=dilation, global_tokens=global_tokens
    )
    allowed = padding_allowed(mask, mask, causal) & longformer_allowed(
        length, window, dilation, global_tokens, causal
    )
    ref = dense_attention(q, k, v, allowed)
    np.testing.assert_allclose(attend(layer, q, k, v, mask, causal)[mask], ref[mask], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_window_at_least_twice_length_is_full(causal):
    layer = LongformerAttention(num_heads=2, key_dim=4, window_size=22, global_tokens=(0,))
    assert_layer_equals_full(layer, 11, causal)


def test_global_token_in_window_is_counted_once():
    # Every key is in every window and also global: a double-counted key would get twice the
    # weight and break equality with full attention.
    length = 6
    q, k, v = random_qkv(length)
    mask = np.ones((2, length), bool)
    layer = LongformerAttention(num_heads=2, key_dim=4, window_size=12, global_tokens=(1, 2))
    ref = dense_attention(q, k, v, padding_allowed(mask, mask))
    np.testing.assert_allclose(attend(layer, q, k, v, mask), ref, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="window_size"):
        LongformerAttention(num_heads=2, key_dim=4, window_size=0)
    with pytest.raises(ValueError, match="dilation"):
        LongformerAttention(num_heads=2, key_dim=4, dilation=0)
    with pytest.raises(ValueError, match="global_tokens"):
        LongformerAttention(num_heads=2, key_dim=4, global_tokens=0)
    layer = LongformerAttention(num_heads=2, key_dim=4, window_size=2, global_tokens=(20,))
    q, k, v = random_qkv(9)
    with pytest.raises(ValueError, match="global_tokens"):
        attend(layer, q, k, v, padding_mask(9))
