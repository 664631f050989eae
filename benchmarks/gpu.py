"""The LRA efficiency table on a GPU, on Keras's JAX backend (no TensorFlow needed).

    python -m benchmarks.gpu [--output results/gpu.json] [--budget_s 420] [--smoke]
    python -m benchmarks.gpu --memory_only [--lengths 1024,2048,4096,8192,16384]

Needs only jax, numpy, h5py, absl-py, rich, ml-dtypes, keras (+ namex, optree) and this
source folder; it sets `KERAS_BACKEND=jax` itself. Three parts, in one process, each row
printed and appended to the JSON file as soon as it is measured (a cut-off run keeps its rows):

1. `matmul`: the float32 and bfloat16 matmul rate of the device (8192^2, median of 10).
2. `table2`: LRA Table 2's protocol: the zoo's `text` model (preset `lra`), batch 32, one
   training step (forward, backward, AdamW) as one `jax.jit` of Keras's stateless API, steps/s
   at 1K-4K for the paper's nine models plus `chunked`, the speedup over `full` beside the
   paper's (TPU v3) figures.
3. `layer`: one attention layer (width 256, 4 heads x 64) forward+backward (gradients of the
   input and every weight) at 4K, 16K and 64K tokens (batch 8, 2 and 1: 32K tokens a step), in
   float32 and mixed bfloat16, for every registered variant and for
   `keras.layers.MultiHeadAttention(flash_attention=True)`, with XLA's compiled memory
   (`compiled.memory_analysis()`: temporaries, arguments and outputs).

Compilation is not timed; time is the median of `--repeats` steps after a warm-up. A row that
runs out of memory (or fails to compile) is recorded with its error and the run goes on. The
rows are ordered so that a `--budget_s` cut (default 420 s, under the 8 minutes the run must
take) drops the least important ones; rows past the budget are recorded as skipped.
`--memory_only` compiles chunked's (and full's) forward+backward on the current device at
`--lengths` and reports the compiled temporary memory without running it (on a CPU too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from benchmarks.paper import PAPER_LENGTHS, PAPER_TABLE2  # noqa: E402

TABLE2_MODELS = list(PAPER_TABLE2) + ["chunked"]
MHA = "keras_mha_flash"
WIDTH, HEADS, KEY_DIM = 256, 4, 64
TOKENS_PER_LAYER_STEP = 32768
GIB = 2**30


class Recorder:
    """Prints each row and rewrites the JSON file after every row."""

    def __init__(self, path: str | None, budget_s: float, meta: dict):
        self.path, self.budget_s, self.start = path, budget_s, time.perf_counter()
        self.doc = {"meta": meta, "rows": []}
        self._write()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over_budget(self) -> bool:
        return self.elapsed() > self.budget_s

    def add(self, row: dict) -> None:
        row["elapsed_s"] = round(self.elapsed(), 1)
        self.doc["rows"].append(row)
        print(json.dumps(row), flush=True)
        self._write()

    def _write(self) -> None:
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.doc, f, indent=1)
            os.replace(tmp, self.path)


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


def _time(fn, args, repeats: int) -> float:
    """Median seconds of `fn(*args)` after one warm-up call."""
    _block(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _memory(compiled) -> dict:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it.
        return {}
    if stats is None:
        return {}
    return {
        "temp_mib": round(stats.temp_size_in_bytes / 2**20, 2),
        "argument_mib": round(stats.argument_size_in_bytes / 2**20, 2),
        "output_mib": round(stats.output_size_in_bytes / 2**20, 2),
    }


def _error(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
        return "out of memory: " + text[:300]
    return text[:500]


# ------------------------------------------------------------------------------------ matmul


def matmul_rates(size: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    rates = {}
    for dtype in ("float32", "bfloat16"):
        a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
        b = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
        matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=x.dtype))
        seconds = _time(matmul, (a, b), repeats)
        rates[f"{dtype}_tflops"] = round(2 * size**3 / seconds / 1e12, 2)
    return rates


# ------------------------------------------------------------------------------------ table 2


def _text_step(attention: str, length: int, batch: int, preset: str):
    """A jitted AdamW training step of the text model and its initial state."""
    import jax
    import keras
    import numpy as np

    from benchmarks.efficiency import text_overrides
    from lra_keras.zoo import build_model

    keras.utils.set_random_seed(0)
    model = build_model("text", attention, preset, **text_overrides(attention, length))
    optimizer = keras.optimizers.AdamW(1e-4, beta_2=0.98, epsilon=1e-9)
    optimizer.build(model.trainable_variables)
    loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_fn(trainable, non_trainable, tokens, labels):
        logits, non_trainable = model.stateless_call(
            trainable, non_trainable, {"tokens": tokens}, training=True
        )
        return loss_object(labels, logits), non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(trainable, non_trainable, opt_vars, tokens, labels):
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, tokens, labels)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, trainable, non_trainable, opt_vars

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 257, size=(batch, length)).astype("int32")
    labels = (np.arange(batch) % 2).astype("int32")
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    return jax.jit(step, donate_argnums=(0, 1, 2)), state, (tokens, labels)


def table2_row(attention: str, length: int, batch: int, preset: str, repeats: int) -> dict:
    row = {"part": "table2", "attention": attention, "length": length, "batch": batch}
    try:
        step, state, data = _text_step(attention, length, batch, preset)
        start = time.perf_counter()
        compiled = step.lower(*state, *data).compile()
        row["compile_s"] = round(time.perf_counter() - start, 1)
        row.update(_memory(compiled))
        # The step donates its state: thread it through the timed calls.
        holder = {"state": state}

        def run():
            loss, *new_state = compiled(*holder["state"], *data)
            holder["state"] = new_state
            return loss

        seconds = _time(run, (), repeats)
        row["steps_per_s"] = round(1.0 / seconds, 3)
    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on.
        row["error"] = _error(exc)
    return row


# -------------------------------------------------------------------------------- one layer


def _layer(name: str, length: int, dtype: str, flash: bool | None):
    import keras

    from benchmarks.efficiency import text_overrides
    from lra_keras.zoo import get_config

    keras.utils.set_random_seed(0)
    if name == MHA:
        return keras.layers.MultiHeadAttention(
            num_heads=HEADS, key_dim=KEY_DIM, flash_attention=flash, dtype=dtype
        )
    from lra_keras.layers import get_attention

    kwargs = get_config("text", name, "lra", **text_overrides(name, length))["attention_kwargs"]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return get_attention(name, num_heads=HEADS, key_dim=KEY_DIM, dtype=dtype, **kwargs)


def layer_step(name: str, length: int, batch: int, dtype: str, flash: bool | None = True):
    """The jitted forward+backward of one layer, its arguments (built, not yet compiled)."""
    import jax
    import jax.numpy as jnp

    layer = _layer(name, length, dtype, flash)
    x_dtype = "bfloat16" if "bfloat16" in dtype else "float32"
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, length, WIDTH), x_dtype)
    layer.build(tuple(x.shape), tuple(x.shape))
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, x):
        y, _ = layer.stateless_call(trainable, non_trainable, x, x, training=False)
        return jnp.sum(jnp.square(y.astype("float32")))

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return step, ([v.value for v in layer.trainable_variables], x)


def layer_row(
    name: str, length: int, dtype: str, repeats: int, flash: bool | None, tokens: int
) -> dict:
    batch = max(1, tokens // length)
    row = {"part": "layer", "attention": name, "length": length, "batch": batch, "dtype": dtype}
    try:
        step, args = layer_step(name, length, batch, dtype, flash)
        compiled = step.lower(*args).compile()
        row.update(_memory(compiled))
        row["ms"] = round(1000 * _time(compiled, args, repeats), 3)
    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on.
        row["error"] = _error(exc)
    return row


def memory_row(name: str, length: int, batch: int, dtype: str = "float32") -> dict:
    """Compiled (not run) forward+backward memory of one layer on the current device."""
    row = {"part": "memory", "attention": name, "length": length, "batch": batch, "dtype": dtype}
    try:
        step, args = layer_step(name, length, batch, dtype, flash=None)
        row.update(_memory(step.lower(*args).compile()))
    except Exception as exc:  # noqa: BLE001
        row["error"] = _error(exc)
    return row


# ------------------------------------------------------------------------------------- main


def _speedups(rows: list[dict]) -> list[str]:
    """Markdown lines: steps/s and speedup over full, ours beside the paper's."""
    by = {(r["attention"], r["length"]): r for r in rows if r.get("part") == "table2"}
    lengths = sorted({r["length"] for r in rows if r.get("part") == "table2"})
    lines = ["| model | " + " | ".join(f"{n // 1024 or n}K" for n in lengths) + " |"]
    lines.append("|---" * (len(lengths) + 1) + "|")
    for name in TABLE2_MODELS:
        cells = []
        for length in lengths:
            row, base = by.get((name, length), {}), by.get(("full", length), {})
            if "steps_per_s" not in row:
                cells.append(row.get("error", "skipped")[:20])
                continue
            text = f"{row['steps_per_s']:.2f}"
            if base.get("steps_per_s"):
                text += f" ({row['steps_per_s'] / base['steps_per_s']:.1f}x"
                paper = PAPER_TABLE2.get(name)
                if paper and length in PAPER_LENGTHS:
                    k = PAPER_LENGTHS.index(length)
                    text += f"; paper {paper[k] / PAPER_TABLE2['full'][k]:.1f}x"
                text += ")"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="results/gpu.json")
    parser.add_argument(
        "--budget_s", type=float, default=None, help="420 s by default; none with --smoke"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny lengths (a CPU test)")
    parser.add_argument("--memory_only", action="store_true")
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    parser.add_argument("--variants", default="all", help="layer part: comma-separated names")
    args = parser.parse_args(argv)

    import jax
    import keras

    from lra_keras.layers import ATTENTIONS

    if keras.backend.backend() != "jax":
        raise SystemExit("benchmarks.gpu runs on KERAS_BACKEND=jax.")
    device = jax.devices()[0]
    meta = {
        "device": f"{device.platform}: {getattr(device, 'device_kind', '')}",
        "jax": jax.__version__,
        "keras": keras.__version__,
        "smoke": args.smoke,
    }
    budget_s = args.budget_s if args.budget_s is not None else (1e9 if args.smoke else 420.0)
    rec = Recorder(args.output, budget_s, meta)
    if args.memory_only:
        for length in [int(n) for n in args.lengths.split(",")]:
            for name in ("chunked", "full"):
                rec.add(memory_row(name, length, batch=1))
        return rec.doc

    variants = sorted(ATTENTIONS) if args.variants == "all" else args.variants.split(",")
    if args.smoke:
        matmul_size, repeats, preset, batch = 256, 1, "tiny", 2
        table_lengths, layer_lengths, dtypes = (32,), (64,), ("float32", "mixed_bfloat16")
    else:
        matmul_size, repeats, preset, batch = 8192, args.repeats, "lra", 32
        table_lengths, layer_lengths = PAPER_LENGTHS, (4096, 16384, 65536)
        dtypes = ("mixed_bfloat16", "float32")
    flash = None if args.smoke or device.platform != "gpu" else True

    rec.add({"part": "matmul", **matmul_rates(matmul_size, 3 if args.smoke else 10)})

    # Most important first: the layers at 4K and chunked/full/MHA at long lengths, then Table 2
    # at 4K and 1K, then the rest; a budget cut drops the tail.
    jobs = []
    first = [n for n in ("chunked", "full") if n in variants] + [MHA]
    for length in layer_lengths:
        for dtype in dtypes:
            names = first + [n for n in variants if n not in first]
            for name in names if length == layer_lengths[0] else first:
                jobs.append(("layer", name, length, dtype))
    ordered = dict.fromkeys((table_lengths[-1], table_lengths[0]) + tuple(table_lengths[1:-1]))
    for length in ordered:
        for name in TABLE2_MODELS:
            jobs.append(("table2", name, length, None))
    for length in layer_lengths[1:]:
        for dtype in dtypes:
            for name in variants:
                if name not in first:
                    jobs.append(("layer", name, length, dtype))

    for part, name, length, dtype in jobs:
        if rec.over_budget():
            rec.add({"part": part, "attention": name, "length": length, "dtype": dtype,
                     "skipped": "time budget"})  # fmt: skip
            continue
        if part == "layer":
            tokens = 2 * length if args.smoke else TOKENS_PER_LAYER_STEP
            rec.add(layer_row(name, length, dtype, repeats, flash, tokens))
        else:
            rec.add(table2_row(name, length, batch, preset, repeats))
        jax.clear_caches()
    rec.doc["table2_markdown"] = _speedups(rec.doc["rows"])
    rec._write()
    print("\n".join(rec.doc["table2_markdown"]))
    return rec.doc


if __name__ == "__main__":
    main(sys.argv[1:])
