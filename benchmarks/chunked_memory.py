"""Peak memory and time of one forward+backward pass: `chunked` attention against `full`.

Run: `python -m benchmarks.chunked_memory` (options: `--lengths`, `--repeats`, `--budget-gib`,
`--output`). Each configuration runs in its own subprocess, so peaks do not mix and an
out-of-memory or crash is reported rather than fatal. A configuration whose estimated peak
exceeds `--budget-gib` (full attention at long lengths) is skipped and reported as an estimate.

Measured: one `tf.function` (graph mode, no XLA) step computing the loss `sum(y^2)` of one
attention layer (batch 1, 4 heads x 64, model width 256, no masks) and its gradients with
respect to the input and every weight. Peak memory is `lra_keras.profiling.memory`'s reading,
with its source printed: TensorFlow's CPU allocator peak (source `allocator`:
`tf.config.experimental.get_memory_info("CPU:0")["peak"]` after `reset_memory_stats`, over
the timed steps; it includes the layer's weights and inputs), or, where the allocator keeps no
statistics, the process's peak RSS (source `rss`, with no step-extra figure). The children run
with `TF_ENABLE_ONEDNN_OPTS=1` unless the user set it, so the CPU allocator keeps statistics on
any x86 CPU. The process's peak RSS growth from just before the first (tracing) step is a
cross-check. Time is the median of `--repeats` steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks.child_process import run_json_child

BATCH, HEADS, KEY_DIM, MODEL_DIM = 1, 4, 64, 256
CONFIGS = (("full", None), ("chunked", 1024), ("chunked", 256))
MIB = 2**20


def _estimate_full_peak(length: int) -> int:
    # Measured at L=4096: about four [B, H, L, L] float32 tensors alive (logits, probabilities
    # and their gradients).
    return 4 * BATCH * HEADS * length * length * 4


def _measure(variant: str, length: int, chunk: int | None, repeats: int) -> dict:
    import resource

    import numpy as np
    import tensorflow as tf

    from lra_keras.layers import get_attention
    from lra_keras.profiling.memory import read_peak_memory, reset_peak_memory

    kwargs = dict(num_heads=HEADS, key_dim=KEY_DIM, seed=0)
    if chunk is not None:
        kwargs.update(query_chunk_size=chunk, key_chunk_size=chunk)
    layer = get_attention(variant, **kwargs)
    x = tf.constant(np.random.default_rng(0).normal(size=(BATCH, length, MODEL_DIM)), "float32")
    layer(x[:, :8], x[:, :8])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, x) ** 2)
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        return loss, tf.add_n([tf.reduce_sum(g) for g in grads])

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step(x)[1].numpy()
    reset_peak_memory("CPU:0")
    current = read_peak_memory("CPU:0")["current_bytes"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x)[1].numpy()
        times.append(time.perf_counter() - start)
    peak = read_peak_memory("CPU:0")
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    extra = None if current is None else (peak["peak_bytes"] - current) / MIB
    return {
        "peak_mib": peak["peak_mib"],
        "memory_source": peak["source"],
        **({"memory_note": peak["note"]} if peak["note"] else {}),
        "step_extra_mib": extra,
        "rss_growth_mib": rss_growth / MIB,
        "median_s": float(np.median(times)),
        "times_s": [round(t, 3) for t in times],
    }


def _label(variant: str, chunk: int | None) -> str:
    return variant if chunk is None else f"{variant}-{chunk}"


def _run_child(variant, length, chunk, repeats, timeout) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.chunked_memory", "--child", variant, str(length)]
    cmd += [str(chunk or 0), "--repeats", str(repeats)]
    result = run_json_child(cmd, timeout)
    if result["status"] != "ok":
        result["status"] = f"{result['status']}: {result.get('error', '')}"
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-gib", type=float, default=10.0)
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "LENGTH", "CHUNK"))
    args = parser.parse_args(argv)

    if args.child:
        variant, length, chunk = args.child[0], int(args.child[1]), int(args.child[2]) or None
        print(json.dumps(_measure(variant, length, chunk, args.repeats)), flush=True)
        return

    results = []
    print(
        f"B={BATCH}, heads={HEADS}x{KEY_DIM}, d_model={MODEL_DIM}, forward+backward, "
        f"graph mode; median of {args.repeats} steps"
    )
    header = f"{'config':<14}{'L':>7}{'peak MiB':>10}{'source':>10}{'step extra':>12}"
    header += f"{'RSS growth':>12}"
    print(header + f"{'median s':>10}  status")
    for length in args.lengths:
        for variant, chunk in CONFIGS:
            row = {"variant": variant, "chunk": chunk, "length": length}
            if variant == "full" and _estimate_full_peak(length) > args.budget_gib * 2**30:
                row["status"] = (
                    f"skipped: estimated peak {_estimate_full_peak(length) / MIB:.0f} MiB "
                    f"> budget {args.budget_gib} GiB"
                )
            else:
                row.update(_run_child(variant, length, chunk, args.repeats, args.timeout))
            results.append(row)
            if row["status"] == "ok":
                extra = row["step_extra_mib"]
                numbers = (
                    f"{row['peak_mib']:>10.0f}{row['memory_source']:>10}"
                    f"{'-' if extra is None else f'{extra:.0f}':>12}"
                    f"{row['rss_growth_mib']:>12.0f}{row['median_s']:>10.2f}"
                )
            else:
                numbers = f"{'-':>10}{'-':>10}{'-':>12}{'-':>12}{'-':>10}"
            print(f"{_label(variant, chunk):<14}{length:>7}{numbers}  {row['status']}", flush=True)
    for note in sorted({r["memory_note"] for r in results if r.get("memory_note")}):
        print(f"rss: {note}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
