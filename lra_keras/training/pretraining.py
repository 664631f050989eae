"""Self-pretraining on the task's own training inputs, then fine-tuning (Amos et al. 2024)."""

from __future__ import annotations

import os

import keras

from lra_keras.zoo.pretraining import build_pretraining_model, check_pretraining


def mask_token(task: str) -> int | None:
    """The [MASK] id of `task` (`pretraining_data.MASK_TOKENS`), without TensorFlow if it can."""
    if task != "listops":
        return None
    try:
        from lra_keras.data.release_files import LISTOPS_OOV_ID  # no TensorFlow
    except ImportError:
        from lra_keras.data.encoding import LISTOPS_OOV_ID
    return LISTOPS_OOV_ID


# The pretraining phase's run folder inside the task run's `model_dir`.
PRETRAIN_DIR = "pretrain"


def pretrain_encoder(
    config: dict,
    objective: str,
    *,
    steps: int,
    train_data,
    model_dir: str,
    seed: int = 0,
    **trainer_kwargs,
) -> tuple[keras.Model, dict]:
    """Trains `build_pretraining_model(config, objective)` on the TRAINING inputs only.

    The phase is a run of its own in `model_dir/pretrain` (checkpoints, TensorBoard logs,
    `results.json`), so it resumes like any run; a finished phase is restored, not retrained.
    It never sees labels, validation or test data: `train_data` is the training split and no
    evaluation data is given.

    Args:
        config: the task's zoo config (its optimiser settings are used, the warm-up capped at
            `steps`).
        objective: `masked` (denoising) or `causal` (next token).
        steps: optimizer steps of the phase.
        train_data: the task's training dataset of `(features, label)` batches (tf.data on
            TensorFlow, `lra_keras.data.load_numpy`'s on JAX).
        model_dir: the task run's folder.
        seed: seed of the corruption stream.
        **trainer_kwargs: further `Trainer` arguments (strategy, mixed_precision, ...).

    Returns:
        `(pretraining model, the phase's results)`; copy its encoder into the task model with
        `lra_keras.zoo.pretraining.transfer_encoder_weights`.
    """
    from lra_keras.training.trainer import Trainer

    check_pretraining(config, objective)
    if keras.backend.backend() == "tensorflow":
        from lra_keras.training.pretraining_data import pretraining_dataset
    else:
        from lra_keras.training.pretraining_numpy import PretrainingBatches as pretraining_dataset
    data = pretraining_dataset(
        train_data,
        objective,
        vocab_size=config["vocab_size"],
        mask_padding=config["mask_padding"],
        seed=seed,
        mask_token=mask_token(config["task"]) if objective == "masked" else None,
    )
    trainer = Trainer(
        lambda: build_pretraining_model(config, objective),
        data,
        model_dir=os.path.join(model_dir, PRETRAIN_DIR),
        batch_size=config["batch_size"],
        num_train_steps=steps,
        eval_data=None,
        learning_rate=config["learning_rate"],
        weight_decay=config["weight_decay"],
        warmup_steps=min(config["warmup_steps"], steps),
        schedule=config["schedule"],
        grad_clip_norm=config["grad_clip_norm"],
        config={**config, "run": {"phase": "pretrain", "objective": objective, "seed": seed}},
        export_fn=None,
        objective="token_prediction",
        **trainer_kwargs,
    )
    return trainer.model, trainer.train()
