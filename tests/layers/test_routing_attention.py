import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from lra_keras.layers import RoutingAttention
from tests.layers.reference import dense_attention
from tests.layers.variant_testing import (
    DIM,
    assert_layer_equals_full,
    attend,
    padding_mask,
    random_qkv,
)


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x**2).sum(-1, keepdims=True) + 1e-12)


def numpy_routes(x, mask, mu, w):
    """[B, R, C, w] top-w positions per centroid (padded positions score -1e9; ties by index).

    `x` is [B, L, R, d]: the routing heads only.
    """
    scores = np.einsum("blhd,hcd->bhcl", unit(x), mu)
    scores = np.where(mask[:, None, None, :], scores, -1e9)
    return np.argsort(-scores, axis=-1, kind="stable")[..., :w]


def numpy_routing_attention(q, k, v, mask, mu, local_heads, causal=False):
    """The paper's pattern in dense form, per head.

    Local heads: each query sees the keys of its contiguous block of w = ceil(L / C) tokens.
    Routing heads: per centroid, its top-w queries see its top-w keys; a query's output is the
    mean over the clusters where it had an allowed key, and its local-block output when none.
    Returns the output and the [B, L, R] count of serving clusters.
    """
    bsz, length, heads, _ = q.shape
    clusters = mu.shape[1]
    w = -(-length // clusters)
    i = np.arange(length)
    base = mask[:, None, None, :] & np.ones((1, 1, length, 1), bool)
    if causal:
        base = base & (i[None, :] <= i[:, None])
    local = dense_attention(q, k, v, base & (i[:, None] // w == i[None, :] // w))
    out = local.copy()
    lh = local_heads
    qi = numpy_routes(q[:, :, lh:], mask, mu, w)
    ki = numpy_routes(k[:, :, lh:], mask, mu, w)
    total = np.zeros((bsz, length, heads - lh, v.shape[-1]))
    count = np.zeros((bsz, length, heads - lh))
    for b in range(bsz):
        for r in range(heads - lh):
            h = lh + r
            for c in range(clusters):
                allowed = np.zeros((length, length), bool)
                allowed[np.ix_(qi[b, r, c], ki[b, r, c])] = True
                allowed &= base[b, 0]
                y = dense_attention(
                    q[b : b + 1, :, h : h + 1],
                    k[b : b + 1, :, h : h + 1],
                    v[b : b + 1, :, h : h + 1],
                    allowed,
                )[0, :, 0]
                landed = allowed.any(-1)
                total[b, landed, r] += y[landed]
                count[b, landed, r] += 1
    routed = count > 0
    out[:, :, lh:][routed] = (total / np.maximum(count, 1)[..., None])[routed]
    return out, count


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "length,clusters,heads,local_heads", [(13, 3, 2, None), (11, 2, 3, 2), (9, None, 2, 0)]
)
def test_matches_numpy_reference(length, clusters, heads, local_heads, causal):
    q, k, v = random_qkv(length, heads=heads, seed=1)
    mask = padding_mask(length)
    layer = RoutingAttention(
        num_heads=heads, key_dim=4, num_clusters=clusters, local_heads=local_heads, seed=2
    )
    y = attend(layer, q, k, v, mask, causal)
    mu = keras.ops.convert_to_numpy(layer.centroids).astype(np.float64)
    lh = heads // 2 if local_heads is None else local_heads
    assert mu.shape == (heads - lh, clusters or round(np.sqrt(length)), 4)
    ref, count = numpy_routing_attention(q, k, v, mask, mu, lh, causal)
    np.testing.assert_allclose(y[mask], ref[mask], atol=1e-5)
    if not causal and clusters == 3:
        # The top-w picks overlap: some queries land in several clusters, some in none (and
        # those take the local fallback, so the reference's fallback branch is exercised).
        assert count[mask].max() > 1 and (count[mask] == 0).any()


@pytest.mark.parametrize("local_heads", [None, 0])
def test_every_real_token_and_head_is_served(local_heads):
    # Top-w per centroid leaves about a third of the (token, head) rows unrouted at L = 256
    # with the default sqrt(L) clusters; none of them may be zero.
    length, heads = 256, 4
    q, k, v = random_qkv(length, heads=heads, seed=3)
    mask = padding_mask(length)
    layer = RoutingAttention(num_heads=heads, key_dim=4, local_heads=local_heads, seed=4)
    y = attend(layer, q, k, v, mask)
    assert layer.centroids.shape[1] == 16
    zero_rows = np.all(y == 0.0, axis=-1)[mask]  # [real tokens, heads]
    assert not zero_rows.any(), f"{zero_rows.mean():.1%} of real (token, head) rows are zero"


@pytest.mark.parametrize("causal", [False, True])
def test_one_cluster_no_local_heads_is_full_attention(causal):
    layer = RoutingAttention(num_heads=2, key_dim=4, num_clusters=1, local_heads=0)
    assert_layer_equals_full(layer, 11, causal)


def test_default_cluster_count_and_local_heads():
    layer = RoutingAttention(num_heads=4, key_dim=4)
    layer.build((1, 30, DIM), (1, 30, DIM))
    assert layer.local_heads == 2  # The paper's half-local configurations.
    assert tuple(layer.centroids.shape) == (2, 5, 4)
    assert RoutingAttention.default_num_clusters(1) == 1
    assert RoutingAttention(num_heads=1, key_dim=4).local_heads == 0
    assert not layer.centroids.trainable
    assert all(w.name != "centroids" for w in layer.trainable_weights)
    # Unit-norm, seeded centroids: the same seed gives the same draw.
    mu = keras.ops.convert_to_numpy(layer.centroids)
    np.testing.assert_allclose(np.linalg.norm(mu, axis=-1), 1.0, rtol=1e-5)
    a, b = (RoutingAttention(num_heads=4, key_dim=4, seed=5) for _ in range(2))
    for x in (a, b):
        x.build((1, 30, DIM), (1, 30, DIM))
    np.testing.assert_array_equal(a.centroids.numpy(), b.centroids.numpy())


def test_default_flops_grow_as_length_to_the_1_5():
    layer = RoutingAttention(num_heads=4, key_dim=4)
    short, long = (layer.attention_flops(2, n, n) for n in (1024, 4096))
    assert long / short == pytest.approx(8.0, rel=0.05)  # (4x the length)^1.5


def routed_members(q, k, mask, mu, w):
    """Unit vectors routed to each centroid over real tokens: sums [R, C, d], counts [R, C]."""
    sums = np.zeros(mu.shape)
    counts = np.zeros(mu.shape[:2])
    for x in (q, k):
        index = numpy_routes(x, mask, mu, w)
        x_hat = unit(x)
        for b in range(x.shape[0]):
            for h in range(mu.shape[0]):
                for c in range(mu.shape[1]):
                    rows = [i for i in index[b, h, c] if mask[b, i]]
                    sums[h, c] += x_hat[b, rows, h].sum(0)
                    counts[h, c] += len(rows)
    return sums, counts


def test_ema_update_matches_closed_form_and_commitment_loss():
    length, clusters, decay, heads, lh = 13, 3, 0.9, 3, 1
    q, k, v = random_qkv(length, heads=heads, seed=3)
    mask = padding_mask(length)
    mask[1, 6:] = False  # Fewer real tokens than some clusters' w in the second row.
    layer = RoutingAttention(
        num_heads=heads,
        key_dim=4,
        num_clusters=clusters,
        local_heads=lh,
        ema_decay=decay,
        commitment_weight=0.5,
    )
    attend(layer, q, k, v, mask)  # Inference: no update, no loss.
    mu0 = keras.ops.convert_to_numpy(layer.centroids).astype(np.float64)
    assert not layer.losses
    layer._attend(
        *map(keras.ops.convert_to_tensor, (q, k, v)),
        query=None,
        query_mask=keras.ops.convert_to_tensor(mask),
        key_mask=keras.ops.convert_to_tensor(mask),
        causal=False,
        training=True,
    )
    w = -(-length // clusters)
    q, k = q[:, :, lh:], k[:, :, lh:]  # Only the routing heads route.
    sums, counts = routed_members(q, k, mask, mu0, w)
    expected = decay * mu0 + (1 - decay) * sums / np.maximum(counts, 1)[..., None]
    expected = np.where(counts[..., None] > 0, expected, mu0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.centroids), expected, atol=1e-6)
    # Commitment: 0.5 * mean over routed real (query and key) vectors of ||x_hat - mu||^2.
    total, n = 0.0, 0
    for x in (q, k):
        index = numpy_routes(x, mask, mu0, w)
        x_hat = unit(x)
        for b in range(2):
            for h in range(heads - lh):
                for c in range(clusters):
                    for i in index[b, h, c]:
                        if mask[b, i]:
                            total += ((x_hat[b, i, h] - mu0[h, c]) ** 2).sum()
                            n += 1
    (loss,) = layer.losses
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)), 0.5 * total / n, rtol=1e-5)


