"""`train_task`: what `lra-train` does, as a Python function, on TensorFlow or JAX.

    from lra_keras.training import train_task
    results = train_task("listops", data_dir="data/listops", model_dir="runs/listops",
                         attention="local", preset="tiny", num_train_steps=500)

The backend is Keras's (`KERAS_BACKEND`). Data comes from `lra_keras.data.load` (tf.data) on
TensorFlow and from `lra_keras.data.load_numpy` on JAX, which imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import os

from lra_keras.errors import UserError

PRETRAIN_CHOICES = ("none", "masked", "causal")


def build_run_config(
    task: str,
    attention: str = "full",
    preset: str = "lra",
    *,
    overrides: dict | None = None,
    batch_size: int | None = None,
    num_train_steps: int | None = None,
    eval_every: int | None = None,
    max_eval_batches: int | None = None,
) -> dict:
    """The zoo config of a run (`lra_keras.zoo.get_config`) with the CLI's overrides."""
    from lra_keras.zoo import get_config

    overrides = dict(overrides or {})
    for key, value in (
        ("batch_size", batch_size),
        ("num_train_steps", num_train_steps),
        ("eval_every", eval_every),
        ("num_eval_steps", max_eval_batches),
    ):
        if value is not None:
            overrides[key] = value
    if task == "lm":
        raise UserError(
            "lra-train trains the classification tasks; train the byte-level language model "
            "with `python -m benchmarks.lm_memory` or ByteLanguageModel.fit."
        )
    try:
        return get_config(task, attention, preset, **overrides)
    except ValueError as error:
        raise UserError(str(error)) from error


def _check_pretrain(config: dict, pretrain: str, pretrain_steps: int) -> None:
    if pretrain not in PRETRAIN_CHOICES:
        raise UserError(f"--pretrain must be one of {PRETRAIN_CHOICES}, got {pretrain!r}.")
    if pretrain == "none":
        if pretrain_steps:
            raise UserError("--pretrain_steps needs --pretrain masked or causal.")
        return
    if pretrain_steps <= 0:
        raise UserError(f"--pretrain {pretrain} needs --pretrain_steps > 0, got {pretrain_steps}.")
    from lra_keras.zoo.pretraining import check_pretraining

    try:
        check_pretraining(config, pretrain)
    except ValueError as error:
        raise UserError(str(error)) from error


def train_task(
    task: str,
    *,
    data_dir: str,
    model_dir: str,
    attention: str = "full",
    preset: str = "lra",
    strategy: str = "auto",
    tpu: str | None = None,
    batch_size: int | None = None,
    grad_accum_steps: int = 1,
    num_train_steps: int | None = None,
    eval_every: int | None = None,
    max_eval_batches: int | None = None,
    profile_steps: str | None = None,
    mixed_precision: str = "none",
    jit_compile: bool = False,
    export: bool = True,
    overrides: dict | None = None,
    data_options: dict | None = None,
    seed: int = 0,
    pretrain: str = "none",
    pretrain_steps: int = 0,
    verbose: int = 1,
) -> dict:
    """Trains (or resumes) one LRA run in `model_dir`, as `lra-train` does; returns its results.

    The arguments are `lra-train`'s flags (`overrides` is `--set key=value`, `data_options`
    `--data_option key=value`, `export=False` is `--noexport`). The run folder and
    `results.json` are the same on TensorFlow and JAX (`config.json` records the backend).

    Returns:
        The results written to `model_dir/results.json`, or `{"preempted": True, "step": N}`
        (with `"phase": "pretrain"` during `--pretrain`) when a SIGTERM stopped the run after
        a checkpoint: call again to resume.

    Raises:
        UserError: a bad option, a missing data set, a run folder holding another
            configuration or another backend's run.
    """
    import keras

    from lra_keras.training.backends import set_random_seed

    config = build_run_config(
        task,
        attention,
        preset,
        overrides=overrides,
        batch_size=batch_size,
        num_train_steps=num_train_steps,
        eval_every=eval_every,
        max_eval_batches=max_eval_batches,
    )
    _check_pretrain(config, pretrain, pretrain_steps)
    backend = keras.backend.backend()
    set_random_seed(seed)
    if backend == "tensorflow":
        from lra_keras.data import load
        from lra_keras.training.strategies import make_strategy

        try:
            strategy = make_strategy(strategy, tpu=tpu)
        except ValueError as error:
            # No TPU where --strategy tpu asks for one, a malformed TF_CONFIG.
            raise UserError(f"--strategy {strategy}: {error}") from error
    else:
        try:
            from lra_keras.data import load_numpy as load
        except ImportError as error:
            raise UserError(
                f"Training on {backend} reads numpy data (lra_keras.data.load_numpy), which "
                "this installation lacks; train with KERAS_BACKEND=tensorflow."
            ) from error
    with _hold_model_dir(model_dir, strategy, backend):
        return _train(
            config,
            data_dir=data_dir,
            model_dir=model_dir,
            load=load,
            strategy=strategy,
            grad_accum_steps=grad_accum_steps,
            profile_steps=profile_steps,
            mixed_precision=mixed_precision,
            jit_compile=jit_compile,
            export=export,
            data_options=data_options,
            seed=seed,
            pretrain=pretrain,
            pretrain_steps=pretrain_steps,
            verbose=verbose,
        )


