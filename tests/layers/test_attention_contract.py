"""The contract suite: every name in the attention registry is tested the same way."""

import inspect
import os
import re

import keras
import numpy as np
import pytest

from lra_keras.layers import ATTENTIONS, TransformerEncoderBlock, get_attention
from lra_keras.zoo.config import get_config
from tests.backends.backend_testing import compiled, loss_and_grads, to_numpy
from tests.layers.attention_cases import CASES, case
from tests.layers.reference import dense_attention, lengths_mask, padding_allowed

try:  # tf.data feeds Keras on every backend; tf.function and tf.distribute need TensorFlow.
    import tensorflow as tf
except ImportError:
    tf = None

NAMES = sorted(ATTENTIONS)
# On JAX every new shape compiles, so a check costs a few seconds per name there. `make test`'s
# JAX pass runs the checks whose logic is Keras's own plumbing (the implicit mask, dropout's
# switch, non-finite values flowing through keras.ops) on these names, one of each kind of
# kernel (dense, tiled, banded, kernelised, stateful k-means, FFT, scan, EMA + attention); the
# others are marked slow there (`KERAS_BACKEND=jax pytest -m slow tests/layers` runs them).
# TensorFlow runs every name.
JAX_SAMPLE = ("full", "chunked", "local", "performer", "routing", "s4d", "lru", "s5", "mega")


def sampled_on_jax(names) -> list:
    """`names`, with those outside JAX_SAMPLE marked slow when the backend is JAX."""
    if keras.backend.backend() != "jax":
        return list(names)
    return [n if n in JAX_SAMPLE else pytest.param(n, marks=pytest.mark.slow) for n in names]


# Tests that drive the layers through TensorFlow itself (tf.function with unknown shapes,
# tf.distribute); the suite's other tests run on any Keras backend.
tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="drives TensorFlow directly"
)
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


