"""Rotary positions: the rotation against RoFormer's definition, and in every variant."""

import keras
import numpy as np
import pytest

from lra_keras.layers import ATTENTIONS, LRAEncoder, RotaryEmbedding, get_attention
from lra_keras.zoo import build_model, get_config
from tests.layers.attention_cases import case
from tests.layers.reference import dense_attention, lengths_mask, padding_allowed

HEADS, KEY_DIM, DIM = 2, 4, 16
ROTARY = sorted(n for n, cls in ATTENTIONS.items() if getattr(cls, "supports_rotary", False))
NOT_ROTARY = sorted(set(ATTENTIONS) - set(ROTARY))


def rotation_reference(x, start=0, max_wavelength=10000.0):
    """RoFormer's block-diagonal rotation R_m applied at each position m, in float64.

    `x` is `[batch, length, heads, d]`; the 2x2 blocks act on the pairs (i, i + d/2) with the
    angle m * max_wavelength^(-2i/d).
    """
    x = np.asarray(x, np.float64)
    d = x.shape[-1]
    out = np.empty_like(x)
    for m in range(x.shape[1]):
        rotation = np.zeros((d, d))
        for i in range(d // 2):
            angle = (m + start) * max_wavelength ** (-2.0 * i / d)
            c, s = np.cos(angle), np.sin(angle)
            j = i + d // 2
            rotation[i, i], rotation[i, j] = c, -s
            rotation[j, i], rotation[j, j] = s, c
        out[:, m] = np.einsum("ef,bhf->bhe", rotation, x[:, m])
    return out


def test_matches_keras_hub_published_values():
    # keras-hub's RotaryEmbedding test: ones [1, 4, 6], positions 0 and 3, max_wavelength 1e4.
    y = keras.ops.convert_to_numpy(RotaryEmbedding()(np.ones((1, 4, 6), "float32")))
    np.testing.assert_allclose(y[0, 0], np.ones(6), atol=1e-4)
    np.testing.assert_allclose(
        y[0, 3], [-1.1311, 0.8515, 0.9935, -0.8489, 1.1291, 1.0064], atol=1e-4
    )


@pytest.mark.parametrize("start", [0, 5])
def test_equals_the_block_diagonal_rotation(start):
    x = np.random.default_rng(0).normal(size=(2, 7, 3, 8)).astype("float32")
    y = RotaryEmbedding(max_wavelength=100)(x, start_index=start)
    ref = rotation_reference(x, start=start, max_wavelength=100.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), ref, atol=1e-5)


def test_logits_depend_only_on_relative_position():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 9, 1, 8)).astype("float32")
    k = rng.normal(size=(1, 9, 1, 8)).astype("float32")
    layer = RotaryEmbedding()

    def logits(start):
        rq = keras.ops.convert_to_numpy(layer(q, start_index=start))[0, :, 0]
        rk = keras.ops.convert_to_numpy(layer(k, start_index=start))[0, :, 0]
        return rq @ rk.T

    np.testing.assert_allclose(logits(0), logits(37), atol=1e-4)
    # Without a shift, the logits do change with the positions (a rotation is not identity).
    assert np.abs(logits(0) - q[0, :, 0] @ k[0, :, 0].T).max() > 1e-2


def test_sequence_and_feature_axes_are_arguments():
    x = np.random.default_rng(2).normal(size=(2, 3, 7, 6)).astype("float32")  # [B, H, L, d]
    y = RotaryEmbedding(sequence_axis=2)(x)
    ref = rotation_reference(np.swapaxes(x, 1, 2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), np.swapaxes(ref, 1, 2), atol=1e-5)


def test_refuses_odd_features_and_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding()(np.ones((1, 4, 5), "float32"))
    with pytest.raises(ValueError, match="max_wavelength"):
        RotaryEmbedding(max_wavelength=1)
    with pytest.raises(ValueError, match="key_dim` must be even"):
        get_attention("full", num_heads=2, key_dim=3, rotary=True)


