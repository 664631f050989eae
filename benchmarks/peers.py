"""Our attention layers against TF Model Garden's at equal shapes, in one process.

Run: `python -m benchmarks.peers` (options: `--lengths` (1024,4096), `--batch` (4),
`--repeats` (5), `--pairs` (full,linear,performer,local,bigbird), `--output`).

Model Garden (`tf-models-official`) is an optional peer, never a dependency: its release pins
an older TensorFlow, so install its code without its pins into the project's environment,
`pip install --no-deps tf-models-official==2.20.0 gin-config` (its attention layers run on
TensorFlow 2.21 with tf-keras, which the test extra installs).

Measured: one `tf.function` (graph mode, no XLA) step computing `sum(y^2)` of one attention
layer and its gradients with respect to the input and every weight; batch 4, model width 256,
4 heads x 64, float32, no masks. The two layers of a pair are timed in alternation (one step
each, `--repeats` times, after a warm-up), so machine noise hits both alike; the table gives
the medians and `ours / theirs` (below 1: ours is faster). Pairs:

- full: `full` / `MultiHeadAttention` (tf-keras);
- linear: `linear` (elu + 1) / `KernelAttention(feature_transform="elu",
  num_random_features=0)`;
- performer: `performer` (FAVOR+, 256 features) / `KernelAttention(feature_transform="exp",
  num_random_features=256)`;
- local: `local` (block 64) / `BlockSparseAttention(src_block_size=64, tgt_block_size=64)`;
- bigbird: `bigbird` (block 64, 3 random) / `BigBirdAttention(from_block_size=64,
  to_block_size=64, num_rand_blocks=3)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HEADS, KEY_DIM, MODEL_DIM = 4, 64, 256
PAIRS = ("full", "linear", "performer", "local", "bigbird")
INSTALL_HINT = "pip install --no-deps tf-models-official==2.20.0 gin-config"


def _ours(name: str):
    from lra_keras.layers import get_attention

    kwargs = {
        "full": {},
        "linear": {},
        "performer": {"kernel": "softmax", "num_random_features": 256},
        "local": {"block_size": 64},
        "bigbird": {"block_size": 64, "num_random_blocks": 3},
    }[name]
    return get_attention(name, num_heads=HEADS, key_dim=KEY_DIM, seed=0, **kwargs)


def _theirs(name: str, length: int):
    """Model Garden's layer and a function calling it on `x` (BigBird needs its masks)."""
    from official.nlp.modeling import layers

    common = dict(num_heads=HEADS, key_dim=KEY_DIM)
    if name == "full":
        layer = layers.MultiHeadAttention(**common)
    elif name == "linear":
        layer = layers.KernelAttention(feature_transform="elu", num_random_features=0, **common)
    elif name == "performer":
        layer = layers.KernelAttention(feature_transform="exp", num_random_features=256, **common)
    elif name == "local":
        layer = layers.BlockSparseAttention(src_block_size=64, tgt_block_size=64, **common)
    elif name == "bigbird":
        import tensorflow as tf

        layer = layers.BigBirdAttention(
            num_rand_blocks=3,
            from_block_size=64,
            to_block_size=64,
            max_rand_mask_length=length,
            seed=0,
            **common,
        )
        masks = layers.BigBirdMasks(block_size=64)

        def call(x):
            mask = tf.ones(tf.shape(x)[:2], tf.float32)
            return layer(x, x, attention_mask=masks(x, mask))

        return layer, call
    else:
        raise ValueError(f"Unknown pair {name!r}; pairs: {', '.join(PAIRS)}.")
    return layer, lambda x: layer(x, x)


def _step(layer, call):
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(call(x), tf.float32) ** 2)
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    return step


def measure_pair(name: str, length: int, batch: int, repeats: int) -> dict:
    """Median step time of ours and Model Garden's layer, timed in alternation."""
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(size=(batch, length, MODEL_DIM)), "float32")
    ours = _ours(name)
    theirs, their_call = _theirs(name, length)
    steps = {
        "ours": _step(ours, lambda x: ours(x, x)),
        "theirs": _step(theirs, their_call),
    }
    for step in steps.values():
        step(x).numpy()  # trace and warm up
    times = {"ours": [], "theirs": []}
    for _ in range(repeats):
        for key, step in steps.items():
            start = time.perf_counter()
            step(x).numpy()
            times[key].append(time.perf_counter() - start)
    ours_s, theirs_s = (float(np.median(times[k])) for k in ("ours", "theirs"))
    return {
        "pair": name,
        "length": length,
        "batch": batch,
        "ours_ms": 1e3 * ours_s,
        "theirs_ms": 1e3 * theirs_s,
        "ratio": ours_s / theirs_s,
        "times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,4096")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--output", default="results/peers.json")
    args = parser.parse_args(argv)
    pairs = [p for p in args.pairs.split(",") if p]
    unknown = sorted(set(pairs) - set(PAIRS))
    if unknown:
        parser.error(f"unknown --pairs {unknown}; pairs: {', '.join(PAIRS)}")
    try:
        lengths = [int(v) for v in args.lengths.split(",") if v]
    except ValueError:
        parser.error(f"--lengths takes comma-separated integers, got {args.lengths!r}")
    if args.repeats < 1 or args.batch < 1 or not lengths or min(lengths) < 64:
        parser.error("--repeats and --batch must be >= 1 and every length >= 64")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import official.nlp.modeling.layers  # noqa: F401
    except ImportError as error:
        print(
            f"benchmarks.peers: TF Model Garden is not importable ({error}); install it with "
            f"`{INSTALL_HINT}`.",
            file=sys.stderr,
        )
        sys.exit(2)

    import tensorflow as tf

    # Each pair traces its own tf.function; the retracing warning says nothing here.
    tf.get_logger().setLevel("ERROR")
    rows = []
    print(
        f"batch {args.batch}, width {MODEL_DIM}, {HEADS} heads x {KEY_DIM}, float32, "
        f"forward+backward, graph mode; median of {args.repeats} alternated steps"
    )
    print(f"{'pair':<11}{'L':>6}{'ours ms':>10}{'theirs ms':>11}{'ours/theirs':>13}")
    for length in lengths:
        for name in pairs:
            try:
                row = measure_pair(name, length, args.batch, args.repeats)
            except Exception as error:  # a failing peer is a row, not the end of the run
                row = {"pair": name, "length": length, "error": f"{type(error).__name__}: {error}"}
                print(f"{name:<11}{length:>6}  failed: {row['error'][:120]}", flush=True)
            else:
                print(
                    f"{name:<11}{length:>6}{row['ours_ms']:>10.1f}{row['theirs_ms']:>11.1f}"
                    f"{row['ratio']:>13.2f}",
                    flush=True,
                )
            rows.append(row)
            if args.output:
                os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
                with open(args.output, "w") as f:
                    json.dump({"rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