@pytest.mark.parametrize("name", [n for n in NAMES if ATTENTIONS[n].supports_attention_mask])
def test_attention_mask_of_the_wrong_shape_is_refused(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    length = x.shape[1]
    for shape in [(BATCH, length, length + 1), (BATCH, length), (3, length, length)]:
        expected = re.escape(str((BATCH, length, length)))
        with pytest.raises(
            ValueError, match=rf"`attention_mask`.*{expected}.*{re.escape(str(shape))}"
        ):
            layer(x, x, attention_mask=np.ones(shape, bool))
    # The right shape, and a batch of 1 (broadcast, as for MultiHeadAttention), work.
    for batch in (BATCH, 1):
        y = layer(x, x, attention_mask=np.ones((batch, length, length), bool))
        assert keras.ops.convert_to_numpy(y).shape == x.shape


# Variants whose length-sized weights take a `max_length` (Linformer, Synthesizer).
MAX_LENGTH_NAMES = [
    n for n in NAMES if "max_length" in inspect.signature(ATTENTIONS[n].__init__).parameters
]


@pytest.mark.parametrize("name", MAX_LENGTH_NAMES)
def test_max_length_is_optional(name):
    # README: `get_attention(name, num_heads=..., key_dim=...)` works for any name.
    x, mask = inputs(name)
    own = {k: v for k, v in case(name)["kwargs"].items() if k != "max_length"}
    layer = get_attention(name, num_heads=HEADS, key_dim=KEY_DIM, seed=3, **own)
    assert layer.max_length is None
    y = call(layer, x, mask)
    explicit = make_layer(name, max_length=x.shape[1])
    call(explicit, x, mask)
    explicit.set_weights(layer.get_weights())  # same shapes: built for the input's length
    np.testing.assert_allclose(call(explicit, x, mask), y, atol=1e-6)
    config = layer.get_config()
    assert config["max_length"] is None
    assert type(layer).from_config(config).get_config() == config
    longer = np.concatenate([x, x[:, :1]], axis=1)
    with pytest.raises(ValueError, match="max_length"):
        layer(longer, longer)
    unknown = keras.Input((None, DIM))
    fresh = get_attention(name, num_heads=HEADS, key_dim=KEY_DIM, **own)
    with pytest.raises(ValueError, match="needs_static_length.*`max_length`"):
        fresh(unknown, unknown)
    # The zoo still sizes them for its sequence (CLS included).
    zoo = get_config("listops", name, "tiny")
    cls_token = int(zoo["pooling"] == "cls")
    assert zoo["attention_kwargs"]["max_length"] == zoo["max_length"] + cls_token


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


# Relative error (max |y - y32| / max |y32|) against float32 with the same (seeded) weights.
# It depends on the CPU's kernels, not only on the layer: TensorFlow runs bfloat16 and float16
# through oneDNN only on CPUs with AVX-512 (and TF_ENABLE_ONEDNN_OPTS not 0), through Eigen's
# kernels otherwise, which round more (axial bfloat16: 5.8e-3 reported with oneDNN on AVX-512,
# 2.8e-2 through Eigen). Feeding the float32 reference inputs and weights rounded through the
# low dtype removes only part of it (axial 2.80e-2 -> 2.75e-2, bigbird 1.94e-2 -> 1.32e-2):
# most comes from the logits, probabilities and projections the contract lets run in the low
# dtype. So the bounds are the worst case measured on the Eigen path (AMD EPYC with AVX2,
# oneDNN on and off alike, input seeds 0 and 1) times about 1.45: float16 1.32e-3
# (image_local), bfloat16 1.74e-2 (full); axial 1.70e-3 and 2.80e-2. `make test` runs these
# cases again with TF_ENABLE_ONEDNN_OPTS=0, so both paths are checked on any x86 CPU. What the
# bound cannot see (a softmax in bfloat16 moves `full` only from 1.74e-2 to 2.46e-2, within the
# rounding the contract allows) the float32 check below catches.
MIXED_PRECISION_BOUNDS = {"mixed_float16": 2e-3, "mixed_bfloat16": 2.5e-2}
MIXED_PRECISION_LOOSER = {
    # Two attention stages with a bfloat16 projection between them: twice the rounding steps.
    ("axial", "mixed_float16"): 2.5e-3,
    ("axial", "mixed_bfloat16"): 4e-2,
}
# The ops the contract keeps in float32 under mixed precision (softmax, exp, normalisers).
FLOAT32_OPS = ("softmax", "log_softmax", "exp", "logsumexp")


def relative_error(y, reference):
    y, reference = np.asarray(y, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(y - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize(
    "name,policy",
    [(name, policy) for name in NAMES for policy in ("mixed_float16", "mixed_bfloat16")],
)
def test_mixed_precision_close_to_float32(name, policy):
    x, mask = inputs(name)
    initializer = keras.initializers.GlorotUniform(seed=10)
    reference = make_layer(name, kernel_initializer=initializer)
    y32 = call(reference, x, mask)
    layer = make_layer(name, dtype=policy, kernel_initializer=initializer)
    call(layer, x, mask)
    layer.set_weights(reference.get_weights())
    y = call(layer, x, mask)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    y = np.asarray(y, np.float32)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[~mask], 0.0)
    bound = MIXED_PRECISION_LOOSER.get((name, policy), MIXED_PRECISION_BOUNDS[policy])
    assert relative_error(y, y32) <= bound


@pytest.mark.parametrize(
    "name,policy",
    [(name, policy) for name in NAMES for policy in ("mixed_float16", "mixed_bfloat16")],
)
def test_mixed_precision_softmax_and_exp_run_in_float32(name, policy, monkeypatch):
    # The contract's rule checked where it is kept, independent of the CPU's rounding: every
    # softmax and exp the layer computes through keras.ops takes a float32 input.
    seen = []
    for op in FLOAT32_OPS:

        def spy(x, *args, _op=op, _original=getattr(keras.ops, op), **kwargs):
            seen.append((_op, keras.backend.standardize_dtype(getattr(x, "dtype", "float32"))))
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(keras.ops, op, spy)
    x, mask = inputs(name)
    call(make_layer(name, dtype=policy), x, mask)
    low = sorted({(op, dtype) for op, dtype in seen if dtype != "float32"})
    assert not low, f"{name} under {policy} computes {low} (the contract keeps them float32)"


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


def assert_no_two_weights_equal(weights):
    """No two non-constant weights agree (on their common flattened prefix, which is where
    two draws from one seed coincide): equal only where a layer ties them on purpose, and a
    tied weight is one variable here."""
    drawn = [(w.path, np.asarray(to_numpy(w), np.float64).ravel()) for w in weights]
    drawn = [(p, v) for p, v in drawn if v.size > 1 and np.ptp(v) > 0]
    for i, (path_i, a) in enumerate(drawn):
        for path_j, b in drawn[i + 1 :]:
            n = min(a.size, b.size)
            assert not np.allclose(a[:n], b[:n]), f"{path_i} == {path_j} at init"


SEEDED_CASES = {
    # Weights the registry cases do not build: E and F unshared, factorized random logits.
    "linformer": {"share_kv": False},
    "synthesizer": {"mode": "factorized_random"},
}


@pytest.mark.parametrize(
    "name,extra",
    [(name, {}) for name in NAMES]
    + [(n, kw) for n, kw in sorted(SEEDED_CASES.items())]
    + [("synthesizer", {"mode": "factorized_dense"}), ("synthesizer", {"mode": "random"})],
)
def test_seeded_initializer_gives_distinct_weights(name, extra):
    layer = make_layer(name, kernel_initializer=keras.initializers.GlorotUniform(seed=1), **extra)
    x, mask = inputs(name)
    call(layer, x, mask)
    assert_no_two_weights_equal(layer.weights)


@pytest.mark.parametrize("name", sampled_on_jax(NAMES))
def test_non_finite_padding_gives_zero_padded_rows(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    y = call(layer, x, mask)
    poisoned = np.where(mask[..., None], x, np.inf).astype("float32")
    y2 = call(layer, poisoned, mask)
    np.testing.assert_array_equal(y2[~mask], 0.0)
    np.testing.assert_allclose(y2[mask], y[mask], atol=1e-5, rtol=1e-5)


# ------------------------------------------------ drop-in: Keras masks, lengths, seeds, dtypes


def token_ids(name, seed=0):
    """[2, L] ids in 1..19 with the second row zero-padded (id 0 = padding)."""
    _, mask = inputs(name)
    ids = np.random.default_rng(seed).integers(1, 20, size=mask.shape)
    return np.where(mask, ids, 0).astype("int32"), mask


@pytest.mark.parametrize("name", sampled_on_jax(NAMES))
def test_keras_implicit_mask_equals_explicit_masks(name):
    # The everyday Keras input: an Embedding with mask_zero=True feeding the layer (and the
    # encoder block) in a functional model, with no mask passed by hand.
    ids, mask = token_ids(name)
    tokens = keras.Input(ids.shape[1:], dtype="int32")
    embedding = keras.layers.Embedding(20, DIM, mask_zero=True)
    seq = embedding(tokens)
    layer = make_layer(name)
    block = TransformerEncoderBlock(
        num_heads=HEADS,
        key_dim=KEY_DIM,
        mlp_dim=8,
        attention=name,
        attention_kwargs=dict(case(name)["kwargs"], seed=3),
    )
    model = keras.Model(tokens, [layer(seq, seq), block(seq)])
    y, y_block = (keras.ops.convert_to_numpy(t) for t in model(ids))
    x = keras.ops.convert_to_numpy(embedding(ids))
    np.testing.assert_allclose(y, call(layer, x, mask), atol=1e-6)
    explicit = keras.ops.convert_to_numpy(block(x, padding_mask=mask))
    np.testing.assert_allclose(y_block, explicit, atol=1e-6)
    # The mask flows on to the next layer, as after MultiHeadAttention.
    assert model.outputs[0]._keras_mask is not None


def test_keras_implicit_mask_full_equals_multi_head_attention():
    ids, mask = token_ids("full")
    tokens = keras.Input(ids.shape[1:], dtype="int32")
    seq = keras.layers.Embedding(20, DIM, mask_zero=True)(tokens)
    mha = keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM)
    full = make_layer("full")
    model = keras.Model(tokens, [mha(seq, seq), full(seq, seq)])
    full.load_mha_weights(mha)
    y_mha, y_full = (keras.ops.convert_to_numpy(t) for t in model(ids))
    np.testing.assert_allclose(y_full[mask], y_mha[mask], atol=1e-5)


@tensorflow_only
@pytest.mark.parametrize(
    "name,causal",
    [
        (name, causal)
        for name in NAMES
        for causal in ((False, True) if ATTENTIONS[name].supports_causal else (False,))
    ],
)
def test_unknown_length(name, causal):
    layer = make_layer(name)
    x, mask = inputs(name)
    seq = keras.Input((None, DIM))
    pad = keras.Input((None,), dtype="bool")
    if layer.needs_static_length:
        with pytest.raises(ValueError, match=f"{type(layer).__name__}.*static sequence length"):
            layer(seq, seq, query_mask=pad, value_mask=pad, use_causal_mask=causal)
        return
    model = keras.Model(
        [seq, pad], layer(seq, seq, query_mask=pad, value_mask=pad, use_causal_mask=causal)
    )
    expected = call(layer, x, mask, use_causal_mask=causal)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model([x, mask])), expected, atol=1e-5)
    unknown = tf.function(
        lambda a, m: layer(a, a, query_mask=m, value_mask=m, use_causal_mask=causal),
        input_signature=[tf.TensorSpec((None, None, DIM)), tf.TensorSpec((None, None), "bool")],
    )
    np.testing.assert_allclose(unknown(x, mask).numpy(), expected, atol=1e-5)


