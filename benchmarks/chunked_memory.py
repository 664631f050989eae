"""Peak memory and time of one forward+backward pass: `chunked` attention against `full`.

Run: `python -m benchmarks.chunked_memory` (options: `--lengths`, `--configs`, `--repeats`,
`--budget-gib`, `--output`; `--backend jax` for XLA's compiled memory instead). Each
configuration runs in its own subprocess, so peaks do not mix and an out-of-memory or crash is
reported rather than fatal. A configuration whose estimated peak exceeds `--budget-gib` (full
attention at long lengths) is skipped and reported as an estimate.

Configurations (`--configs`, comma-separated): `full`; `chunked` (its default tiling);
`chunked-old` (the default before the whole-call budget: one dense tile while the scores fit
8192 x 4096 entries per (batch, head), else tiles of at most 512, given as explicit chunk
sizes, so one run compares before and after); `chunked-N` (chunks of N x N).

TensorFlow (default): one `tf.function` (graph mode, no XLA) step computing the loss
`sum(y^2)` of one attention layer (batch 1, 4 heads x 64, model width 256, no masks) and its
gradients with respect to the input and every weight. Peak memory is
`lra_keras.profiling.memory`'s reading, with its source printed: TensorFlow's CPU allocator peak
(source `allocator`: `tf.config.experimental.get_memory_info("CPU:0")["peak"]` after
`reset_memory_stats`, over the timed steps; it includes the layer's weights and inputs), or,
where the allocator keeps no statistics, the process's peak RSS (source `rss`, with no
step-extra figure). The children run with `TF_ENABLE_ONEDNN_OPTS=1` unless the user set it, so
the CPU allocator keeps statistics on any x86 CPU. The process's peak RSS growth from just
before the first (tracing) step is a cross-check. Time is the median of `--repeats` steps after
one warm-up step.

`--backend jax`: the same step (gradients of the input and every weight) as one `jax.jit`,
compiled and not run; the table gives XLA's temporary memory
(`compiled.memory_analysis().temp_size_in_bytes`), the growth from the previous length, and the
ratio to `full`. `--lra-model` adds LRA Table 2's training step of the zoo's text model
(preset `lra`, `--model-length` 4000 tokens + CLS, batch `--model-batch` 32, forward, backward
and AdamW) for `full` and `chunked`, compiled only: whether it fits a memory where `full` does
not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from benchmarks.child_process import run_json_child

BATCH, HEADS, KEY_DIM, MODEL_DIM = 1, 4, 64, 256
CONFIGS = "full,chunked,chunked-old,chunked-1024,chunked-256"
MIB = 2**20


def _parse_config(config: str) -> tuple[str, str | None]:
    """`full` -> ("full", None); `chunked` -> ("chunked", None); `chunked-old`/`chunked-N`."""
    variant, _, chunk = config.partition("-")
    if variant not in ("full", "chunked") or (chunk and chunk != "old" and not chunk.isdigit()):
        raise SystemExit(f"--configs: unknown configuration {config!r}")
    return variant, chunk or None


def old_default_chunks(length: int) -> tuple[int, int]:
    """The default tiling before the whole-call budget (self-attention at `length`): one tile
    while the scores fit 8192 x 4096 entries per (batch, head), else equal chunks of <= 512."""
    if length * length <= 8192 * 4096:
        return length, length
    chunk = -(-length // -(-length // 512))
    return chunk, chunk


def _chunk_kwargs(chunk: str | None, length: int) -> dict:
    if chunk is None:
        return {}
    size = old_default_chunks(length)[0] if chunk == "old" else int(chunk)
    return dict(query_chunk_size=size, key_chunk_size=size)


def _estimate_full_peak(length: int) -> int:
    # Measured at L=4096: about four [B, H, L, L] float32 tensors alive (logits, probabilities
    # and their gradients).
    return 4 * BATCH * HEADS * length * length * 4


def _measure(variant: str, length: int, chunk: str | None, repeats: int) -> dict:
    import resource

    import numpy as np
    import tensorflow as tf

    from lra_keras.layers import get_attention
    from lra_keras.profiling.memory import read_peak_memory, reset_peak_memory

    kwargs = dict(num_heads=HEADS, key_dim=KEY_DIM, seed=0, **_chunk_kwargs(chunk, length))
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


def _run_child(variant, length, chunk, repeats, timeout) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.chunked_memory", "--child", variant, str(length)]
    cmd += [chunk or "default", "--repeats", str(repeats)]
    result = run_json_child(cmd, timeout)
    if result["status"] != "ok":
        result["status"] = f"{result['status']}: {result.get('error', '')}"
    return result


def _tf_rows(args) -> list[dict]:
    """Every configuration at every length, `--rounds` times in turn (so drift in the machine's
    speed hits them alike); a row keeps the median over rounds of each child's figures."""
    configs = [_parse_config(c) for c in args.configs.split(",")]
    print(
        f"B={BATCH}, heads={HEADS}x{KEY_DIM}, d_model={MODEL_DIM}, forward+backward, "
        f"graph mode; median of {args.repeats} steps, median over {args.rounds} round(s)"
    )
    header = f"{'config':<14}{'L':>7}{'peak MiB':>10}{'source':>10}{'step extra':>12}"
    header += f"{'RSS growth':>12}{'median s':>10}{'x full mem':>12}{'x full time':>12}"
    print(header + "  status")
    results = []
    for length in args.lengths:
        rows = {}
        for variant, chunk in configs:
            label = variant if chunk is None else f"{variant}-{chunk}"
            rows[label] = {"variant": variant, "chunk": chunk, "length": length, "label": label}
        runs = {label: [] for label in rows}
        for _ in range(args.rounds):
            for label, row in rows.items():
                variant, chunk = row["variant"], row["chunk"]
                if variant == "full" and _estimate_full_peak(length) > args.budget_gib * 2**30:
                    row["status"] = (
                        f"skipped: estimated peak {_estimate_full_peak(length) / MIB:.0f} MiB "
                        f"> budget {args.budget_gib} GiB"
                    )
                    continue
                run = _run_child(variant, length, chunk, args.repeats, args.timeout)
                runs[label].append(run)
                figures = (
                    f"{run['peak_mib']:.0f} MiB, {run['median_s']:.2f} s"
                    if run["status"] == "ok"
                    else run["status"]
                )
                print(f"  round {len(runs[label])}: {label} at {length}: {figures}", flush=True)
        for label, row in rows.items():
            ok = [r for r in runs[label] if r["status"] == "ok"]
            if ok:
                row.update(ok[-1])
                for key in ("peak_mib", "rss_growth_mib", "median_s"):
                    row[key] = statistics.median(r[key] for r in ok)
                extras = [r["step_extra_mib"] for r in ok if r["step_extra_mib"] is not None]
                row["step_extra_mib"] = statistics.median(extras) if extras else None
                row["rounds"] = [{k: r[k] for k in ("peak_mib", "median_s")} for r in ok]
            elif runs[label]:
                row.update(runs[label][-1])
        full = rows.get("full")
        for label, row in rows.items():
            if row.get("status") == "ok" and full is not None and full.get("status") == "ok":
                row["memory_ratio_to_full"] = row["peak_mib"] / full["peak_mib"]
                row["time_ratio_to_full"] = row["median_s"] / full["median_s"]
            if row.get("status") == "ok":
                extra = row["step_extra_mib"]
                ratios = (
                    f"{row['memory_ratio_to_full']:>11.2f}x{row['time_ratio_to_full']:>11.2f}x"
                    if "memory_ratio_to_full" in row
                    else f"{'-':>12}{'-':>12}"
                )
                numbers = (
                    f"{row['peak_mib']:>10.0f}{row['memory_source']:>10}"
                    f"{'-' if extra is None else f'{extra:.0f}':>12}"
                    f"{row['rss_growth_mib']:>12.0f}{row['median_s']:>10.2f}{ratios}"
                )
            else:
                numbers = f"{'-':>10}{'-':>10}{'-':>12}{'-':>12}{'-':>10}{'-':>12}{'-':>12}"
            print(f"{label:<14}{length:>7}{numbers}  {row['status']}", flush=True)
            results.append(row)
    for note in sorted({r["memory_note"] for r in results if r.get("memory_note")}):
        print(f"rss: {note}")
    return results