@contextlib.contextmanager
def _hold_model_dir(model_dir: str, strategy, backend: str):
    """Refuses a --model_dir another live run holds, or one that cannot be written; the
    chief holds it through both phases and removes what an export killed midway left there."""
    from lra_keras.training.safeguards import lock_model_dir

    if backend == "tensorflow":
        from lra_keras.training.strategies import worker_info

        chief = worker_info(strategy)[0]
    else:
        import jax

        chief = jax.process_index() == 0
    if not chief:
        yield
        return
    with lock_model_dir(model_dir):
        if backend == "tensorflow" and "://" not in model_dir:
            # On JAX, lra-export (a TensorFlow process) does this before it exports.
            from lra_keras.export.saved_model import remove_unfinished_exports

            remove_unfinished_exports(os.path.join(model_dir, "export"))
        yield


def _train(
    config,
    *,
    data_dir,
    model_dir,
    load,
    strategy,
    grad_accum_steps,
    profile_steps,
    mixed_precision,
    jit_compile,
    export,
    data_options,
    seed,
    pretrain,
    pretrain_steps,
    verbose,
) -> dict:
    from lra_keras.training.trainer import Trainer
    from lra_keras.zoo import build_model_from_config
    from lra_keras.zoo.pretraining import transfer_encoder_weights

    task, batch = config["task"], config["batch_size"]
    data_options = dict(data_options or {})

    def datasets(splits):
        try:
            return {
                split: load(
                    task,
                    split,
                    data_dir,
                    batch,
                    max_length=config["max_length"],
                    seed=seed,
                    **data_options,
                )
                for split in splits
            }
        except (OSError, ValueError) as error:
            # The data folder and the task's data options are the user's.
            raise UserError(f"{error} (--data_dir {data_dir}, --task {task})") from error

    train_data = datasets(["train"])["train"]
    model_fn = functools.partial(build_model_from_config, config)
    run_info = {"seed": seed}
    if data_options:
        run_info["data_options"] = data_options  # resuming on other data is refused
    if pretrain != "none":
        from lra_keras.training.pretraining import pretrain_encoder

        pretrained, results = pretrain_encoder(
            config,
            pretrain,
            steps=pretrain_steps,
            train_data=train_data,
            model_dir=model_dir,
            seed=seed,
            strategy=strategy,
            grad_accum_steps=grad_accum_steps,
            mixed_precision=mixed_precision,
            jit_compile=jit_compile,
            verbose=verbose,
        )
        if results.get("preempted"):
            return {**results, "phase": "pretrain"}
        run_info.update(pretrain=pretrain, pretrain_steps=pretrain_steps)

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
        model_dir=model_dir,
        batch_size=batch,
        num_train_steps=config["num_train_steps"],
        eval_data=eval_data,
        strategy=strategy,
        learning_rate=config["learning_rate"],
        weight_decay=config["weight_decay"],
        warmup_steps=config["warmup_steps"],
        schedule=config["schedule"],
        grad_clip_norm=config["grad_clip_norm"],
        grad_accum_steps=grad_accum_steps,
        eval_every=config["eval_every"],
        max_eval_batches=config["num_eval_steps"],
        mixed_precision=mixed_precision,
        jit_compile=jit_compile,
        profile_steps=profile_steps,
        verbose=verbose,
        config={**config, "run": run_info},
        export_fn="auto" if export else None,
    )
    return trainer.train()