def test_full_attention_with_rotary_equals_the_reference():
    length = 11
    layer = get_attention("full", num_heads=HEADS, key_dim=KEY_DIM, rotary=True, seed=1)
    x = np.random.default_rng(3).normal(size=(2, length, DIM)).astype("float32")
    mask = lengths_mask([length, 7], length)
    y = keras.ops.convert_to_numpy(
        layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True)
    )

    def project(dense, inputs):
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
        return np.einsum("btc,chd->bthd", inputs, kernel) + bias

    xz = np.where(mask[..., None], x, 0.0)
    q = rotation_reference(project(layer._query_dense, xz))
    k = rotation_reference(project(layer._key_dense, xz))
    v = project(layer._value_dense, xz)
    o = dense_attention(q, k, v, padding_allowed(mask, mask, causal=True))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer._output_dense.weights)
    ref = np.einsum("bthd,hdo->bto", o, kernel) + bias
    ref = np.where(mask[..., None], ref, 0.0)
    np.testing.assert_allclose(y, ref, atol=1e-5)


def _layer_and_inputs(name, seed=0):
    entry = case(name)
    length = entry["length"]
    layer = get_attention(
        name, num_heads=HEADS, key_dim=KEY_DIM, seed=3, rotary=True, **entry["kwargs"]
    )
    x = np.random.default_rng(seed).normal(size=(2, length, DIM)).astype("float32")
    return layer, x, lengths_mask([length, length // 2 + 1], length)


def _call(layer, x, mask, **kwargs):
    return keras.ops.convert_to_numpy(layer(x, x, query_mask=mask, value_mask=mask, **kwargs))


@pytest.mark.parametrize("name", ROTARY)
def test_rotary_variant_keeps_the_contract(name):
    layer, x, mask = _layer_and_inputs(name)
    y = _call(layer, x, mask)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[~mask], 0.0)
    noisy = np.where(mask[..., None], x, np.random.default_rng(9).normal(size=x.shape) * 5)
    np.testing.assert_allclose(
        _call(layer, noisy.astype("float32"), mask)[mask], y[mask], atol=1e-5
    )
    # Rotary positions change what the variant computes.
    plain = get_attention(name, num_heads=HEADS, key_dim=KEY_DIM, seed=3, **case(name)["kwargs"])
    plain(x, x, query_mask=mask, value_mask=mask)
    plain.load_mha_weights(layer)
    assert np.abs(_call(plain, x, mask) - y)[mask].max() > 1e-4
    restored = type(layer).from_config(layer.get_config())
    assert restored.rotary and restored.rotary_max_wavelength == layer.rotary_max_wavelength
    cls = ATTENTIONS[name]
    if not (cls.supports_causal and cls.strictly_causal):
        return
    y = _call(layer, x, mask, use_causal_mask=True)
    t = x.shape[1] // 2
    changed = x.copy()
    changed[:, t + 1 :] = np.random.default_rng(5).normal(size=changed[:, t + 1 :].shape)
    y2 = _call(layer, changed, mask, use_causal_mask=True)
    np.testing.assert_allclose(y2[:, : t + 1], y[:, : t + 1], atol=1e-5)


@pytest.mark.parametrize("name", NOT_ROTARY)
def test_variants_without_query_key_products_refuse_rotary(name):
    with pytest.raises(ValueError, match=f"'{name}'.*rotary"):
        get_attention(name, num_heads=HEADS, key_dim=KEY_DIM, rotary=True, **case(name)["kwargs"])


def test_encoder_rotary_has_no_position_table_and_round_trips():
    enc = LRAEncoder(
        vocab_size=20,
        max_length=12,
        embed_dim=16,
        num_layers=1,
        num_heads=2,
        key_dim=8,
        mlp_dim=32,
        attention="local",
        attention_kwargs={"block_size": 4},
        positions="rotary",
    )
    tokens = np.random.default_rng(0).integers(1, 20, size=(2, 12)).astype("int32")
    y = enc(tokens)
    assert enc.position_embedding is None
    assert enc.blocks[0].attention_layer.rotary
    assert not any("position" in w.path for w in enc.weights)
    restored = LRAEncoder.from_config(enc.get_config())
    restored(tokens)
    restored.set_weights(enc.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(tokens)), keras.ops.convert_to_numpy(y), atol=1e-6
    )
    with pytest.raises(ValueError, match="positions"):
        LRAEncoder(20, 12, 16, 1, 2, 8, 32, positions="relative")
    with pytest.raises(ValueError, match="'fnet'.*rotary"):
        LRAEncoder(20, 12, 16, 1, 2, 8, 32, attention="fnet", positions="rotary")
    with pytest.raises(ValueError, match="segment-recurrent"):
        LRAEncoder(20, 12, 16, 1, 2, 8, 32, attention="transformer_xl", positions="rotary")