def test_update_ignores_padded_content():
    length = 13
    x = np.random.default_rng(0).normal(size=(2, length, DIM)).astype("float32")
    mask = padding_mask(length)
    noisy = np.where(mask[..., None], x, 50.0).astype("float32")
    layer = RoutingAttention(num_heads=2, key_dim=4, num_clusters=3, ema_decay=0.5, seed=4)
    layer.build((2, length, DIM), (2, length, DIM))
    start = layer.get_weights()
    results = []
    for inputs in (x, noisy):
        layer.set_weights(start)
        layer(inputs, inputs, query_mask=mask, value_mask=mask, training=True)
        results.append(keras.ops.convert_to_numpy(layer.centroids))
    assert np.abs(results[0] - start[0]).max() > 1e-3
    np.testing.assert_allclose(results[1], results[0], atol=1e-6)


def test_non_finite_batch_leaves_the_centroids_and_propagates():
    """One NaN (or inf) token in a training batch must not poison the centroids for good."""
    length = 13
    x = np.random.default_rng(1).normal(size=(2, length, DIM)).astype("float32")
    mask = padding_mask(length)
    layer = RoutingAttention(num_heads=2, key_dim=4, num_clusters=3, ema_decay=0.5, seed=4)
    layer.build((2, length, DIM), (2, length, DIM))
    start = layer.get_weights()
    clean = keras.ops.convert_to_numpy(layer(x, x, query_mask=mask, value_mask=mask))
    for value in (np.nan, np.inf):
        layer.set_weights(start)
        bad = x.copy()
        bad[0, 4, 1] = value
        y = keras.ops.convert_to_numpy(
            layer(bad, bad, query_mask=mask, value_mask=mask, training=True)
        )
        assert not np.isfinite(y[0, 4]).all()
        for got, want in zip(layer.get_weights(), start, strict=True):
            np.testing.assert_array_equal(got, want)
        # A later clean batch is served by the untouched centroids: the clean output.
        after = keras.ops.convert_to_numpy(layer(x, x, query_mask=mask, value_mask=mask))
        np.testing.assert_array_equal(after, clean)
    # A clean training batch still moves them.
    layer(x, x, query_mask=mask, value_mask=mask, training=True)
    assert np.abs(keras.ops.convert_to_numpy(layer.centroids) - start[0]).max() > 1e-3


