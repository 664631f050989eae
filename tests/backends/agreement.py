"""One variant's forward and input gradient on the current backend, for the JAX-vs-TF check.

`test_jax_agreement.py` runs `run_variant` on TensorFlow, saves the weights and inputs, and
runs this module as a script under `KERAS_BACKEND=jax` (one subprocess for every variant),
which rebuilds each layer, loads the same weights and writes its outputs back.
"""

from __future__ import annotations

import json
import sys
import traceback

import numpy as np

DIM = 16


def variant_inputs(name: str, batch: int = 2):
    from tests.layers.attention_cases import case
    from tests.layers.reference import lengths_mask

    length = case(name)["length"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, length, DIM)).astype("float32")
    mask = lengths_mask([length, length // 2 + 1], length)
    weights = rng.normal(size=(batch, length, DIM)).astype("float32")
    return x, mask, weights


def run_variant(name: str, layer_weights=None):
    """(output, d sum(output * w)/d input, the layer's weights) for `name` on this backend."""
    import keras

    from lra_keras.layers import get_attention
    from tests.backends.backend_testing import loss_and_grads
    from tests.layers.attention_cases import case

    x, mask, w = variant_inputs(name)
    layer = get_attention(name, num_heads=2, key_dim=4, seed=3, **case(name)["kwargs"])
    layer(x, x, query_mask=mask, value_mask=mask)
    if layer_weights is not None:
        layer.set_weights(layer_weights)

    def loss(x):
        y = layer(x, x, query_mask=mask, value_mask=mask, training=False)
        return keras.ops.sum(y * w), y

    y, (grad,) = loss_and_grads(loss, [x])
    return y, grad, [np.asarray(v) for v in layer.get_weights()]


def main(inputs_path: str, outputs_path: str) -> None:
    """Runs every variant of `inputs_path` (an .npz of weights) and writes outputs or errors."""
    data = np.load(inputs_path)
    names = json.loads(str(data["names"]))
    results, errors = {}, {}
    for name in names:
        count = int(data[f"{name}/count"])
        weights = [data[f"{name}/w{i}"] for i in range(count)]
        try:
            y, grad, _ = run_variant(name, weights)
            results[f"{name}/y"], results[f"{name}/grad"] = y, grad
        except Exception:  # noqa: BLE001 - reported per variant by the test.
            errors[name] = traceback.format_exc(limit=4)[-1500:]
    np.savez(outputs_path, errors=json.dumps(errors), **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
