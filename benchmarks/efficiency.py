"""LRA Table 2 on this machine: training steps/s and peak memory of every attention, 1K-4K.

One full training step (forward, backward, AdamW update) of the LRA byte-level text model
(`zoo` preset `lra`: 4 layers, width 256, 4 heads, MLP 1024) per (variant, length), each in
its own subprocess so that running out of memory is reported instead of ending the run, beside
a model built on `keras.layers.MultiHeadAttention` (the baseline a user would otherwise pick).
Each row states the step's analytic FLOP count (3x the forward count; every attention layer
states its own `attention_flops`) and the achieved GFLOP/s against this machine's float32
matmul rate, measured in the same run.

    python -m benchmarks.efficiency [--lengths 1024,2048,3072,4096] [--batch_size 1]
        [--attentions all] [--jit_compile] [--profile] [--steps 3]
        [--attention_kwargs '{"chunk_size": 128}']

For longer lengths (`--lengths 1024,2048,4096,8192,16384`), a run this machine's memory cannot
hold is skipped with its reason instead of being started: before each run, the variant's peak
memory is predicted from its last two lengths (the measured growth exponent, at least 1 and at
most 2; 2 when only one length ran) and compared with 80% of the machine's memory (its cgroup
limit, else physical memory). On 2 cores with 24 GiB, `full` (and any dense variant) stops
after 8K. The report then gives each variant's speedup over `full` beside its FLOP bound (the
ratio of the step's analytic FLOPs) and the paper's 4K ratio; where `full` was skipped, its
time is extrapolated from its FLOP rate at its longest measured length (marked `~`). It also
gives the exponents at which time and memory grew from 4K to the longest length.

Writes `results/efficiency.json`, `results/efficiency.md` and `results/efficiency.png`.
`--profile` (alias `--trace_memory`) also records a profiler trace of each run's timed steps
under `results/traces/` and reports the peak its memory profile shows beside the allocator's.
Every memory figure names its source (`allocator`, `trace` or `rss`, see
`lra_keras.profiling`); the children run with `TF_ENABLE_ONEDNN_OPTS=1` unless the user set
it, so TensorFlow's CPU allocator keeps statistics on any x86 CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

from benchmarks.child_process import run_json_child

BASELINE = "keras_mha"
# The text model's keys that every row shares, whatever the variant's own preset says.
SAME_MODEL_KEYS = (
    "num_layers",
    "num_heads",
    "embed_dim",
    "qkv_dim",
    "mlp_dim",
    "dropout",
    "attention_dropout",
    "pooling",
)


def _worker_matmul(size: int = 2048, reps: int = 10) -> dict:
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return {"matmul_gflops": 2 * size**3 / statistics.median(times) / 1e9, "size": size}


def model_flops(model, batch: int, length: int) -> int:
    """Analytic FLOPs of one training step: 3x the forward count of the encoder blocks."""
    from lra_keras.layers import LRAEncoder

    encoders = [layer for layer in model.layers if isinstance(layer, LRAEncoder)]
    forward = 0
    for encoder in encoders:
        towers = 2 if "tokens_2" in [t.name.split(":")[0] for t in model.inputs] else 1
        seq = length + int(encoder.use_cls_token)
        for block in encoder.blocks:
            attention = block.attention_layer
            if hasattr(attention, "attention_flops"):
                core = attention.attention_flops(batch, seq, seq)
                proj = attention.projection_flops(batch, seq, seq)
            else:  # keras.layers.MultiHeadAttention: dense attention, four projections.
                dim = encoder.embed_dim
                inner = attention.num_heads * attention.key_dim
                core = 4 * batch * seq * seq * inner
                proj = 2 * batch * seq * 4 * dim * inner
            mlp = 2 * batch * seq * 2 * encoder.embed_dim * block.mlp_dim
            forward += towers * (core + proj + mlp)
    return 3 * forward


def memory_limit_mib() -> float:
    """This machine's memory for the children: the cgroup limit if set, else physical memory."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) / 2**20


def growth_exponent(low: tuple[int, float], high: tuple[int, float]) -> float | None:
    """The exponent e of value ~ length^e between two (length, value) points."""
    (l0, v0), (l1, v1) = low, high
    if l1 == l0 or not v0 or not v1 or v0 <= 0 or v1 <= 0:
        return None
    return math.log(v1 / v0) / math.log(l1 / l0)


