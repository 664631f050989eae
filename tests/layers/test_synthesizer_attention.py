"""SynthesizerAttention: every mode against a numpy reference computed from the layer's weights."""

import keras
import numpy as np
import pytest

from lra_keras.layers import SynthesizerAttention
from tests.layers.reference import lengths_mask, padding_allowed

B, H, D, DV, DIM, MAX = 2, 2, 4, 3, 6, 11
MODES = ["random", "dense", "factorized_random", "factorized_dense"]


def make(mode, mix=True, length=MAX):
    layer = SynthesizerAttention(
        num_heads=H,
        key_dim=D,
        value_dim=DV,
        max_length=MAX,
        mode=mode,
        mix_dot_product=mix,
        factor_rank=3,
    )
    layer.build((B, length, DIM), (B, length, DIM))
    # Non-zero biases, so that a missing or misplaced bias shows.
    rng = np.random.default_rng(7)
    for w in layer.weights:
        if w.path.count("/") == 1 and w.path.endswith("bias"):  # the layer's own biases
            w.assign(rng.normal(size=w.shape).astype("float32"))
    return layer


def numpy_weights(layer):
    return {w.path.split("/")[-1]: np.asarray(w.numpy(), np.float64) for w in layer.weights}


def synthetic_reference(layer, x, length):
    """[B or 1, H, T, S] synthetic logits from the layer's weights, in float64."""
    w = numpy_weights(layer)
    if layer.mode == "random":
        return w["random_logits"][None, :, :length, :length]
    if layer.mode == "factorized_random":
        r1, r2 = w["random_factor_1"][:, :length], w["random_factor_2"][:, :length]
        return np.einsum("htr,hsr->hts", r1, r2)[None]
    hidden = np.maximum(np.einsum("btc,chk->bthk", x, w["hidden_kernel"]) + w["hidden_bias"], 0)

    def head_dense(name):
        out = np.einsum("bthk,hkl->bthl", hidden, w[f"{name}_kernel"]) + w[f"{name}_bias"]
        return np.transpose(out, (0, 2, 1, 3))  # [B, H, T, size]: a transpose, not a reshape

    if layer.mode == "dense":
        return head_dense("output")[..., :length]
    a, b = head_dense("factor_a"), head_dense("factor_b")
    j = np.arange(length)
    # Position j: A[j mod a] * B[j // a], a * b >= max_length.
    return a[..., j % a.shape[-1]] * b[..., j // a.shape[-1]]


def reference(layer, x, q, k, v, allowed):
    logits = synthetic_reference(layer, np.asarray(x, np.float64), q.shape[1])
    if layer.mix_dot_product:
        logits = logits + np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(D)
    logits = np.where(allowed, logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", probs, v)


def inputs(length, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, length, DIM)).astype("float32")
    q = rng.normal(size=(B, length, H, D)).astype("float32")
    k = rng.normal(size=(B, length, H, D)).astype("float32")
    v = rng.normal(size=(B, length, H, DV)).astype("float32")
    return x, q, k, v


def attend(layer, x, q, k, v, key_mask, causal, attention_mask=None):
    out = layer._attend(
        q,
        k,
        v,
        query=x,
        query_mask=np.ones(q.shape[:2], bool),
        key_mask=key_mask,
        causal=causal,
        training=False,
        attention_mask=attention_mask,
    )
    return keras.ops.convert_to_numpy(out)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mix", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_mode_equals_numpy_reference(mode, mix, causal):
    length = 9  # shorter than max_length: the synthetic logits are cut
    layer = make(mode, mix, length)
    x, q, k, v = inputs(length)
    key_mask = lengths_mask([length, 5], length)
    allowed = padding_allowed(np.ones((B, length), bool), key_mask, causal)
    want = reference(layer, x, q, k, v, allowed)
    np.testing.assert_allclose(attend(layer, x, q, k, v, key_mask, causal), want, atol=1e-5)


def test_dense_attention_mask():
    layer = make("factorized_dense", length=MAX)
    x, q, k, v = inputs(MAX, seed=2)
    key_mask = lengths_mask([MAX, 8], MAX)
    dense = np.random.default_rng(4).random((B, MAX, MAX)) < 0.6
    dense[:, :, 0] = True  # every row keeps one real key
    allowed = padding_allowed(np.ones((B, MAX), bool), key_mask) & dense[:, None]
    want = reference(layer, x, q, k, v, allowed)
    np.testing.assert_allclose(attend(layer, x, q, k, v, key_mask, False, dense), want, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_zero_random_logits_without_dot_product_average_real_values(causal):
    layer = make("random", mix=False)
    layer.random_logits.assign(np.zeros((H, MAX, MAX), "float32"))
    x, q, k, v = inputs(MAX, seed=3)
    key_mask = lengths_mask([MAX, 6], MAX)
    allowed = padding_allowed(np.ones((B, MAX), bool), key_mask, causal)[:, 0]  # [B, T, S]
    want = np.einsum("bts,bshd->bthd", allowed / allowed.sum(-1, keepdims=True), v)
    np.testing.assert_allclose(attend(layer, x, q, k, v, key_mask, causal), want, atol=1e-6)


def test_errors():
    layer = SynthesizerAttention(num_heads=H, key_dim=D, max_length=8)
    x = np.zeros((1, 9, DIM), "float32")
    with pytest.raises(ValueError, match="longer than `max_length`=8"):
        layer(x, x)
    with pytest.raises(ValueError, match="mode"):
        SynthesizerAttention(num_heads=H, key_dim=D, max_length=8, mode="conv")
    with pytest.raises(ValueError, match="max_length"):
        SynthesizerAttention(num_heads=H, key_dim=D, max_length=0)