# ------------------------------------------------------------------------------------- JAX


def _jax_layer_temp(variant: str, chunk: str | None, length: int) -> dict:
    """XLA's compiled (not run) memory of the layer's jitted forward+backward at `length`."""
    import jax
    import jax.numpy as jnp
    import keras

    from lra_keras.layers import get_attention

    keras.utils.set_random_seed(0)
    kwargs = dict(num_heads=HEADS, key_dim=KEY_DIM, seed=0, **_chunk_kwargs(chunk, length))
    layer = get_attention(variant, **kwargs)
    shape = (BATCH, length, MODEL_DIM)
    layer.build(shape, shape)
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, x):
        y, _ = layer.stateless_call(trainable, non_trainable, x, x)
        return jnp.sum(jnp.square(y))

    x = jax.ShapeDtypeStruct(shape, "float32")
    trainable = [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in layer.trainable_variables]
    return _compiled_memory(jax.jit(jax.grad(loss, argnums=(0, 1))).lower(trainable, x))


def _compiled_memory(lowered) -> dict:
    start = time.perf_counter()
    stats = lowered.compile().memory_analysis()
    return {
        "temp_mib": stats.temp_size_in_bytes / MIB,
        "argument_mib": stats.argument_size_in_bytes / MIB,
        "compile_s": round(time.perf_counter() - start, 1),
    }