def test_zoo_positions_key():
    assert get_config("listops", "full", "tiny")["positions"] == "sinusoidal"
    assert get_config("image", "full", "lra")["positions"] == "learned"
    config = get_config("listops", "local", "tiny", positions="rotary")
    assert config["positions"] == "rotary" and not config["learned_positions"]
    model = build_model("listops", "local", "tiny", positions="rotary")
    tokens = np.ones((2, config["max_length"]), "int32")
    assert model({"tokens": tokens}).shape == (2, config["num_classes"])
    with pytest.raises(ValueError, match="'synthesizer'.*rotary"):
        get_config("listops", "synthesizer", "tiny", positions="rotary")
    with pytest.raises(ValueError, match="positions"):
        get_config("listops", "full", "tiny", positions="alibi")


def test_rotary_under_mixed_bfloat16_is_close_to_float32():
    x = np.random.default_rng(4).normal(size=(2, 10, DIM)).astype("float32")
    ref_layer = get_attention("full", num_heads=HEADS, key_dim=KEY_DIM, rotary=True, seed=2)
    ref = keras.ops.convert_to_numpy(ref_layer(x, x))
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = get_attention("full", num_heads=HEADS, key_dim=KEY_DIM, rotary=True, seed=2)
    layer(x, x)
    layer.load_mha_weights(ref_layer)
    y = keras.ops.convert_to_numpy(keras.ops.cast(layer(x, x), "float32"))
    # bfloat16 keeps 8 bits of mantissa: a relative error of a few 1e-3 per op.
    assert np.abs(y - ref).max() / np.abs(ref).max() < 3e-2


# Kernelised attention takes rotary positions before its feature map (performer-pytorch and
# xformers do so), so the features stay positive and the normaliser is a sum of positive terms.
KERNELISED = [
    ("linear", {"chunk_size": 3}),
    ("performer", {"kernel": "softmax", "num_random_features": 16, "chunk_size": 3}),
    ("performer", {"kernel": "relu", "num_random_features": 16, "chunk_size": 3}),
]
KERNELISED_IDS = ["linear", "performer-softmax", "performer-relu"]


def kernel_features(name, kwargs, x, projection):
    """The variant's feature map from its paper, float64, on `[B, L, H, d]`.

    linear: elu(x) + 1 (Katharopoulos et al.). performer softmax: FAVOR+
    `m^-1/2 exp(W x' - |x'|^2 / 2)` with `x' = x d^-1/4`, plus the reference implementation's
    1e-6 times each row's largest term; relu: `relu(m^-1/2 W x) + 1e-3` (Choromanski et al.).
    """
    x = np.asarray(x, np.float64)
    if name == "linear":
        return np.where(x > 0, x + 1.0, np.exp(x))
    w = np.asarray(projection, np.float64)
    m, d = w.shape
    if kwargs["kernel"] == "relu":
        return np.maximum(np.einsum("blhd,md->blhm", x, w) / np.sqrt(m), 0.0) + 1e-3
    x = x * d**-0.25
    a = np.einsum("blhd,md->blhm", x, w) - 0.5 * (x * x).sum(-1, keepdims=True)
    return (np.exp(a) + 1e-6 * np.exp(a.max(-1, keepdims=True))) / np.sqrt(m)


