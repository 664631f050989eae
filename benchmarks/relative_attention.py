"""Time of one forward+backward pass of `RelativeMultiHeadAttention`, causal and not.

Run: `python -m benchmarks.relative_attention [--length 512] [--memory 512] [--batch 2]
[--repeats 15]`. One `tf.function` step (graph mode) computes the loss `sum(y^2)` of one layer
(4 heads x 64, width 256) over `memory + length` keys and its gradients with respect to every
weight; the median of `--repeats` steps after one warm-up is printed as JSON per mode. The
non-causal mode is the one the zoo's classifiers use on `transformer_xl` and `compressive`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

HEADS, KEY_DIM, MODEL_DIM = 4, 64, 256


def measure(length: int, memory: int, batch: int, repeats: int, causal: bool) -> float:
    """Median seconds of one forward+backward step."""
    import numpy as np
    import tensorflow as tf

    from lra_keras.layers import RelativeMultiHeadAttention

    layer = RelativeMultiHeadAttention(HEADS, KEY_DIM, seed=0)
    rng = np.random.default_rng(0)
    query = tf.constant(rng.normal(size=(batch, length, MODEL_DIM)).astype("float32"))
    value = tf.constant(rng.normal(size=(batch, memory + length, MODEL_DIM)).astype("float32"))
    layer(query, value, use_causal_mask=causal)

    @tf.function
    def step(query, value):
        with tf.GradientTape() as tape:
            y = layer(query, value, use_causal_mask=causal)
            loss = tf.reduce_sum(y * y)
        return loss, tape.gradient(loss, layer.trainable_variables)

    step(query, value)[0].numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(query, value)[0].numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--memory", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    for causal in (False, True):
        seconds = measure(args.length, args.memory, args.batch, args.repeats, causal)
        row = {"causal": causal, "median_seconds": round(seconds, 4), **vars(args)}
        print(json.dumps(row))


if __name__ == "__main__":
    main()
