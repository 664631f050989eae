import numpy as np
import pytest

from lra_keras.layers import AxialAttention
from tests.layers.reference import dense_attention, padding_allowed
from tests.layers.variant_testing import (
    DIM,
    assert_layer_equals_full,
    attend,
    padding_mask,
    random_qkv,
)


def row_then_column(q, k, v, mask, h, w):
    """Rows with (q, k, v), then columns with (q, k) and the row output as values."""
    pos = np.arange(h * w)
    same_row = pos[:, None] // w == pos[None, :] // w
    same_col = pos[:, None] % w == pos[None, :] % w
    pad = padding_allowed(mask, mask)
    y = dense_attention(q, k, v, pad & same_row)
    return dense_attention(q, k, y, pad & same_col)


@pytest.mark.parametrize("grid", [(3, 4), (4, 3), (2, 5)])
def test_matches_dense_row_then_column(grid):
    length = grid[0] * grid[1]
    q, k, v = random_qkv(length)
    mask = padding_mask(length)
    layer = AxialAttention(num_heads=2, key_dim=4, axis_shape=grid)
    ref = row_then_column(q, k, v, mask, *grid)
    np.testing.assert_allclose(attend(layer, q, k, v, mask)[mask], ref[mask], atol=1e-5)


def test_one_row_or_one_column_is_full_attention():
    assert_layer_equals_full(AxialAttention(num_heads=2, key_dim=4, axis_shape=(1, 11)), 11)
    assert_layer_equals_full(AxialAttention(num_heads=2, key_dim=4, axis_shape=(11, 1)), 11)


def test_grid_errors():
    with pytest.raises(ValueError, match="axis_shape"):
        AxialAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="axis_shape"):
        AxialAttention(num_heads=2, key_dim=4, axis_shape=(3, 0))
    layer = AxialAttention(num_heads=2, key_dim=4, axis_shape=(3, 4))
    x = np.zeros((1, 13, DIM), "float32")
    with pytest.raises(ValueError, match=r"axis_shape.*12.*13"):
        layer(x, x)