MEMORY_SHARE = 0.8


def skip_reason(name: str, length: int, results: list[dict], limit_mib: float) -> str | None:
    """Why `name` at `length` should not be started (its predicted peak memory), or None."""
    earlier = sorted(
        (r for r in results if r["attention"] == name and r["length"] < length),
        key=lambda r: r["length"],
    )
    if earlier and earlier[-1].get("status") == "timeout":
        return f"timed out at {_label(earlier[-1]['length'])}"
    measured = [(r["length"], r["peak_mib"]) for r in earlier if r.get("status") == "ok"]
    measured = [(n, m) for n, m in measured if m]
    if not measured:
        return None
    exponent = growth_exponent(*measured[-2:]) if len(measured) >= 2 else None
    exponent = 2.0 if exponent is None else min(max(exponent, 1.0), 2.0)
    last_length, last_mib = measured[-1]
    predicted = last_mib * (length / last_length) ** exponent
    if predicted <= MEMORY_SHARE * limit_mib:
        return None
    return (
        f"predicted peak {predicted / 1024:.1f} GiB (memory grew as L^{exponent:.2f} up to "
        f"{_label(last_length)}) is over {MEMORY_SHARE:.0%} of this machine's "
        f"{limit_mib / 1024:.0f} GiB"
    )