@pytest.mark.skipif(tf is None, reason="tf.data is not installed")
@pytest.mark.parametrize("name,causal", [("full", True), ("local", False)])
def test_fit_on_padded_batches_of_varying_length(name, causal):
    # Keras's everyday text pipeline: padded_batch gives each batch its own length.
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 20, size=n).astype("int32") for n in (3, 5, 9, 4, 11, 6)]
    data = tf.data.Dataset.from_generator(
        lambda: ((r, np.float32(len(r) % 2)) for r in rows),
        output_signature=(tf.TensorSpec((None,), "int32"), tf.TensorSpec((), "float32")),
    ).padded_batch(2)
    tokens = keras.Input((None,), dtype="int32")
    seq = keras.layers.Embedding(20, DIM, mask_zero=True)(tokens)
    y = make_layer(name)(seq, seq, use_causal_mask=causal)
    out = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(y))
    model = keras.Model(tokens, out)
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(data, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("name", sampled_on_jax(NAMES))
def test_attention_dropout_applies_or_is_refused(name):
    cls = ATTENTIONS[name]
    if not cls.has_attention_probabilities:
        with pytest.raises(ValueError, match=f"'{name}'.*no attention probabilities.*`dropout`"):
            make_layer(name, dropout=0.5)
        config = get_config("listops", name, "tiny", max_length=16)
        assert config["attention_dropout"] == 0.0  # the preset's 0.1 is not passed on
        with pytest.raises(ValueError, match="attention_dropout"):
            get_config("listops", name, "tiny", max_length=16, attention_dropout=0.1)
        return
    layer = make_layer(name, dropout=0.5)
    x, mask = inputs(name)
    inference = call(layer, x, mask)
    np.testing.assert_allclose(call(layer, x, mask, training=False), inference)
    clean = make_layer(name)
    call(clean, x, mask)
    clean.set_weights(layer.get_weights())
    np.testing.assert_allclose(call(clean, x, mask), inference, atol=1e-6)
    # In training the probabilities are dropped: the output moves, padded rows stay zero.
    trained = call(layer, x, mask, training=True)
    np.testing.assert_array_equal(trained[~mask], 0.0)
    assert np.abs(trained - inference).max() > 1e-3


def test_structure_drawn_at_build_follows_the_seed():
    # Performer's W, BigBird's table, Reformer's rotations: a function of `seed`, and with
    # seed=None of keras.utils.set_random_seed (never OS entropy or NumPy's global state).
    def drawn(name, **kwargs):
        layer = make_layer(name, **kwargs)
        call(layer, *inputs(name))
        return [w.numpy() for w in layer.non_trainable_weights]

    for name in ("performer", "bigbird", "reformer"):
        np.testing.assert_array_equal(drawn(name)[0], drawn(name)[0])
        assert not np.array_equal(drawn(name)[0], drawn(name, seed=4)[0])
        keras.utils.set_random_seed(11)
        first = drawn(name, seed=None)[0]
        keras.utils.set_random_seed(11)
        np.random.seed(99)  # noqa: NPY002 (NumPy's global state must not matter)
        np.testing.assert_array_equal(drawn(name, seed=None)[0], first)


@tensorflow_only
@pytest.mark.parametrize("name", NAMES)
def test_builds_lazily_inside_strategy_run(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        lazy = make_layer(name)

    @tf.function
    def step(a, m):
        return strategy.run(lambda a, m: lazy(a, a, query_mask=m, value_mask=m), args=(a, m))

    y = step(tf.constant(x), tf.constant(mask))
    call(layer, x, mask)
    layer.set_weights(lazy.get_weights())
    np.testing.assert_allclose(
        strategy.experimental_local_results(y)[0].numpy(), call(layer, x, mask), atol=1e-5
    )


def _projected(layer, query, memory):
    """numpy q [B,T,H,d], k, v [B,S,H,d] from the layer's own projection weights."""

    def project(dense, x):
        out = np.einsum("bsc,chd->bshd", x, dense.kernel.numpy())
        return out + dense.bias.numpy() if dense.bias is not None else out

    return (
        project(layer._query_dense, query),
        project(layer._key_dense, memory),
        project(layer._value_dense, memory),
    )


def _output(layer, out):
    dense = layer._output_dense
    return np.einsum("bthd,hdo->bto", out, dense.kernel.numpy()) + dense.bias.numpy()


def _reference_full(layer, q, k, v, memory_mask):
    return dense_attention(q, k, v, padding_allowed(np.ones(q.shape[:2], bool), memory_mask))


def _reference_set(layer, q, k, v, memory_mask):
    # ISAB (Lee et al. 2019): H = Attn(I, X), then Attn(Q, [H W_K, H W_V]).
    points = layer.inducing_points.numpy()
    points = np.broadcast_to(points, (q.shape[0],) + points.shape)
    m = points.shape[1]
    induced = dense_attention(
        points, k, v, padding_allowed(np.ones((q.shape[0], m), bool), memory_mask)
    )
    k2 = np.einsum("bmhd,hdge->bmge", induced, layer._inducing_key_dense.kernel.numpy())
    v2 = np.einsum("bmhd,hdge->bmge", induced, layer._inducing_value_dense.kernel.numpy())
    k2 = k2 + layer._inducing_key_dense.bias.numpy()
    v2 = v2 + layer._inducing_value_dense.bias.numpy()
    return dense_attention(q, k2, v2, True)


def _reference_performer_relu(layer, q, k, v, memory_mask):
    # Performer's ReLU kernel (Choromanski et al. 2021): phi(x) = relu(W x / sqrt(m)) + eps,
    # then linear attention phi(q) (sum_j phi(k_j) v_j^T) / phi(q) . sum_j phi(k_j).
    w = layer.projection.numpy().astype(np.float64)

    def phi(x):
        return np.maximum(np.einsum("blhd,md->blhm", x, w) / np.sqrt(w.shape[0]), 0) + 1e-3

    phi_q, phi_k = phi(q), phi(k) * memory_mask[:, :, None, None]
    num = np.einsum("bthm,bshm,bshd->bthd", phi_q, phi_k, v)
    den = np.einsum("bthm,bshm->bth", phi_q, phi_k)[..., None]
    return num / den


def _memory_compressed_identity(layer):
    # Compression rate 1 with identity kernels and zero biases: exactly full attention.
    for part in ("key", "value"):
        kernel = getattr(layer, f"{part}_compression_kernel")
        kernel.assign(np.broadcast_to(np.eye(kernel.shape[-1]), kernel.shape).astype("float32"))
        getattr(layer, f"{part}_compression_bias").assign(np.zeros(kernel.shape[1:3], "float32"))
    return _reference_full


CROSS_REFERENCES = {
    "full": ({}, lambda layer: _reference_full),
    "set": ({}, lambda layer: _reference_set),
    "performer": ({"kernel": "relu"}, lambda layer: _reference_performer_relu),
    "memory_compressed": ({"compression_rate": 1}, _memory_compressed_identity),
}


@pytest.mark.parametrize("name", sorted(CROSS_REFERENCES))
def test_cross_attention_numerics(name):
    overrides, reference = CROSS_REFERENCES[name]
    layer = make_layer(name, **overrides)
    x, _ = inputs(name)
    rng = np.random.default_rng(1)
    memory = rng.normal(size=(BATCH, x.shape[1] + 3, DIM)).astype("float32")
    memory_mask = lengths_mask([memory.shape[1], memory.shape[1] - 2], memory.shape[1])
    layer(x, memory, value_mask=memory_mask)
    ref = reference(layer)
    q, k, v = (a.astype(np.float64) for a in _projected(layer, x, memory))
    expected = _output(layer, ref(layer, q, k, v, memory_mask))
    y = keras.ops.convert_to_numpy(layer(x, memory, value_mask=memory_mask))
    np.testing.assert_allclose(y, expected, atol=2e-5, rtol=1e-4)


# Variants whose length is a grid (L = h * w) refuse a length of 0 naming the grid argument.
# Variants whose static structure (grid, SortNet blocks) is fixed by the length at build
# refuse a length of 0, naming the argument that defines it.
GRID_ARGUMENT = {"axial": "axis_shape", "image_local": "image_shape", "sinkhorn": "block_size"}


@pytest.mark.parametrize("empty", ["batch", "length"])
@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_or_length(name, empty):
    layer = make_layer(name)
    x, mask = inputs(name)
    x, mask = (x[:0], mask[:0]) if empty == "batch" else (x[:, :0], mask[:, :0])
    if empty == "length" and name in GRID_ARGUMENT:
        with pytest.raises(ValueError, match=f"{GRID_ARGUMENT[name]}.*got length 0"):
            call(layer, x, mask)
        return
    y = call(layer, x, mask)
    assert y.shape == x.shape