def _jax_model_temp(attention: str, length: int, batch: int) -> dict:
    """The LRA text model's training step (forward, backward, AdamW), compiled, not run."""
    import jax

    from benchmarks.gpu import _text_step

    step, state, data = _text_step(attention, length, batch, "lra")
    specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (state, data))
    return _compiled_memory(step.lower(*specs[0], *specs[1]))


def _jax_rows(args) -> list[dict]:
    configs = [_parse_config(c) for c in args.configs.split(",")]
    print(
        f"JAX, B={BATCH}, heads={HEADS}x{KEY_DIM}, d_model={MODEL_DIM}, forward+backward "
        "(grads of input and weights), one jax.jit, compiled only: XLA temporary memory"
    )
    print(f"{'config':<14}{'L':>7}{'temp MiB':>11}{'x prev L':>10}{'x full':>9}{'compile s':>11}")
    results, previous, full = [], {}, {}
    for length in args.lengths:
        for variant, chunk in configs:
            label = variant if chunk is None else f"{variant}-{chunk}"
            row = {"backend": "jax", "label": label, "length": length}
            try:
                row.update(_jax_layer_temp(variant, chunk, length))
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on.
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                print(f"{label:<14}{length:>7}  {row['error']}", flush=True)
                results.append(row)
                continue
            temp = row["temp_mib"]
            if label == "full":
                full[length] = temp
            growth = temp / previous[label] if label in previous else None
            ratio = temp / full[length] if length in full else None
            row.update(growth_from_previous=growth, ratio_to_full=ratio)
            previous[label] = temp
            print(
                f"{label:<14}{length:>7}{temp:>11.1f}"
                f"{'-' if growth is None else f'{growth:.2f}x':>10}"
                f"{'-' if ratio is None else f'{ratio:.3f}':>9}{row['compile_s']:>11}",
                flush=True,
            )
            results.append(row)
    if args.lra_model:
        print(
            f"LRA text model (preset lra), {args.model_length} tokens + CLS, batch "
            f"{args.model_batch}, one AdamW training step, compiled only"
        )
        for attention in ("full", "chunked"):
            row = {"backend": "jax", "part": "lra_model", "attention": attention}
            row.update(length=args.model_length, batch=args.model_batch)
            try:
                row.update(_jax_model_temp(attention, args.model_length, args.model_batch))
                print(
                    f"{attention:<14}temp {row['temp_mib']:.0f} MiB "
                    f"({row['temp_mib'] / 1024:.2f} GiB), arguments {row['argument_mib']:.0f} "
                    f"MiB, compiled in {row['compile_s']} s",
                    flush=True,
                )
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                print(f"{attention:<14}{row['error']}", flush=True)
            results.append(row)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow")
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--configs", default=CONFIGS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="TensorFlow: children per config")
    parser.add_argument("--budget-gib", type=float, default=10.0)
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--lra-model", action="store_true", help="JAX: the LRA text model too")
    parser.add_argument("--model-length", type=int, default=4000)
    parser.add_argument("--model-batch", type=int, default=32)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "LENGTH", "CHUNK"))
    args = parser.parse_args(argv)

    if args.child:
        variant, length, chunk = args.child[0], int(args.child[1]), args.child[2]
        chunk = None if chunk == "default" else chunk
        print(json.dumps(_measure(variant, length, chunk, args.repeats)), flush=True)
        return
    if args.backend == "jax":
        # Set before Keras is first imported (this process imports it only here).
        os.environ["KERAS_BACKEND"] = "jax"
        args.lengths = args.lengths or [1024, 2048, 4096, 8192, 16384]
        results = _jax_rows(args)
    else:
        args.lengths = args.lengths or [4096, 16384]
        results = _tf_rows(args)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
