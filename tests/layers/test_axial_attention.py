import keras
import numpy as np
import pytest

from lra_keras.layers import AxialAttention, FullAttention
from tests.layers.reference import dense_attention, padding_allowed
from tests.layers.variant_testing import DIM, padding_mask


def weights(layer, name):
    """(kernel, bias) of the named projection sublayer, as float64 numpy."""
    sub = {
        "query": layer._query_dense,
        "key": layer._key_dense,
        "value": layer._value_dense,
        "row_output": layer._row_output_dense,
        "column_query": layer._column_query_dense,
        "column_key": layer._column_key_dense,
        "column_value": layer._column_value_dense,
        "attention_output": layer._output_dense,
    }[name]
    assert sub.name == name
    return tuple(w.numpy().astype(np.float64) for w in sub.weights)


def heads_projection(x, kernel, bias):
    """[B, L, D] @ [D, H, d] + [H, d] -> [B, L, H, d]."""
    return np.einsum("bld,dhe->blhe", x, kernel) + bias


def output_projection(heads, kernel, bias):
    """[B, L, H, d] @ [H, d, D] + [D] -> [B, L, D]."""
    return np.einsum("blhe,hed->bld", heads, kernel) + bias


def axial_reference(layer, x, mask, h, w):
    """Ho et al.: a row attention layer, then a column attention layer on its output, each
    multi-head attention with its own q, k, v and output projections; padded keys excluded."""
    pos = np.arange(h * w)
    same_row = pos[:, None] // w == pos[None, :] // w
    same_col = pos[:, None] % w == pos[None, :] % w
    pad = padding_allowed(mask, mask)
    x = np.asarray(x, np.float64)

    def stage(inputs, prefix, out_name, allowed):
        q, k, v = (heads_projection(inputs, *weights(layer, prefix + n)) for n in QKV)
        return output_projection(dense_attention(q, k, v, allowed), *weights(layer, out_name))

    y = stage(x, "", "row_output", pad & same_row)
    return stage(y, "column_", "attention_output", pad & same_col)


QKV = ("query", "key", "value")


def make(grid, **kwargs):
    return AxialAttention(
        num_heads=2,
        key_dim=4,
        axis_shape=grid,
        bias_initializer=keras.initializers.RandomNormal(seed=3),
        seed=1,
        **kwargs,
    )


@pytest.mark.parametrize("grid", [(3, 4), (4, 3), (2, 5)])
def test_matches_paper_reference(grid):
    length = grid[0] * grid[1]
    x = np.random.default_rng(0).normal(size=(2, length, DIM)).astype("float32")
    mask = padding_mask(length)
    layer = make(grid)
    y = layer(x, x, query_mask=mask, value_mask=mask).numpy()
    ref = axial_reference(layer, x, mask, *grid)
    np.testing.assert_allclose(y[mask], ref[mask], atol=1e-5)
    np.testing.assert_array_equal(y[~mask], 0.0)


def identity_heads(layer):
    """Column value and output projections that pass a [B, L, H * dv] row output through."""
    eye = np.eye(DIM, dtype="float32")
    zero = np.zeros
    layer._column_value_dense.set_weights([eye.reshape(DIM, 2, 4), zero((2, 4), "float32")])
    layer._output_dense.set_weights([eye.reshape(2, 4, DIM), zero((DIM,), "float32")])


def test_one_row_is_full_attention_and_load_fills_the_row_stage():
    # One row: the row stage is full attention, and each column holds one token, so with an
    # identity column value/output the layer is the MultiHeadAttention it was loaded from.
    length = 11
    x = np.random.default_rng(1).normal(size=(2, length, DIM)).astype("float32")
    mask = padding_mask(length)
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    expected = mha(x, x, attention_mask=mask[:, None, :] & mask[:, :, None]).numpy()
    layer = make((1, length))
    layer(x, x)
    before = {n: weights(layer, n) for n in ("column_query", "column_key", "column_value")}
    layer.load_mha_weights(mha)
    sources = (mha._query_dense, mha._key_dense, mha._value_dense, mha._output_dense)
    for name, source in zip(QKV + ("row_output",), sources, strict=True):
        for got, want in zip(weights(layer, name), source.weights, strict=True):
            np.testing.assert_array_equal(got, want.numpy())
    for name, values in before.items():  # The column stage keeps its own weights.
        for got, want in zip(weights(layer, name), values, strict=True):
            np.testing.assert_array_equal(got, want)
    identity_heads(layer)
    y = layer(x, x, query_mask=mask, value_mask=mask).numpy()
    np.testing.assert_allclose(y[mask], expected[mask], atol=1e-5)


def test_stages_have_distinct_weights_from_seeded_initializers():
    layer = AxialAttention(
        num_heads=2,
        key_dim=4,
        axis_shape=(3, 4),
        kernel_initializer=keras.initializers.GlorotUniform(seed=1),
    )
    x = np.zeros((1, 12, DIM), "float32")
    layer(x, x)
    kernels = [w.numpy() for w in layer.weights if w.path.endswith("kernel")]
    assert len(kernels) == 8
    flat = [k.ravel() for k in kernels]
    for i in range(8):
        for j in range(i + 1, 8):
            n = min(flat[i].size, flat[j].size)
            assert not np.allclose(flat[i][:n], flat[j][:n]), (i, j)


def test_grid_errors():
    with pytest.raises(ValueError, match="axis_shape"):
        AxialAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="axis_shape"):
        AxialAttention(num_heads=2, key_dim=4, axis_shape=(3, 0))
    layer = AxialAttention(num_heads=2, key_dim=4, axis_shape=(3, 4))
    x = np.zeros((1, 13, DIM), "float32")
    with pytest.raises(ValueError, match=r"axis_shape.*12.*13"):
        layer(x, x)
    full = FullAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="built"):
        AxialAttention(num_heads=2, key_dim=4, axis_shape=(3, 4)).load_mha_weights(full)