def text_overrides(attention: str, length: int) -> dict:
    """Zoo overrides for the text model; grid variants get a near-square h x w = length grid."""
    from lra_keras.layers import ATTENTIONS
    from lra_keras.zoo.config import grid_arguments

    overrides = {"max_length": length}
    if attention in ATTENTIONS:
        for arg, required in grid_arguments(ATTENTIONS[attention]).items():
            if required:
                height = max(h for h in range(1, math.isqrt(length) + 1) if length % h == 0)
                overrides["attention_kwargs"] = {arg: [height, length // height]}
                overrides["pooling"] = "mean"
    return overrides


def build_text_model(
    attention: str, length: int, preset: str = "lra", attention_kwargs: dict | None = None
):
    """The zoo's text model with `attention`, or on keras.layers.MultiHeadAttention (BASELINE).

    `attention_kwargs` (`--attention_kwargs`) are merged into the variant's own
    hyperparameters (e.g. Mega-chunk's `chunk_size`); the baseline ignores them.
    """
    import keras

    import lra_keras.layers.encoder.transformer_encoder_block as block_module
    from lra_keras.layers import ATTENTIONS
    from lra_keras.zoo import build_model, get_config

    if attention != BASELINE:
        # Every row is the same text model (the `full` one): variants with a model preset of
        # their own (s4d: S4's 6 layers, no CLS) would change more than the attention.
        base = get_config("text", "full", preset)
        overrides = {key: base[key] for key in SAME_MODEL_KEYS}
        if not getattr(ATTENTIONS[attention], "has_attention_probabilities", True):
            # No probabilities to drop (linear, performer, fnet, s4d): the zoo gives them 0.
            overrides.pop("attention_dropout")
        overrides.update(text_overrides(attention, length))
        if attention_kwargs:
            overrides["attention_kwargs"] = {
                **overrides.get("attention_kwargs", {}),
                **attention_kwargs,
            }
        return build_model("text", attention, preset, **overrides)

    def make_mha(name, /, **kwargs):
        kwargs.pop("seed", None)
        return keras.layers.MultiHeadAttention(**kwargs)

    # Blocks make their attention in __init__, so the swap only has to last for the build.
    original = block_module.get_attention
    block_module.get_attention = make_mha
    try:
        return build_model("text", "full", preset, **text_overrides("full", length))
    finally:
        block_module.get_attention = original


def _worker_step(args: argparse.Namespace) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = build_text_model(args.attention, args.length, attention_kwargs=_kwargs(args))
    optimizer = keras.optimizers.AdamW(1e-4, beta_2=0.98, epsilon=1e-9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    tokens = tf.constant(rng.integers(1, 257, size=(args.batch_size, args.length)), tf.int32)
    labels = tf.constant(rng.integers(0, 2, size=(args.batch_size,)), tf.int32)

    @tf.function(jit_compile=args.jit_compile)
    def step(tokens, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model({"tokens": tokens}, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    for _ in range(args.warmup):
        step(tokens, labels).numpy()
    from lra_keras import profiling

    times = []
    tracing = profiling.trace(args.trace_dir or "", enabled=bool(args.trace_dir))
    with profiling.peak_memory() as memory, tracing:
        for _ in range(args.steps):
            start = time.perf_counter()
            step(tokens, labels).numpy()
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = model_flops(model, args.batch_size, args.length)
    traced = {}
    if args.trace_dir:
        # A reader failure costs the trace column, not the timing just measured.
        try:
            found = profiling.trace_peak_memory(args.trace_dir)
            traced = {"trace_peak_mib": found["peak_mib"], "trace_file": found["file"]}
            if found["note"]:
                traced["trace_note"] = found["note"]
        except (OSError, ValueError, ImportError) as error:
            traced = {"trace_peak_mib": None, "trace_note": f"{type(error).__name__}: {error}"}
    return {
        "attention": args.attention,
        "length": args.length,
        "status": "ok",
        "step_seconds": seconds,
        "steps_per_second": 1.0 / seconds,
        "peak_mib": memory["peak_mib"],
        "memory_source": memory["source"],
        **({"memory_note": memory["note"]} if memory["note"] else {}),
        "step_gflop": flops / 1e9,
        "gflops_per_second": flops / seconds / 1e9,
        **traced,
    }


def _worker_flops(args: argparse.Namespace) -> dict:
    """The step's analytic FLOPs of a run that is skipped (the model is built, never run)."""
    model = build_text_model(args.attention, args.length, attention_kwargs=_kwargs(args))
    flops = model_flops(model, args.batch_size, args.length)
    return {"status": "ok", "step_gflop": flops / 1e9}


def _kwargs(args: argparse.Namespace) -> dict:
    """The `--attention_kwargs` JSON as a dict ({} when not given)."""
    return json.loads(getattr(args, "attention_kwargs", "") or "{}")


def _run_worker(kind: str, args: argparse.Namespace, **extra) -> dict:
    command = [sys.executable, "-m", "benchmarks.efficiency", "--worker", kind]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    if _kwargs(args) and kind != "matmul":
        command += ["--attention_kwargs", args.attention_kwargs]
    command += ["--batch_size", str(args.batch_size), "--steps", str(args.steps)]
    command += ["--warmup", str(args.warmup)]
    if args.jit_compile:
        command.append("--jit_compile")
    if args.profile and kind == "step":
        name = f"{extra['attention']}_{extra['length']}"
        command += ["--trace_dir", os.path.join(args.out_dir, "traces", name)]
    result = run_json_child(command, args.timeout)
    return result if result["status"] == "ok" else {**extra, **result}


def _label(length: int) -> str:
    return f"{length // 1024}K" if length % 1024 == 0 else str(length)


SOURCE_TEXT = {
    "allocator": "TensorFlow's allocator statistics (`tf.config.experimental.get_memory_info`) "
    "over the timed steps",
    "rss": "the child process's peak resident set size (everything the process held, "
    "TensorFlow runtime included), because TensorFlow's allocator kept no statistics: a CPU "
    "without oneDNN, e.g. `TF_ENABLE_ONEDNN_OPTS=0`; leave it unset or set it to 1 for "
    "allocator figures",
}


def _memory_sources(results: list[dict]) -> list[str]:
    """The sources of the rows' peak MiB, the most common first."""
    counts: dict[str, int] = {}
    for r in results:
        if r.get("status") == "ok" and r.get("peak_mib") is not None:
            source = r.get("memory_source") or "unknown"
            counts[source] = counts.get(source, 0) + 1
    return sorted(counts, key=lambda s: (-counts[s], s != "allocator", s))


def _table(results: list[dict], lengths: list[int], args, matmul: dict) -> str:
    by = {(r["attention"], r["length"]): r for r in results}
    sources = _memory_sources(results)
    main_source = sources[0] if sources else "allocator"
    names = sorted({r["attention"] for r in results}, key=lambda n: (n != "full", n))
    head = "| attention | " + " | ".join(f"steps/s {_label(n)}" for n in lengths)
    head += " | " + " | ".join(f"peak MiB {_label(n)}" for n in lengths)
    traced = any("trace_peak_mib" in r for r in results)
    if traced:
        head += " | " + " | ".join(f"trace peak MiB {_label(n)}" for n in lengths)
    head += " |"
    out = [
        "# Efficiency (LRA Table 2 on this machine)",
        "",
        f"Text model, preset `lra` (4 layers, width 256, 4 heads, MLP 1024), batch "
        f"{args.batch_size}, one training step (forward, backward, AdamW), median of "
        f"{args.steps} steps after {args.warmup} warm-up, jit_compile={args.jit_compile}. "
        f"Speedup and memory ratio against `full` in brackets; `{BASELINE}` is the same model "
        f"on keras.layers.MultiHeadAttention. Matmul rate of this machine: "
        f"{matmul.get('matmul_gflops', float('nan')):.0f} GFLOP/s (float32 "
        f"{matmul.get('size')}^2).",
        "",
        head,
        "|" + "---|" * (1 + (3 if traced else 2) * len(lengths)),
    ]
    for name in names:
        cells = []
        for n in lengths:
            r, base = by.get((name, n), {}), by.get(("full", n), {})
            if r.get("status") != "ok":
                cells.append(r.get("status", "-"))
                continue
            ratio = ""
            if base.get("status") == "ok":
                ratio = f" ({r['steps_per_second'] / base['steps_per_second']:.2f}x)"
            cells.append(f"{r['steps_per_second']:.2f}{ratio}")
        for n in lengths:
            r, base = by.get((name, n), {}), by.get(("full", n), {})
            if r.get("status") != "ok" or r.get("peak_mib") is None:
                cells.append(r.get("status", "-"))
                continue
            source = r.get("memory_source") or "unknown"
            ratio = ""
            # A ratio of figures from two different sources would mean nothing.
            same = source == (base.get("memory_source") or "unknown")
            if base.get("status") == "ok" and base.get("peak_mib") and same:
                ratio = f" ({r['peak_mib'] / base['peak_mib']:.2f}x)"
            tag = "" if source == main_source else f" [{source}]"
            cells.append(f"{r['peak_mib']:.0f}{ratio}{tag}")
        for n in lengths if traced else []:
            r = by.get((name, n), {})
            if r.get("status") != "ok":
                cells.append(r.get("status", "-"))
            elif r.get("trace_peak_mib") is None:
                cells.append("no memory profile" if "trace_note" in r else "-")
            else:
                cells.append(f"{r['trace_peak_mib']:.0f}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"Peak MiB source: `{main_source}`, "
        f"{SOURCE_TEXT.get(main_source, 'not recorded')}"
        + "".join(
            f"; cells marked [{s}]: {SOURCE_TEXT.get(s, 'not recorded')}" for s in sources[1:]
        )
        + " (`lra_keras.profiling.peak_memory`; `memory_source` in the JSON). With `--profile` "
        "(alias `--trace_memory`), each run also records a profiler trace of the timed steps "
        "(TensorBoard's Profile tab, under `traces/`) and the table adds the peak its memory "
        "profile shows (source `trace`: `lra_keras.profiling.trace_peak_memory`; "
        "`trace_peak_mib` in the JSON).",
        "",
        "## FLOPs and achieved rate",
        "",
        "| attention | "
        + " | ".join(f"GFLOP/step {_label(n)}" for n in lengths)
        + " | "
        + " | ".join(f"GFLOP/s {_label(n)} (% of matmul)" for n in lengths)
        + " |",
        "|" + "---|" * (1 + 2 * len(lengths)),
    ]
    for name in names:
        cells = []
        for n in lengths:
            r = by.get((name, n), {})
            cells.append(f"{r['step_gflop']:.1f}" if r.get("status") == "ok" else "-")
        for n in lengths:
            r = by.get((name, n), {})
            if r.get("status") != "ok":
                cells.append("-")
                continue
            share = r["gflops_per_second"] / matmul["matmul_gflops"] if matmul else float("nan")
            cells.append(f"{r['gflops_per_second']:.0f} ({100 * share:.0f}%)")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    sections = [skipped_notes(results), bound_table(results, lengths)]
    sections.append(growth_table(results, lengths))
    return "\n".join(out) + "\n\n" + "\n".join(x for x in sections if x)


def full_seconds(by: dict, length: int) -> tuple[float | None, bool]:
    """`full`'s step time at `length`: measured, else extrapolated from its FLOP rate at its
    longest measured length (True when extrapolated); None when neither is known."""
    row = by.get(("full", length), {})
    if row.get("status") == "ok":
        return 1.0 / row["steps_per_second"], False
    ran = sorted((n for (name, n), r in by.items() if name == "full" and r.get("status") == "ok"))
    if not ran or not row.get("step_gflop"):
        return None, False
    rate = by[("full", ran[-1])]["gflops_per_second"]
    return row["step_gflop"] / rate, True


def bound_table(results: list[dict], lengths: list[int]) -> str:
    """Each variant's speedup over `full` beside its FLOP bound and the paper's 4K ratio."""
    from benchmarks.paper import paper_speedup

    by = {(r["attention"], r["length"]): r for r in results}
    names = sorted({r["attention"] for r in results} - {"full"})
    out = [
        "## Speedup over `full` against the FLOP bound",
        "",
        "Each cell: measured speedup (steps/s over `full`'s) / FLOP bound (`full`'s step FLOPs "
        "over the variant's) = share of the bound reached. `~`: `full` could not run at that "
        "length; its time is extrapolated from its FLOP rate at its longest measured length. "
        "Paper: LRA Table 2's 4K speedup (TPU v3, batch 32).",
        "",
        "| attention | " + " | ".join(_label(n) for n in lengths) + " | paper 4K |",
        "|" + "---|" * (len(lengths) + 2),
    ]
    for name in names:
        cells = []
        for n in lengths:
            r, base = by.get((name, n), {}), by.get(("full", n), {})
            seconds, extrapolated = full_seconds(by, n)
            if r.get("status") != "ok" or seconds is None or not base.get("step_gflop"):
                cells.append(r.get("status", "-") if r.get("status") != "ok" else "-")
                continue
            speedup = seconds * r["steps_per_second"]
            bound = base["step_gflop"] / r["step_gflop"]
            mark = "~" if extrapolated else ""
            cells.append(f"{mark}{speedup:.2f} / {bound:.2f} = {100 * speedup / bound:.0f}%")
        paper = paper_speedup(name, 4096)
        cells.append(f"{paper:.2f}" if paper else "-")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def growth_table(results: list[dict], lengths: list[int]) -> str:
    """How each variant's time, memory and FLOPs grew from 4K (or the shortest length) to the
    longest length it ran at: the exponent e of value ~ L^e."""
    high = max(lengths)
    low = min((n for n in lengths if 4096 <= n < high), default=min(lengths))
    if high <= low:
        return ""
    by = {(r["attention"], r["length"]): r for r in results}
    names = sorted({r["attention"] for r in results}, key=lambda n: (n != "full", n))
    out = [
        f"## Growth from {_label(low)} to {_label(high)}",
        "",
        f"The exponent e of time (or peak memory, or analytic FLOPs) ~ L^e between {_label(low)} "
        f"and {_label(high)} (1: linear, 2: quadratic); a variant that did not run at "
        f"{_label(high)} shows its reason.",
        "",
        "| attention | time exponent | memory exponent | FLOP exponent |",
        "|---|---|---|---|",
    ]
    for name in names:
        a, b = by.get((name, low), {}), by.get((name, high), {})
        if a.get("status") != "ok" or b.get("status") != "ok":
            why = b.get("status", "-") if a.get("status") == "ok" else a.get("status", "-")
            out.append(f"| {name} | {why} | {why} | {why} |")
            continue
        cells = []
        for key in ("steps_per_second", "peak_mib", "step_gflop"):
            va, vb = a.get(key), b.get(key)
            if key == "steps_per_second" and va and vb:
                va, vb = 1.0 / va, 1.0 / vb  # time per step
            e = growth_exponent((low, va), (high, vb))
            cells.append("-" if e is None else f"{e:.2f}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def skipped_notes(results: list[dict]) -> str:
    rows = [r for r in results if r.get("status") == "skipped"]
    if not rows:
        return ""
    lines = ["Skipped runs:", ""]
    lines += [f"- {r['attention']} at {_label(r['length'])}: {r['reason']}" for r in rows]
    return "\n".join(lines) + "\n"


def _plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    names = sorted({r["attention"] for r in results})
    for index, name in enumerate(names):
        rows = sorted(
            (r for r in results if r["attention"] == name and r.get("status") == "ok"),
            key=lambda r: r["length"],
        )
        if not rows:
            continue
        lengths = [r["length"] for r in rows]
        # Twenty distinct colours, then dashed lines, so 20+ variants stay readable.
        style = dict(color="k" if name == "full" else plt.cm.tab20(index % 20), marker="o")
        style.update(linestyle="-" if index < 20 else "--", markersize=3, label=name)
        axes[0].plot(lengths, [r["steps_per_second"] for r in rows], **style)
        mem = [(r["length"], r["peak_mib"]) for r in rows if r.get("peak_mib")]
        if mem:
            axes[1].plot(*zip(*mem, strict=True), **style)
    for ax, title in zip(axes, ["training steps/s", "peak memory (MiB)"], strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,2048,3072,4096")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--attentions", default="all")
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument(
        "--profile",
        "--trace_memory",
        action="store_true",
        help="record a profiler trace per run and report the peak its memory profile shows",
    )
    parser.add_argument(
        "--attention_kwargs",
        default="",
        help="JSON dict merged into each variant's own hyperparameters, "
        "e.g. '{\"chunk_size\": 128}'",
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--out_dir", default="results")
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge into an existing results/efficiency.json (new rows replace old ones)",
    )
    parser.add_argument("--worker", choices=["step", "matmul", "flops"], help=argparse.SUPPRESS)
    parser.add_argument("--attention", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace_dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if not isinstance(_kwargs(args), dict):
            raise ValueError("not a JSON object")
    except ValueError as error:
        parser.error(
            f"--attention_kwargs must be a JSON object, got {args.attention_kwargs!r}: {error}"
        )
    if args.worker == "matmul":
        print(json.dumps(_worker_matmul()))
        return None
    if args.worker == "step":
        print(json.dumps(_worker_step(args)))
        return None
    if args.worker == "flops":
        print(json.dumps(_worker_flops(args)))
        return None

    from lra_keras.layers import ATTENTIONS

    lengths = [int(n) for n in args.lengths.split(",")]
    if args.attentions == "all":
        names = ["full", BASELINE] + sorted(n for n in ATTENTIONS if n != "full")
    else:
        names = args.attentions.split(",")
        unknown = sorted(set(names) - set(ATTENTIONS) - {BASELINE})
        if unknown:
            parser.error(f"unknown attention(s) {unknown}; known: {sorted(ATTENTIONS)}")
    os.makedirs(args.out_dir, exist_ok=True)
    matmul = _run_worker("matmul", args)
    print(f"matmul: {matmul}", flush=True)
    results = []
    limit_mib = memory_limit_mib()
    for length in lengths:
        for name in names:
            reason = skip_reason(name, length, results, limit_mib)
            if reason:
                result = {"attention": name, "length": length, "status": "skipped"}
                result["reason"] = reason
                flops = _run_worker("flops", args, attention=name, length=length)
                if flops.get("status") == "ok":
                    result["step_gflop"] = flops["step_gflop"]
            else:
                result = _run_worker("step", args, attention=name, length=length)
            results.append(result)
            print(json.dumps(result), flush=True)
    json_path = os.path.join(args.out_dir, "efficiency.json")
    if args.append and os.path.exists(json_path):
        with open(json_path) as f:
            previous = json.load(f)
        fresh = {(r["attention"], r["length"]) for r in results}
        kept = [r for r in previous["results"] if (r["attention"], r["length"]) not in fresh]
        results = kept + results
        lengths = sorted({r["length"] for r in results})
    report = {
        "config": vars(args),
        "matmul": matmul,
        "memory_limit_mib": limit_mib,
        "results": results,
    }
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out_dir, "efficiency.md"), "w") as f:
        f.write(_table(results, lengths, args, matmul))
    _plot(results, os.path.join(args.out_dir, "efficiency.png"))
    return report


if __name__ == "__main__":
    main()
