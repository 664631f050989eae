"""`lra-train`: train an LRA task model with any attention under any `tf.distribute` strategy.

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

import contextlib
import functools
import json
import os
import sys

from absl import app, flags, logging

from lra_keras.onednn import enable_cpu_memory_statistics

# Before anything imports TensorFlow: CPU allocator statistics (peak memory, --profile_steps
# memory profile) on any x86 CPU, unless the user set TF_ENABLE_ONEDNN_OPTS.
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
    "tf.distribute strategy; auto picks TPU > several GPUs > one device.",
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


def build_run_config() -> dict:
    """The zoo config of this run, from --task/--attention/--preset and the overrides."""
    from lra_keras.zoo import get_config

    overrides = parse_overrides(FLAGS.set)
    for key in ("batch_size", "num_train_steps", "eval_every"):
        if getattr(FLAGS, key) is not None:
            overrides[key] = getattr(FLAGS, key)
    if FLAGS.max_eval_batches is not None:
        overrides["num_eval_steps"] = FLAGS.max_eval_batches
    if FLAGS.task == "lm":
        raise app.UsageError(
            "lra-train trains the classification tasks; train the byte-level language model "
            "with `python -m benchmarks.lm_memory` or ByteLanguageModel.fit."
        )
    try:
        return get_config(FLAGS.task, FLAGS.attention, FLAGS.preset, **overrides)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def _exit_if_preempted(results: dict, phase: str) -> None:
    if results.get("preempted"):
        print(
            f"preempted{phase} at step {results['step']}: checkpoint saved in "
            f"{FLAGS.model_dir}; run the same command to resume.",
            file=sys.stderr,
        )
        sys.exit(PREEMPTED_EXIT_STATUS)


def _check_pretrain_flags(config: dict) -> None:
    if FLAGS.pretrain == "none":
        if FLAGS.pretrain_steps:
            raise app.UsageError("--pretrain_steps needs --pretrain masked or causal.")
        return
    if FLAGS.pretrain_steps <= 0:
        raise app.UsageError(
            f"--pretrain {FLAGS.pretrain} needs --pretrain_steps > 0, got {FLAGS.pretrain_steps}."
        )
    from lra_keras.zoo.pretraining import check_pretraining

    try:
        check_pretraining(config, FLAGS.pretrain)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def _pretrain(config: dict, train_data, strategy):
    """The --pretrain phase in <model_dir>/pretrain; returns the pretrained model."""
    from lra_keras.training.pretraining import pretrain_encoder

    model, results = pretrain_encoder(
        config,
        FLAGS.pretrain,
        steps=FLAGS.pretrain_steps,
        train_data=train_data,
        model_dir=FLAGS.model_dir,
        seed=FLAGS.seed,
        strategy=strategy,
        grad_accum_steps=FLAGS.grad_accum_steps,
        mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
        verbose=FLAGS.verbose,
    )
    _exit_if_preempted(results, " while pretraining")
    return model


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = build_run_config()
    _check_pretrain_flags(config)

    import keras

    from lra_keras.data import load
    from lra_keras.errors import UserError
    from lra_keras.training.strategies import make_strategy
    from lra_keras.training.trainer import Trainer
    from lra_keras.zoo import build_model_from_config
    from lra_keras.zoo.pretraining import transfer_encoder_weights

    keras.utils.set_random_seed(FLAGS.seed)
    try:
        strategy = make_strategy(FLAGS.strategy, tpu=FLAGS.tpu)
    except ValueError as error:
        # No TPU where --strategy tpu asks for one, a malformed TF_CONFIG.
        raise UserError(f"--strategy {FLAGS.strategy}: {error}") from error
    _hold_model_dir(strategy)
    task, batch = config["task"], config["batch_size"]

    data_options = _data_options(FLAGS.data_option)

    def dataset(split):
        return load(
            task,
            split,
            FLAGS.data_dir,
            batch,
            max_length=config["max_length"],
            seed=FLAGS.seed,
            **data_options,
        )

    def datasets(splits):
        try:
            return {split: dataset(split) for split in splits}
        except (OSError, ValueError) as error:
            # The data folder and the task's data options are the user's.
            raise UserError(f"{error} (--data_dir {FLAGS.data_dir}, --task {task})") from error

    train_data = datasets(["train"])["train"]
    model_fn = functools.partial(build_model_from_config, config)
    run_info = {"seed": FLAGS.seed}
    if data_options:
        run_info["data_options"] = data_options  # resuming on other data is refused
    if FLAGS.pretrain != "none":
        pretrained = _pretrain(config, train_data, strategy)
        run_info.update(pretrain=FLAGS.pretrain, pretrain_steps=FLAGS.pretrain_steps)

        def model_fn():
            # A resumed fine-tuning run restores its own checkpoint over these weights.
            model = build_model_from_config(config)
            transfer_encoder_weights(pretrained, model)
            return model

    # Validation and test are opened only now: the pretraining phase cannot read them.
    eval_data = datasets(["validation", "test"])
    trainer = Trainer(
        model_fn,
        train_data,
        model_dir=FLAGS.model_dir,
        batch_size=batch,
        num_train_steps=config["num_train_steps"],
        eval_data=eval_data,
        strategy=strategy,
        learning_rate=config["learning_rate"],
        weight_decay=config["weight_decay"],
        warmup_steps=config["warmup_steps"],
        schedule=config["schedule"],
        grad_clip_norm=config["grad_clip_norm"],
        grad_accum_steps=FLAGS.grad_accum_steps,
        eval_every=config["eval_every"],
        max_eval_batches=config["num_eval_steps"],
        mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
        profile_steps=FLAGS.profile_steps,
        verbose=FLAGS.verbose,
        config={**config, "run": run_info},
        export_fn="auto" if FLAGS.export else None,
    )
    results = trainer.train()
    _exit_if_preempted(results, "")
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


# The run folder's lock, held until the process ends (the OS releases it then, even on kill -9).
_PROCESS_LOCKS = contextlib.ExitStack()


def _hold_model_dir(strategy) -> None:
    """Refuses a --model_dir another live run holds, or one that cannot be written; the
    chief holds it from here on and removes what an export killed midway left there."""
    from lra_keras.export.saved_model import remove_unfinished_exports
    from lra_keras.training.safeguards import lock_model_dir
    from lra_keras.training.strategies import worker_info

    if worker_info(strategy)[0]:
        _PROCESS_LOCKS.enter_context(lock_model_dir(FLAGS.model_dir))
        if "://" not in FLAGS.model_dir:
            remove_unfinished_exports(os.path.join(FLAGS.model_dir, "export"))


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