def kernel_attention_reference(name, kwargs, q, k, v, allowed, projection):
    """Rotate q and k (RoFormer), then the feature map, then the row-normalised form."""
    phi_q = kernel_features(name, kwargs, rotation_reference(q), projection)
    phi_k = kernel_features(name, kwargs, rotation_reference(k), projection)
    scores = np.einsum("bthm,bshm->bhts", phi_q, phi_k) * allowed
    den = scores.sum(-1)[..., None]
    eps = 1e-6 if name == "linear" else 0.0  # linear's paper adds it; performer divides exactly
    out = np.einsum("bhts,bshd->bhtd", scores, v) / np.where(den > 0, den + eps, 1.0)
    return np.transpose(out, (0, 2, 1, 3))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "kwargs"), KERNELISED, ids=KERNELISED_IDS)
def test_kernelised_rotary_equals_rotating_before_the_feature_map(name, kwargs, causal):
    length = 11
    layer = get_attention(name, num_heads=HEADS, key_dim=KEY_DIM, rotary=True, seed=4, **kwargs)
    x = np.random.default_rng(6).normal(size=(2, length, DIM)).astype("float32")
    mask = lengths_mask([length, 6], length)
    y = _call(layer, x, mask, use_causal_mask=causal)

    def project(dense, inputs):
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
        return np.einsum("btc,chd->bthd", inputs, kernel) + bias

    xz = np.where(mask[..., None], x, 0.0)
    q, k, v = (project(d, xz) for d in (layer._query_dense, layer._key_dense, layer._value_dense))
    projection = keras.ops.convert_to_numpy(layer.projection) if name == "performer" else None
    allowed = padding_allowed(mask, mask, causal=causal)
    o = kernel_attention_reference(name, kwargs, q, k, v, allowed, projection)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer._output_dense.weights)
    ref = np.where(mask[..., None], np.einsum("bthd,hdo->bto", o, kernel) + bias, 0.0)
    np.testing.assert_allclose(y, ref, atol=2e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "kwargs"), KERNELISED, ids=KERNELISED_IDS)
def test_kernelised_rotary_weights_are_non_negative_and_sum_to_one(name, kwargs, causal):
    # The attention matrix itself, read through the layer: one-hot position inputs, an identity
    # value and output projection, so output row i is query i's weights over the keys. Positive
    # features give non-negative weights; a valid normaliser makes each real row sum to one.
    length = 9
    layer = get_attention(
        name, num_heads=1, key_dim=KEY_DIM, value_dim=length, rotary=True, seed=5, **kwargs
    )
    x = np.tile(np.eye(length, dtype="float32")[None], (2, 1, 1))
    mask = lengths_mask([length, 5], length)
    _call(layer, x, mask)
    layer._value_dense.kernel.assign(np.eye(length, dtype="float32")[:, None, :])
    layer._output_dense.kernel.assign(np.eye(length, dtype="float32")[None])
    weights = _call(layer, x, mask, use_causal_mask=causal)  # [B, query, key]
    allowed = padding_allowed(mask, mask, causal=causal)[:, 0]
    assert np.all(weights >= -1e-6), weights.min()
    np.testing.assert_array_equal(weights[~allowed], 0.0)
    np.testing.assert_allclose(weights.sum(-1)[mask], 1.0, atol=1e-5)
    # Rotary positions are seen: the same query and key content at other positions gets other
    # weights (every input row differs here, so compare against the plain layer instead).
    plain = get_attention(name, num_heads=1, key_dim=KEY_DIM, value_dim=length, seed=5, **kwargs)
    _call(plain, x, mask)
    plain.load_mha_weights(layer)
    assert np.abs(_call(plain, x, mask, use_causal_mask=causal) - weights)[mask].max() > 1e-3


def test_kernelised_rotary_takes_any_number_of_features():
    # Rotation acts on q and k (key_dim), not on the random features.
    layer = get_attention("performer", num_heads=2, key_dim=4, rotary=True, num_random_features=15)
    x = np.random.default_rng(7).normal(size=(1, 6, DIM)).astype("float32")
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(layer(x, x))))