def test_unknown_length_equals_static_length():
    import tensorflow as tf

    length = 13
    x = np.random.default_rng(1).normal(size=(2, length, DIM)).astype("float32")
    mask = padding_mask(length)
    layer = RoutingAttention(num_heads=2, key_dim=4, num_clusters=3, seed=6)
    seq = keras.Input((None, DIM))
    pad = keras.Input((None,), dtype="bool")
    model = keras.Model([seq, pad], layer(seq, seq, query_mask=pad, value_mask=pad))
    static = RoutingAttention.from_config(layer.get_config())
    static(x, x)
    static.set_weights(layer.get_weights())
    expected = static(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True).numpy()

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, None, DIM), "float32"),
            tf.TensorSpec((None, None), "bool"),
        ]
    )
    def run(a, m):
        return layer(a, a, query_mask=m, value_mask=m, use_causal_mask=True)

    np.testing.assert_allclose(run(x, mask).numpy(), expected, atol=1e-5)
    y = model([x, mask]).numpy()
    ref = static(x, x, query_mask=mask, value_mask=mask).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-5)
    # Another length through the same traced graph.
    short, short_mask = x[:, :7], mask[:, :7]
    expected = static(
        short, short, query_mask=short_mask, value_mask=short_mask, use_causal_mask=True
    )
    np.testing.assert_allclose(run(short, short_mask).numpy(), expected.numpy(), atol=1e-5)
    assert run.experimental_get_tracing_count() == 1  # One trace serves both lengths.


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_clusters"):
        RoutingAttention(num_heads=2, key_dim=4, num_clusters=0)
    with pytest.raises(ValueError, match="local_heads"):
        RoutingAttention(num_heads=2, key_dim=4, local_heads=2)
    with pytest.raises(ValueError, match="local_heads"):
        RoutingAttention(num_heads=2, key_dim=4, local_heads=-1)
    with pytest.raises(ValueError, match="ema_decay"):
        RoutingAttention(num_heads=2, key_dim=4, ema_decay=1.0)
    with pytest.raises(ValueError, match="commitment_weight"):
        RoutingAttention(num_heads=2, key_dim=4, commitment_weight=-1.0)
    layer = RoutingAttention(num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="num_clusters"):
        layer.build((None, None, DIM), (None, None, DIM))


