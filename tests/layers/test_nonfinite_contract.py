"""Non-finite inputs at real positions: every registered variant propagates them and updates
no non-trainable state from them (DESIGN.md section 9, "Non-finite values").

A NaN or inf in a real token is a bug upstream (an exploding embedding, a corrupt record); a
layer that turned it into a finite output (a zero row, a renormalised softmax) would hide it
from the non-finite-loss check that stops training, and a layer that folded it into its
running state (routing's k-means centroids) would stay broken on every later clean batch.
Non-finite values at padded positions are the other case: they must not leak at all
(`test_non_finite_padding_gives_zero_padded_rows` in the contract suite).
"""

import numpy as np
import pytest

from lra_keras.layers import ATTENTIONS
from tests.backends.backend_testing import to_numpy
from tests.layers.test_attention_contract import NAMES, call, inputs, make_layer, sampled_on_jax

# Position 1 is real in both rows of the contract inputs (row 1 is padded after
# `length // 2 + 1` tokens).
POSITION = 1
VALUES = {"nan": np.nan, "inf": np.inf}


def poisoned(x, row, value):
    bad = x.copy()
    bad[row, POSITION, 0] = value  # one feature, so that inf stays inf through a projection
    return bad


def non_trainable(layer):
    return [to_numpy(w).copy() for w in layer.non_trainable_weights]


@pytest.mark.parametrize("name", sampled_on_jax(NAMES))
def test_non_finite_input_propagates(name):
    # The contract suite's shapes: on JAX, whose eager ops compile once per shape, the calls
    # reuse what its tests compiled.
    layer = make_layer(name)
    x, mask = inputs(name)
    clean = call(layer, x, mask)
    modes = [False] + ([True] if ATTENTIONS[name].supports_causal else [])
    for label, value in VALUES.items():
        for causal in modes:
            # Row 0 stays clean; row 1 (padded at the end) gets the NaN or inf.
            y = call(layer, poisoned(x, 1, value), mask, use_causal_mask=causal)
            # The poisoned token's own output sees its input (causal or not): never finite.
            assert not np.all(np.isfinite(y[1, POSITION])), (name, label, causal)
            np.testing.assert_array_equal(y[1][~mask[1]], 0.0)
            if not causal:
                # Sequences do not mix: the clean row of the batch is untouched.
                np.testing.assert_allclose(y[0], clean[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sampled_on_jax(NAMES))
def test_non_finite_batch_updates_no_state(name):
    layer = make_layer(name)
    x, mask = inputs(name)
    call(layer, x, mask, training=True)  # builds, and leaves any state as training leaves it
    before = non_trainable(layer)
    paths = [w.path for w in layer.non_trainable_weights]
    for label, value in VALUES.items():
        y = call(layer, poisoned(x, 1, value), mask, training=True)
        assert not np.all(np.isfinite(y[1][mask[1]])), (name, label)
        np.testing.assert_array_equal(y[1][~mask[1]], 0.0)
        for path, old, new in zip(paths, before, non_trainable(layer), strict=True):
            np.testing.assert_array_equal(new, old, err_msg=f"{name}: {path} changed ({label})")
