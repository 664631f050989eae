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


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_rotates_features_in_the_numerator_only(causal):
    # RoFormer eq. 19: sum_n (R_m phi(q_m)) . (R_n phi(k_n)) v_n / sum_n phi(q_m) . phi(k_n).
    length = 10
    layer = get_attention("linear", num_heads=HEADS, key_dim=KEY_DIM, rotary=True, chunk_size=3)
    rng = np.random.default_rng(6)
    q, k, v = (rng.normal(size=(2, length, HEADS, KEY_DIM)).astype("float32") for _ in range(3))
    mask = lengths_mask([length, 6], length)
    layer.build((2, length, DIM), (2, length, DIM))
    out = layer._attend(
        *(keras.ops.convert_to_tensor(x) for x in (q, k, v)),
        query=None,
        query_mask=keras.ops.convert_to_tensor(mask),
        key_mask=keras.ops.convert_to_tensor(mask),
        causal=causal,
        training=False,
    )

    def phi(x):
        return np.where(x > 0, x + 1.0, np.exp(x))  # elu(x) + 1

    phi_q, phi_k = phi(q.astype(np.float64)), phi(k.astype(np.float64)) * mask[..., None, None]
    rq, rk = rotation_reference(phi_q), rotation_reference(phi_k)
    allowed = padding_allowed(mask, mask, causal=causal)[:, 0]  # [B, T, S]
    num = np.einsum("bthm,bshm,bts,bshd->bthd", rq, rk, allowed, v)
    den = np.einsum("bthm,bshm,bts->bth", phi_q, phi_k, allowed)[..., None]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), num / (den + 1e-6), atol=1e-4)


def test_performer_rotary_fast_path_equals_the_generic_one():
    from lra_keras.layers.attention.linear_attention_utils import linear_attention

    layer = get_attention(
        "performer", num_heads=HEADS, key_dim=KEY_DIM, rotary=True, num_random_features=16
    )
    layer.build((2, 9, DIM), (2, 9, DIM))
    rng = np.random.default_rng(7)
    q, k, v = (
        keras.ops.convert_to_tensor(rng.normal(size=(2, 9, HEADS, KEY_DIM)), "float32")
        for _ in range(3)
    )
    mask = keras.ops.convert_to_tensor(lengths_mask([9, 5], 9))
    phi_q, phi_k, scale = layer.feature_maps(q, k, mask)
    rotated = (layer._rotary_embedding(phi_q), layer._rotary_embedding(phi_k))
    generic = linear_attention(
        phi_q, phi_k, v, causal=False, key_log_scale=scale, eps=0.0, rotated=rotated
    )
    fast = layer._bidirectional(q, k, v, mask, layer.projection)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fast), keras.ops.convert_to_numpy(generic), atol=1e-5
    )
    with pytest.raises(ValueError, match="num_random_features` must be even"):
        get_attention("performer", num_heads=2, key_dim=4, rotary=True, num_random_features=15)
