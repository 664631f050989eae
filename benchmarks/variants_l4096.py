"""Time and peak memory of one forward+backward pass of attention variants, relative to `full`.

Run: `python -m benchmarks.variants_l4096 --attentions local,sparse,longformer` (options:
`--length` (4096), `--batch` (1), `--repeats` (1), `--kwargs` (JSON: per-variant hyperparameter
overrides), `--timeout`, `--output`). `full` is always measured too, as the baseline of the
ratios; `keras_mha` names `keras.layers.MultiHeadAttention` itself. Each variant runs in its own
subprocess, so peaks do not mix and a crash or out-of-memory is reported rather than fatal.

Measured: one `tf.function` (graph mode, no XLA) step computing the loss `sum(y^2)` of one
attention layer (4 heads x 64, model width 256, no masks, no causal mask) and its
gradients with respect to the input and every weight. Each variant uses its layer defaults
(DESIGN.md section 2) except the static needs filled from the length: `image_shape` and
`axis_shape` (the most square h x w = L grid) and `max_length`. Peak memory is
`lra_keras.profiling.memory`'s reading: TensorFlow's CPU allocator peak (source `allocator`:
`tf.config.experimental.get_memory_info("CPU:0")["peak"]`, reset after the warm-up step, so
it covers the timed steps; it includes the layer's weights and inputs) or, where the allocator
keeps no statistics, the process's peak RSS (source `rss`); each row prints its source. The
children run with `TF_ENABLE_ONEDNN_OPTS=1` unless the user set it, so the CPU allocator keeps
statistics on any x86 CPU. Time is the median of
`--repeats` steps after one warm-up (tracing) step. Each row also gives the step's analytic
FLOPs (3x the layer's forward `attention_flops + projection_flops`) and the achieved GFLOP/s,
beside this machine's float32 matmul rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from benchmarks.child_process import run_json_child

HEADS, KEY_DIM, MODEL_DIM = 4, 64, 256
BASELINE = "keras_mha"
DEFAULT_ATTENTIONS = "local,image_local,sparse,longformer,bigbird,axial"
MIB = 2**20


def _grid(length: int) -> tuple[int, int]:
    h = int(math.isqrt(length))
    while length % h:
        h -= 1
    return h, length // h


def _static_kwargs(name: str, length: int) -> dict:
    """Hyperparameters a variant cannot default: its grid or its maximum length."""
    if name == "image_local":
        return {"image_shape": _grid(length)}
    if name == "axial":
        return {"axis_shape": _grid(length)}
    if name in ("linformer", "synthesizer"):
        return {"max_length": length}
    return {}


def step_flops(layer, batch: int, length: int) -> int:
    """Analytic FLOPs of one forward+backward step of `layer` (3x its forward count)."""
    if hasattr(layer, "attention_flops"):
        forward = layer.attention_flops(batch, length, length)
        forward += layer.projection_flops(batch, length, length)
    else:  # keras.layers.MultiHeadAttention: dense scores and mixing, four projections.
        inner = HEADS * KEY_DIM
        forward = 4 * batch * length * length * inner + 8 * batch * length * MODEL_DIM * inner
    return 3 * forward


def _measure(name: str, length: int, batch: int, repeats: int, overrides: dict) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from lra_keras.layers import get_attention
    from lra_keras.profiling.memory import read_peak_memory, reset_peak_memory

    kwargs = dict(num_heads=HEADS, key_dim=KEY_DIM, seed=0)
    if name == BASELINE:
        kwargs.update(overrides)
        layer = keras.layers.MultiHeadAttention(**kwargs)
    else:
        kwargs.update(_static_kwargs(name, length))
        kwargs.update(overrides)
        layer = get_attention(name, **kwargs)
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, length, MODEL_DIM)), "float32")

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, x) ** 2)
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        return loss, tf.add_n([tf.reduce_sum(g) for g in grads])

    step(x)[1].numpy()
    reset_peak_memory("CPU:0")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x)[1].numpy()
        times.append(time.perf_counter() - start)
    peak = read_peak_memory("CPU:0")
    flops = step_flops(layer, batch, length)
    return {
        "kwargs": {k: v for k, v in kwargs.items() if k not in ("num_heads", "key_dim", "seed")},
        "peak_mib": peak["peak_mib"],
        "memory_source": peak["source"],
        **({"memory_note": peak["note"]} if peak["note"] else {}),
        "median_s": float(np.median(times)),
        "step_gflop": flops / 1e9,
        "gflops_per_second": flops / float(np.median(times)) / 1e9,
        "times_s": [round(t, 3) for t in times],
    }


def _run_child(name, length, batch, repeats, overrides, timeout) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.variants_l4096", "--child", name]
    cmd += ["--length", str(length), "--batch", str(batch), "--repeats", str(repeats)]
    cmd += ["--kwargs", json.dumps(overrides)]
    result = run_json_child(cmd, timeout)
    if result["status"] != "ok":
        result["status"] = f"{result['status']}: {result.get('error', '')}"
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attentions", default=DEFAULT_ATTENTIONS, help="comma-separated names")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--kwargs", default="{}", help='JSON overrides, e.g. {"local": {"block_size": 50}}'
    )
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = json.loads(args.kwargs)

    if args.child:
        result = _measure(args.child, args.length, args.batch, args.repeats, overrides)
        print(json.dumps(result), flush=True)
        return

    names = ["full"] + [n for n in args.attentions.split(",") if n and n != "full"]
    matmul_cmd = [sys.executable, "-m", "benchmarks.efficiency", "--worker", "matmul"]
    matmul = run_json_child(matmul_cmd, args.timeout)
    matmul_rate = matmul.get("matmul_gflops", float("nan"))
    print(
        f"L={args.length}, B={args.batch}, heads={HEADS}x{KEY_DIM}, d_model={MODEL_DIM}, "
        f"forward+backward, graph mode; median of {args.repeats} step(s) after a warm-up; "
        f"float32 matmul {matmul_rate:.0f} GFLOP/s"
    )
    print(
        f"{'attention':<14}{'peak MiB':>10}{'source':>10}{'x full':>8}{'time s':>9}{'x full':>8}"
        f"{'GFLOP/s':>9}{'% mm':>6}  kwargs"
    )
    results = {}
    for name in names:
        per_variant = overrides.get(name, {})
        results[name] = res = _run_child(
            name, args.length, args.batch, args.repeats, per_variant, args.timeout
        )
        if res["status"] != "ok":
            print(f"{name:<14}  {res['status']}", flush=True)
            continue
        base = results["full"] if results["full"]["status"] == "ok" else None
        # A ratio of figures from two different sources would mean nothing.
        same = base and base["memory_source"] == res["memory_source"]
        mem_ratio = res["peak_mib"] / base["peak_mib"] if same else float("nan")
        time_ratio = res["median_s"] / base["median_s"] if base else float("nan")
        res.update(peak_vs_full=mem_ratio, time_vs_full=time_ratio)
        print(
            f"{name:<14}{res['peak_mib']:>10.0f}{res['memory_source']:>10}{mem_ratio:>8.2f}"
            f"{res['median_s']:>9.2f}"
            f"{time_ratio:>8.2f}{res['gflops_per_second']:>9.0f}"
            f"{100 * res['gflops_per_second'] / matmul_rate:>5.0f}%  {res['kwargs']}",
            flush=True,
        )
    notes = {r["memory_note"] for r in results.values() if r.get("memory_note")}
    for note in sorted(notes):
        print(f"rss: {note}")
    if args.output:
        with open(args.output, "w") as f:
            summary = {"length": args.length, "batch": args.batch, "matmul": matmul}
            json.dump({**summary, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
