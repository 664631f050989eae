"""The contract suite: every name in the attention registry is tested the same way."""

import os

import keras
import numpy as np
import pytest

from lra_keras.layers import ATTENTIONS, get_attention
from tests.backends.backend_testing import compiled, loss_and_grads, to_numpy
from tests.layers.attention_cases import CASES, case
from tests.layers.reference import lengths_mask

NAMES = sorted(ATTENTIONS)
BATCH, DIM, HEADS, KEY_DIM = 2, 16, 2, 4


def make_layer(name, **overrides):
    entry = case(name)
    kwargs = dict(num_heads=HEADS, key_dim=KEY_DIM, seed=3)
    kwargs.update(entry["kwargs"])
    kwargs.update(overrides)
    return get_attention(name, **kwargs)


def inputs(name, batch=BATCH, seed=0):
    length = case(name)["length"]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, DIM)).astype("float32")
    # One full row and one padded to a bit over half its length.
    mask = lengths_mask([length, length // 2 + 1][:batch] + [length] * (batch - 2), length)
    return x, mask


def call(layer, x, mask, **kwargs):
    return keras.ops.convert_to_numpy(layer(x, x, query_mask=mask, value_mask=mask, **kwargs))


def test_every_variant_has_a_case():
    missing = sorted(set(ATTENTIONS) - set(CASES))
    assert not missing, f"add these to tests/layers/attention_cases.py: {missing}"


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="Known attention names:.*full"):
        get_attention("no_such_attention", num_heads=1, key_dim=1)


@pytest.mark.parametrize("name", NAMES)
def test_integer_arguments_refuse_floats_and_strings(name):
    # A float is a mistake to name, not a request to truncate (`block_size=63.5`).
    ints = {"num_heads": HEADS, "key_dim": KEY_DIM}
    ints.update(
        {k: v for k, v in case(name)["kwargs"].items() if type(v) is int}  # noqa: E721
    )
    for arg, value in ints.items():
        for bad in (value + 0.5, str(value)):
            with pytest.raises(ValueError, match=f"`{arg}` must be an integer"):
                make_layer(name, **{arg: bad})
        # numpy integers (configs computed with numpy) are accepted and stored as Python ints.
        stored = getattr(make_layer(name, **{arg: np.int64(value)}), arg)
        assert stored == value and type(stored) is int  # noqa: E721


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_padded_rows_zero(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    y = call(layer, x, mask)
    assert y.shape == x.shape
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[~mask], 0.0)
    assert np.abs(y[mask]).max() > 0


@pytest.mark.parametrize("name", NAMES)
def test_padding_invariance(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    y = call(layer, x, mask)
    noisy = np.where(mask[..., None], x, np.random.default_rng(9).normal(size=x.shape) * 5)
    y2 = call(layer, noisy.astype("float32"), mask)
    np.testing.assert_allclose(y2[mask], y[mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_fully_padded_row_is_zero_and_finite(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    mask[1] = False
    y = call(layer, x, mask)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[1], 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_causality(name):
    cls = ATTENTIONS[name]
    layer = make_layer(name)
    x, mask = inputs(name)
    if not cls.supports_causal:
        with pytest.raises(ValueError, match=f"'{name}'.*causal"):
            call(layer, x, mask, use_causal_mask=True)
        return
    y = call(layer, x, mask, use_causal_mask=True)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[~mask], 0.0)
    if not cls.strictly_causal:
        return  # Causally masked, but future tokens move buckets/clusters (documented).
    t = case(name)["length"] // 2
    changed = x.copy()
    changed[:, t + 1 :] = np.random.default_rng(5).normal(size=changed[:, t + 1 :].shape)
    y2 = call(layer, changed, mask, use_causal_mask=True)
    np.testing.assert_allclose(y2[:, : t + 1], y[:, : t + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_capability_errors(name):
    cls = ATTENTIONS[name]
    layer = make_layer(name)
    x, mask = inputs(name)
    if not cls.supports_attention_mask:
        dense = np.ones((BATCH, x.shape[1], x.shape[1]), bool)
        with pytest.raises(ValueError, match="query_mask"):
            layer(x, x, attention_mask=dense)
    if not cls.supports_attention_scores:
        with pytest.raises(ValueError, match=f"'{name}'.*return_attention_scores"):
            layer(x, x, return_attention_scores=True)
    if not cls.supports_cross_attention:
        with pytest.raises(ValueError, match=f"'{name}'.*cross-attention"):
            layer(x, x[:, :-1])


@pytest.mark.parametrize("name", NAMES)
def test_cross_attention_shapes(name):
    cls = ATTENTIONS[name]
    if not cls.supports_cross_attention:
        pytest.skip(f"{name} is self-attention only (checked in test_capability_errors)")
    layer = make_layer(name)
    x, _ = inputs(name)
    memory = np.random.default_rng(1).normal(size=(BATCH, x.shape[1] + 3, DIM)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, memory))
    assert y.shape == x.shape and np.all(np.isfinite(y))


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    y = call(layer, x, mask)
    clone = type(layer).from_config(layer.get_config())
    clone(x, x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(call(clone, x, mask), y, atol=1e-6)
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("name", NAMES)
def test_keras_archive_round_trip(name, tmp_path):
    layer = make_layer(name)
    x, mask = inputs(name)
    seq = keras.Input(x.shape[1:])
    pad = keras.Input(mask.shape[1:], dtype="bool")
    model = keras.Model([seq, pad], layer(seq, seq, query_mask=pad, value_mask=pad))
    y = keras.ops.convert_to_numpy(model([x, mask]))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded([x, mask])), y, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_jit_compile_equals_eager(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    y = call(layer, x, mask)
    step = compiled(lambda a, m: layer(a, a, query_mask=m, value_mask=m))
    np.testing.assert_allclose(to_numpy(step(x, mask)), y, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision_is_finite(name, policy):
    layer = make_layer(name, dtype=policy)
    x, mask = inputs(name)
    y = call(layer, x, mask)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    assert np.all(np.isfinite(np.asarray(y, np.float32)))
    np.testing.assert_array_equal(np.asarray(y, np.float32)[~mask], 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_finite_and_ignore_padding(name):
    layer = make_layer(name)
    x, mask = inputs(name)

    def loss(x):
        y = layer(x, x, query_mask=mask, value_mask=mask, training=True)
        return keras.ops.sum(y**2), y

    _, grads = loss_and_grads(loss, [x], layer.trainable_variables)
    for g in grads:
        if g is not None:
            assert np.all(np.isfinite(g))
    np.testing.assert_allclose(grads[0][~mask], 0.0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_analytic_flops_scale_with_length(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    call(layer, x, mask)
    if not hasattr(layer, "attention_flops"):
        pytest.fail(f"{name} must state its analytic FLOP count (attention_flops)")
    length = case(name)["length"]
    short = layer.attention_flops(2, 64 * length, 64 * length)
    long = layer.attention_flops(2, 128 * length, 128 * length)
    assert isinstance(short, int) and short > 0
    # Quadratic variants grow 4x when the length doubles; the others about 2x, unless the case
    # states its own growth (e.g. routing's L^1.5).
    expected = case(name).get("flops_growth", 4.0 if case(name).get("quadratic") else 2.0)
    assert long / short == pytest.approx(expected, rel=0.3)


def test_seeded_initializers_give_distinct_projections():
    layer = get_attention(
        "full",
        num_heads=HEADS,
        key_dim=KEY_DIM,
        kernel_initializer=keras.initializers.GlorotUniform(seed=1),
    )
    x, _ = inputs("full")
    layer(x, x)
    kernels = [to_numpy(w) for w in layer.weights if w.path.endswith("kernel")]
    assert len(kernels) == 4
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_padding_gives_zero_padded_rows(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    y = call(layer, x, mask)
    poisoned = np.where(mask[..., None], x, np.inf).astype("float32")
    y2 = call(layer, poisoned, mask)
    np.testing.assert_array_equal(y2[~mask], 0.0)
    np.testing.assert_allclose(y2[mask], y[mask], atol=1e-5, rtol=1e-5)
