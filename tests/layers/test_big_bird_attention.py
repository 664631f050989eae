import os

import keras
import numpy as np
import pytest

from lra_keras.layers import BigBirdAttention
from tests.layers.reference import dense_attention, padding_allowed
from tests.layers.variant_testing import (
    DIM,
    assert_layer_equals_full,
    attend,
    padding_mask,
    random_qkv,
)


def bigbird_allowed(length, block, table):
    """[H, L, L] token pattern built from the random table: window, global and random."""
    heads = table.shape[0]
    nb = -(-length // block)
    pattern = np.zeros((heads, nb, nb), bool)
    for q in range(nb):
        for j in range(nb):
            pattern[:, q, j] = abs(q - j) <= 1 or j in (0, nb - 1) or q in (0, nb - 1)
    for h in range(heads):
        for q in range(1, nb - 1):
            pattern[h, q, table[h, q - 1]] = True
    blocks = np.arange(length) // block
    return pattern[:, blocks][:, :, blocks]


@pytest.mark.parametrize(
    "length,block,num_random", [(21, 2, 1), (22, 2, 1), (31, 3, 1), (25, 2, 2), (13, 2, 0)]
)
def test_matches_dense_reference_from_its_table(length, block, num_random):
    q, k, v = random_qkv(length, heads=3)
    mask = padding_mask(length)
    layer = BigBirdAttention(
        num_heads=3, key_dim=4, block_size=block, num_random_blocks=num_random, seed=7
    )
    out = attend(layer, q, k, v, mask)
    assert length >= layer.min_sparse_length()  # the sparse path, not the fallback
    nb = -(-length // block)
    table = layer.random_block_table()
    if num_random == 0:
        assert table is None
        table = np.zeros((3, nb - 2, 0), int)
    assert table.shape == (3, nb - 2, num_random)
    allowed = padding_allowed(mask, mask) & bigbird_allowed(length, block, table)[None]
    np.testing.assert_allclose(out[mask], dense_attention(q, k, v, allowed)[mask], atol=1e-5)
    blocks = np.arange(length) // block
    np.testing.assert_array_equal(
        layer.block_pattern()[:, blocks][:, :, blocks], bigbird_allowed(length, block, table)
    )


def test_table_is_disjoint_seeded_and_differs_per_head():
    def table(seed):
        layer = BigBirdAttention(
            num_heads=4, key_dim=4, block_size=2, num_random_blocks=2, seed=seed
        )
        layer.build((1, 40, DIM), (1, 40, DIM))
        return layer.random_block_table()

    t = table(1)
    nb = 20
    for q in range(1, nb - 1):
        row = t[:, q - 1]
        assert np.all((row >= 1) & (row <= nb - 2) & (np.abs(row - q) > 1))
        assert all(len(set(r)) == len(r) for r in row)
    np.testing.assert_array_equal(table(1), t)
    assert not np.array_equal(table(2), t)
    assert any(not np.array_equal(t[0], t[h]) for h in range(1, 4))


def test_reloaded_layer_uses_the_same_table(tmp_path):
    length = 21
    layer = BigBirdAttention(num_heads=2, key_dim=4, block_size=2, num_random_blocks=1)
    x = np.random.default_rng(0).normal(size=(2, length, DIM)).astype("float32")
    inp = keras.Input((length, DIM))
    model = keras.Model(inp, layer(inp, inp))
    path = os.path.join(tmp_path, "bigbird.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        loaded.layers[-1].random_block_table(), layer.random_block_table()
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


def test_short_length_falls_back_to_full():
    layer = BigBirdAttention(num_heads=2, key_dim=4, block_size=2, num_random_blocks=1)
    assert layer.min_sparse_length() == 15
    assert_layer_equals_full(layer, 14)
    assert layer.random_block_table() is None
    assert layer.block_pattern().all()


def test_length_is_fixed_and_not_causal():
    layer = BigBirdAttention(num_heads=2, key_dim=4, block_size=2, num_random_blocks=1)
    x = np.zeros((1, 21, DIM), "float32")
    layer(x, x)
    with pytest.raises(ValueError, match="built for length 21"):
        layer(x[:, :19], x[:, :19])
    with pytest.raises(ValueError, match="'bigbird'.*causal"):
        layer(x, x, use_causal_mask=True)
