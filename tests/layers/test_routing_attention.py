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
    """[B, H, C, w] top-w positions per centroid (padded positions score -1e9; ties by index)."""
    x_hat = unit(x)  # [B, L, H, d]
    scores = np.einsum("blhd,hcd->bhcl", x_hat, mu)
    scores = np.where(mask[:, None, None, :], scores, -1e9)
    return np.argsort(-scores, axis=-1, kind="stable")[..., :w]


def numpy_routing_attention(q, k, v, mask, mu, w, causal=False):
    """Per-cluster dense attention, averaged over the clusters each query landed in."""
    bsz, length, heads, _ = q.shape
    qi, ki = numpy_routes(q, mask, mu, w), numpy_routes(k, mask, mu, w)
    total = np.zeros((bsz, length, heads, v.shape[-1]))
    count = np.zeros((bsz, length, heads))
    for b in range(bsz):
        for h in range(heads):
            for c in range(mu.shape[1]):
                allowed = np.zeros((length, length), bool)
                members_q, members_k = qi[b, h, c], ki[b, h, c]
                allowed[np.ix_(members_q, members_k)] = True
                allowed &= mask[b][None, :]
                if causal:
                    allowed &= np.arange(length)[None, :] <= np.arange(length)[:, None]
                out = dense_attention(
                    q[b : b + 1, :, h : h + 1],
                    k[b : b + 1, :, h : h + 1],
                    v[b : b + 1, :, h : h + 1],
                    allowed,
                )[0, :, 0]
                landed = allowed.any(-1)
                total[b, landed, h] += out[landed]
                count[b, landed, h] += 1
    return total / np.maximum(count, 1)[..., None], count


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length,clusters", [(13, 3), (11, 2), (9, None)])
def test_matches_numpy_reference(length, clusters, causal):
    q, k, v = random_qkv(length, seed=1)
    mask = padding_mask(length)
    layer = RoutingAttention(num_heads=2, key_dim=4, num_clusters=clusters, seed=2)
    y = attend(layer, q, k, v, mask, causal)
    mu = keras.ops.convert_to_numpy(layer.centroids).astype(np.float64)
    c = mu.shape[1]
    assert c == (clusters or round(np.sqrt(length)))
    ref, count = numpy_routing_attention(q, k, v, mask, mu, -(-length // c), causal)
    np.testing.assert_allclose(y[mask], ref[mask], atol=1e-5)
    if not causal and clusters == 3:
        # The top-w picks overlap: some queries land in several clusters, some in none (zero).
        assert count[mask].max() > 1 and (count[mask] == 0).any()
        np.testing.assert_array_equal(y[mask][count[mask] == 0], 0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_one_cluster_is_full_attention(causal):
    layer = RoutingAttention(num_heads=2, key_dim=4, num_clusters=1)
    assert_layer_equals_full(layer, 11, causal)


def test_default_cluster_count():
    layer = RoutingAttention(num_heads=2, key_dim=4)
    layer.build((1, 30, DIM), (1, 30, DIM))
    assert tuple(layer.centroids.shape) == (2, 5, 4)
    assert RoutingAttention.default_num_clusters(1) == 1
    assert not layer.centroids.trainable
    assert all(w.name != "centroids" for w in layer.trainable_weights)


def routed_members(q, k, mask, mu, w):
    """Unit vectors routed to each centroid over real tokens: sums [H, C, d], counts [H, C]."""
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
    length, clusters, decay = 13, 3, 0.9
    q, k, v = random_qkv(length, seed=3)
    mask = padding_mask(length)
    mask[1, 6:] = False  # Fewer real tokens than some clusters' w in the second row.
    layer = RoutingAttention(
        num_heads=2, key_dim=4, num_clusters=clusters, ema_decay=decay, commitment_weight=0.5
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
            for h in range(2):
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


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_clusters"):
        RoutingAttention(num_heads=2, key_dim=4, num_clusters=0)
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
        layer = RoutingAttention(
            num_heads=2, key_dim=4, num_clusters=3, ema_decay=0.5, seed=7
        )
        layer.build((None, length, 8), (None, length, 8))
        return layer

    single = make()
    start = single.get_weights()
    single(x, x, query_mask=mask, value_mask=mask, training=True)
    expected = single.centroids.numpy()

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = make()
        layer.set_weights(start)
    dataset = tf.data.Dataset.from_tensor_slices((x, mask)).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(inputs):
        a, m = inputs
        return layer(a, a, query_mask=m, value_mask=m, training=True)

    per_replica = strategy.run(step, args=(batch,))
    assert len(strategy.experimental_local_results(per_replica)) == 2
    got = [v.numpy() for v in strategy.experimental_local_results(layer.centroids.value)]
    assert np.abs(expected - start[0]).max() > 1e-3
    for g in got:
        np.testing.assert_allclose(g, expected, atol=1e-6)
    print("OK")
    """
)


def test_centroid_update_under_mirrored_strategy_equals_single_device():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