DISTRIBUTED = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from lra_keras.layers import RoutingAttention

    length = 13
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, length, 8)).astype("float32")
    # Different amounts of padding per replica: a plain mean of per-replica updates is wrong.
    mask = np.arange(length)[None, :] < np.array([[13], [12], [5], [3]])

    def make():
        return RoutingAttention(
            num_heads=3, key_dim=4, num_clusters=3, ema_decay=0.5, seed=7
        )

    single = make()
    single.build((None, length, 8), (None, length, 8))
    start = single.get_weights()
    single(x, x, query_mask=mask, value_mask=mask, training=True)
    expected = single.centroids.numpy()

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = make()  # Not built: it builds lazily inside strategy.run below.
    dataset = tf.data.Dataset.from_tensor_slices((x, mask)).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(inputs, training):
        a, m = inputs
        return layer(a, a, query_mask=m, value_mask=m, training=training)

    strategy.run(step, args=(batch, False))
    assert layer.built
    layer.set_weights(start)
    per_replica = strategy.run(step, args=(batch, True))
    assert len(strategy.experimental_local_results(per_replica)) == 2
    got = [v.numpy() for v in strategy.experimental_local_results(layer.centroids.value)]
    assert np.abs(expected - start[0]).max() > 1e-3
    for g in got:
        np.testing.assert_allclose(g, expected, atol=1e-6)
    # A NaN token on one replica only: no replica updates its centroids from that batch.
    layer.set_weights(start)
    poisoned = x.copy()
    poisoned[3, 1, 0] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((poisoned, mask)).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    strategy.run(step, args=(batch, True))
    for g in strategy.experimental_local_results(layer.centroids.value):
        np.testing.assert_array_equal(g.numpy(), start[0])
    print("OK")
    """
)


# Slow (a TensorFlow subprocess with two logical CPUs); the contract suite builds every
# variant inside strategy.run in `make test`.
@pytest.mark.slow
def test_centroid_update_under_mirrored_strategy_equals_single_device():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
