"""`chunked` against `full`, one layer, at several lengths and tile sizes, in one process.

The measurement behind `chunked`'s default tiling (`kernels.chunked_attention.
default_chunk_sizes`): one `tf.function` (graph mode) step computing `sum(y^2)` of one layer and
its gradients (input and weights), batch `--batch`, width 256, 4 heads x 64, float32, attention
dropout 0.1 in training as in the LRA text model, no padding. The layers are timed in
alternation (one step each, `--repeats` times, after a warm-up) so machine noise hits them
alike; the table gives medians and the ratio to `full` (above 1: slower than `full`).

    python -m benchmarks.chunked_tiles [--lengths 1024,2048,4096,8192] [--tiles 256,512,1024]
        [--batch 1] [--repeats 5] [--output results/chunked_tiles.json]

`default` is `chunked` with its chunk sizes left to the layer; `c` is `chunked` with
`query_chunk_size = key_chunk_size = c` (tiles at least as long as the sequence are skipped:
they are the one-tile path).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

HEADS, KEY_DIM, MODEL_DIM, DROPOUT = 4, 64, 256, 0.1


def _step(layer):
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, x, training=True)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x] + layer.trainable_variables)

    return step


def measure(length: int, tiles: list[int], batch: int, repeats: int) -> dict:
    """Median seconds of each configuration at `length`, timed in alternation."""
    import tensorflow as tf

    from lra_keras.layers import get_attention

    configs = {"full": ("full", {}), "default": ("chunked", {})}
    for tile in tiles:
        if tile < length:
            configs[str(tile)] = ("chunked", {"query_chunk_size": tile, "key_chunk_size": tile})
    x = tf.random.stateless_normal((batch, length, MODEL_DIM), seed=(0, length))
    steps = {}
    for label, (name, kwargs) in configs.items():
        layer = get_attention(
            name, num_heads=HEADS, key_dim=KEY_DIM, dropout=DROPOUT, seed=0, **kwargs
        )
        steps[label] = _step(layer)
        for _ in range(2):  # trace, then one untimed step
            [g.numpy() for g in steps[label](x)]
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():
            start = time.perf_counter()
            [g.numpy() for g in step(x)]
            times[label].append(time.perf_counter() - start)
    medians = {label: statistics.median(t) for label, t in times.items()}
    return {
        "length": length,
        "seconds": medians,
        "ratio_to_full": {label: t / medians["full"] for label, t in medians.items()},
    }


def table(rows: list[dict]) -> str:
    labels = []
    for row in rows:
        labels += [label for label in row["seconds"] if label not in labels]
    lines = [
        "| length | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for row in rows:
        cells = []
        for label in labels:
            if label not in row["seconds"]:
                cells.append("-")
                continue
            cell = f"{1000 * row['seconds'][label]:.0f} ms"
            if label != "full":
                cell += f" ({row['ratio_to_full'][label]:.2f}x)"
            cells.append(cell)
        lines.append(f"| {row['length']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192")
    parser.add_argument("--tiles", default="256,512,1024")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=os.path.join("results", "chunked_tiles.json"))
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",")]
    tiles = [int(n) for n in args.tiles.split(",")] if args.tiles else []
    rows = []
    for length in lengths:
        rows.append(measure(length, tiles, args.batch, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"config": vars(args), "rows": rows}, f, indent=2)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
