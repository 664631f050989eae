import keras
import numpy as np
import pytest

from lra_keras.layers import FNetMixing, TransformerEncoderBlock, get_attention
from lra_keras.zoo.config import attention_parameters
from tests.layers.reference import lengths_mask


def numpy_fnet(x, mask):
    x_masked = np.where(mask[..., None], np.asarray(x, np.float64), 0.0)
    return np.where(mask[..., None], np.real(np.fft.fft2(x_masked)), 0.0)


def inputs(length=13, dim=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(2, length, dim)).astype("float32")
    return x, lengths_mask([length, length // 2], length)


@pytest.mark.parametrize("length,dim", [(13, 16), (8, 6)])
def test_matches_numpy_real_fft2(length, dim):
    x, mask = inputs(length, dim)
    layer = FNetMixing()
    y = keras.ops.convert_to_numpy(layer(x, x, query_mask=mask, value_mask=mask))
    np.testing.assert_allclose(y, numpy_fnet(x, mask), atol=1e-4, rtol=1e-5)
    # Without masks it is the plain transform.
    y = keras.ops.convert_to_numpy(layer(x, x))
    np.testing.assert_allclose(y, np.real(np.fft.fft2(x.astype(np.float64))), atol=1e-4)


def test_non_finite_padded_contents_do_not_leak():
    x, mask = inputs()
    y = keras.ops.convert_to_numpy(FNetMixing()(x, x, query_mask=mask, value_mask=mask))
    bad = np.where(mask[..., None], x, np.nan).astype("float32")
    y2 = keras.ops.convert_to_numpy(FNetMixing()(bad, bad, query_mask=mask, value_mask=mask))
    np.testing.assert_array_equal(y2, y)


def test_keras_implicit_mask_is_honoured():
    tokens = np.array([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 0, 0, 0, 0]])
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)
    e = embedded(tokens)
    y = keras.ops.convert_to_numpy(FNetMixing()(e, e))
    np.testing.assert_allclose(y, numpy_fnet(keras.ops.convert_to_numpy(e), tokens > 0), atol=1e-4)


def test_mixed_precision_computes_in_float32():
    x, mask = inputs()
    y = FNetMixing(dtype="mixed_bfloat16")(x, x, query_mask=mask, value_mask=mask)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    # Only the input and output roundings of bfloat16 (8 bits of mantissa), no bf16 FFT.
    x_bf16 = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(x, "bfloat16"), "float32"))
    want = numpy_fnet(x_bf16, mask)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")), want, rtol=2**-7, atol=1e-2
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"use_causal_mask": True}, "'fnet'.*causal"),
        ({"return_attention_scores": True}, "'fnet'.*return_attention_scores"),
        ({"attention_mask": np.ones((2, 13, 13), bool)}, "'fnet'.*query_mask"),
    ],
)
def test_capability_errors(kwargs, match):
    x, _ = inputs()
    with pytest.raises(ValueError, match=match):
        FNetMixing()(x, x, **kwargs)


def test_cross_attention_and_output_shape_errors():
    x, _ = inputs()
    with pytest.raises(ValueError, match="'fnet'.*cross-attention"):
        FNetMixing()(x, x[:, :-2])
    with pytest.raises(ValueError, match="output_shape"):
        FNetMixing(output_shape=8)(x, x)
    assert FNetMixing(output_shape=16)(x, x).shape == x.shape
    with pytest.raises(ValueError, match="attention_axes"):
        FNetMixing(attention_axes=(1,))


def test_built_like_every_variant():
    mha_args = dict(
        num_heads=2,
        key_dim=8,
        value_dim=4,
        dropout=0.0,
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer="l2",
        seed=7,
        dtype="float32",
        name="mixer",
    )
    layer = get_attention("fnet", **mha_args)
    assert isinstance(layer, FNetMixing) and layer.name == "mixer"
    assert (layer.num_heads, layer.key_dim, layer.value_dim, layer.seed) == (2, 8, 4, 7)
    assert layer.dropout == 0.0 and layer.use_bias is False
    assert {"num_heads", "key_dim", "dropout", "seed"} <= set(attention_parameters(FNetMixing))
    x, mask = inputs()
    assert not layer.weights and layer.projection_flops(2, 13, 13) == 0
    layer(x, x)
    n = 13 * 16
    assert layer.attention_flops(2, 13, 13) == int(2 * 5 * n * np.log2(n))
    clone = FNetMixing.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="load_mha_weights"):
        layer.load_mha_weights(layer)
    block = TransformerEncoderBlock(num_heads=2, key_dim=8, mlp_dim=32, attention="fnet")
    assert block(x, padding_mask=mask).shape == x.shape
