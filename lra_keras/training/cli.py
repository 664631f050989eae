"""`lra-train`: train an LRA task model with any attention, on TensorFlow or JAX.

The backend is Keras's (`KERAS_BACKEND=jax` trains with a `jax.jit` step, numpy input and
`keras.distribution`; see `lra_keras.training.backends`). From Python, call
`lra_keras.training.train_task` with the same options.

    lra-train --task listops --attention local --preset tiny --data_dir data/listops \
        --model_dir runs/listops --num_train_steps 500 --profile_steps 5,8

Resumes from the latest checkpoint in `--model_dir` (with the same flags: a run refuses to
continue under another configuration); writes TensorBoard logs under `<model_dir>/logs`,
`results.json`, and (unless `--noexport`) a reusable SavedModel under `<model_dir>/export`.

Exit status: 0 trained (or already trained: evaluated again); 2 a user error (one line on
stderr: what was wrong, what to do), among them a loss that turned NaN or infinite (the last
finite checkpoint stays, nothing is exported), a configuration that does not fit in memory,
and a --model_dir another live run holds (`<model_dir>/.lock`); 143 (128 + SIGTERM)
preempted: a SIGTERM made the run finish its step (or abandon its final evaluation and
export), save a checkpoint and stop, and the same command resumes it; 1 an internal error
(with its traceback).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

from lra_keras.onednn import enable_cpu_memory_statistics

# Before anything imports TensorFlow: CPU allocator statistics (peak memory, --profile_steps
# memory profile) on any x86 CPU, unless the user set TF_ENABLE_ONEDNN_OPTS. (It sets an
# environment variable only: a JAX run imports no TensorFlow.)
enable_cpu_memory_statistics()

FLAGS = flags.FLAGS
flags.DEFINE_string("task", None, "LRA task: listops, text, retrieval, image, pathfinder, ...")
flags.DEFINE_string("attention", "full", "A registered attention name (lra_keras.layers).")
flags.DEFINE_enum("preset", "lra", ["lra", "small", "tiny"], "Model and training preset.")
flags.DEFINE_string("data_dir", None, "The task's data folder (see `lra-data`).")
flags.DEFINE_string("model_dir", None, "Checkpoints, logs and results; resumed if present.")
flags.DEFINE_enum(
    "strategy",
    "auto",
    ["auto", "default", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy; auto picks TPU > several GPUs > one device. On jax: auto and "
    "mirrored are data parallel over the local devices, default is one device.",
)
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
flags.DEFINE_integer("batch_size", None, "Global batch size (default: the preset's).")
flags.DEFINE_integer("grad_accum_steps", 1, "Micro-batches accumulated per optimizer step.")
flags.DEFINE_integer("num_train_steps", None, "Optimizer steps (default: the preset's).")
flags.DEFINE_integer("eval_every", None, "Validate every N steps (default: the preset's).")
flags.DEFINE_integer(
    "max_eval_batches", None, "At most N batches per evaluation (default: the preset's)."
)
flags.DEFINE_string("profile_steps", None, "Profiler trace over steps 'start,stop', e.g. 5,8.")
flags.DEFINE_enum(
    "mixed_precision",
    "none",
    ["none", "mixed_float16", "mixed_bfloat16"],
    "Keras dtype policy (a loss-scale optimizer under mixed_float16).",
)
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training and evaluation steps.")
flags.DEFINE_bool("export", True, "Export the best model at the end (--noexport to skip).")
flags.DEFINE_multi_string("set", [], "Override a zoo config key: --set key=value (JSON value).")
flags.DEFINE_multi_string(
    "data_option",
    [],
    "A task option of lra_keras.data.load: --data_option key=value, e.g. difficulty=easy "
    "(Pathfinder) or task_name=... (ListOps); a JSON value or a plain string.",
)
flags.DEFINE_integer("seed", 0, "Seed of weights, dropout and data order.")
flags.DEFINE_enum(
    "pretrain",
    "none",
    ["none", "masked", "causal"],
    "Self-pretrain the encoder on the training split's inputs first: masked (denoising) or "
    "causal (next token); then fine-tune on the labels (Amos et al. 2024).",
)
flags.DEFINE_integer(
    "pretrain_steps", 0, "Optimizer steps of the --pretrain phase (in <model_dir>/pretrain)."
)
flags.DEFINE_integer("verbose", 1, "0 quiet, 1 progress bar, 2 log lines.")


def parse_overrides(items: list[str]) -> dict:
    """`["key=value", ...]` -> dict, values parsed as JSON when they are JSON."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise app.UsageError(f"--set takes key=value (e.g. --set dropout=0.0), got {item!r}.")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides


def _exit_if_preempted(results: dict, model_dir: str) -> None:
    if results.get("preempted"):
        phase = " while pretraining" if results.get("phase") == "pretrain" else ""
        print(
            f"preempted{phase} at step {results['step']}: checkpoint saved in "
            f"{model_dir}; run the same command to resume.",
            file=sys.stderr,
        )
        sys.exit(PREEMPTED_EXIT_STATUS)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from lra_keras.training.train_task import train_task

    results = train_task(
        FLAGS.task,
        data_dir=FLAGS.data_dir,
        model_dir=FLAGS.model_dir,
        attention=FLAGS.attention,
        preset=FLAGS.preset,
        strategy=FLAGS.strategy,
        tpu=FLAGS.tpu,
        batch_size=FLAGS.batch_size,
        grad_accum_steps=FLAGS.grad_accum_steps,
        num_train_steps=FLAGS.num_train_steps,
        eval_every=FLAGS.eval_every,
        max_eval_batches=FLAGS.max_eval_batches,
        profile_steps=FLAGS.profile_steps,
        mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
        export=FLAGS.export,
        overrides=parse_overrides(FLAGS.set),
        data_options=_data_options(FLAGS.data_option),
        seed=FLAGS.seed,
        pretrain=FLAGS.pretrain,
        pretrain_steps=FLAGS.pretrain_steps,
        verbose=FLAGS.verbose,
    )
    _exit_if_preempted(results, FLAGS.model_dir)
    best, last = results["best"], results["last"]

    def metrics(entry, split):
        m = entry.get(split)
        return "-" if m is None else f"accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}"

    logging.info("Done: %s", json.dumps({"best": best, "last": last}, default=float))
    print(f"best step {best['step']}: validation {metrics(best, 'validation')}; ")
    print(f"    test {metrics(best, 'test')}")
    print(f"last step {last['step']}: test {metrics(last, 'test')}")
    print(f"results: {os.path.join(FLAGS.model_dir, 'results.json')}")
    print(f"TensorBoard: tensorboard --logdir {os.path.join(FLAGS.model_dir, 'logs')}")
    if FLAGS.export and os.path.isdir(os.path.join(FLAGS.model_dir, "export")):
        print(f"export: {os.path.join(FLAGS.model_dir, 'export')}")


def _data_options(pairs: list[str]) -> dict:
    """`--data_option key=value` flags as keyword arguments of `lra_keras.data.load`."""
    from lra_keras.errors import UserError

    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--data_option must be key=value, got {pair!r}.")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text  # difficulty=easy: a plain string
    return options


# A preempted run exits as a process ended by SIGTERM would, so that `lra-train ... &&
# lra-export ...` does not go on with an unfinished run.
PREEMPTED_EXIT_STATUS = 143


def run() -> None:
    from lra_keras.errors import run_cli

    flags.mark_flags_as_required(["task", "data_dir", "model_dir"])
    run_cli(main, "lra-train")


if __name__ == "__main__":
    run()
