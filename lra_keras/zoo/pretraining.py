"""Self-pretraining models: the task's own encoder with a per-token head (Amos et al. 2024)."""

from __future__ import annotations

import keras
from keras import ops

from lra_keras.layers import ATTENTIONS
from lra_keras.zoo import presets
from lra_keras.zoo.builders import encoder_from_config
from lra_keras.zoo.config import validate_config

# `masked`: BERT-style denoising of the input tokens (predict the original token at corrupted
# positions); `causal`: next-token prediction with causal attention.
PRETRAIN_OBJECTIVES = ("masked", "causal")
# Targets at positions that carry no loss.
IGNORE_LABEL = -1


def check_pretraining(config: dict, objective: str) -> None:
    """Raises a ValueError naming what is wrong if `config`'s model cannot pretrain so."""
    if objective not in PRETRAIN_OBJECTIVES:
        raise ValueError(
            f"`pretrain` must be one of {list(PRETRAIN_OBJECTIVES)}, got {objective!r}."
        )
    if config["task"] == "lm":
        raise ValueError("Task 'lm' is a language model already; it has no pretraining phase.")
    attention = config["attention"]
    if objective == "causal":
        cls = ATTENTIONS.get(attention)
        if cls is None or not cls.supports_causal:
            raise ValueError(
                f"pretrain='causal' needs a causal-capable attention; '{attention}' has no "
                "causal form. Use pretrain='masked'."
            )


def build_pretraining_model(config: dict, objective: str) -> keras.Model:
    """The encoder of `build_model_from_config(config)` with a per-token vocabulary head.

    The encoder is built exactly as the task model's (same layer name, `encoder`, and the same
    weights), so `transfer_encoder_weights` moves it into the task model after pretraining.
    With `objective="causal"` its attention is causal (the weights do not change).

    Args:
        config: a zoo config dict (`lra_keras.zoo.get_config`).
        objective: `masked` or `causal`.

    Returns:
        A `keras.Model` from `{"tokens": int32 [batch, max_length]}` to float32 logits
        `[batch, max_length, vocab_size]` (the CLS position, if any, is dropped). The head is
        the Dense layer `pretrain_head`; it is not part of the task model.
    """
    config = validate_config(dict(config))
    check_pretraining(config, objective)
    encoder = encoder_from_config(config, causal=objective == "causal")
    tokens = keras.Input(shape=(config["max_length"],), dtype="int32", name="tokens")
    x = encoder(tokens)
    if config["pooling"] == "cls":
        x = x[:, 1:]
    logits = keras.layers.Dense(config["vocab_size"], dtype="float32", name="pretrain_head")(x)
    name = f"lra_{config['task']}_{config['attention']}_pretrain_{objective}"
    return keras.Model(inputs={"tokens": tokens}, outputs=logits, name=name)


def transfer_encoder_weights(source: keras.Model, target: keras.Model) -> None:
    """Copies the `encoder` layer's weights from `source` into `target` (same config)."""
    src, dst = source.get_layer("encoder"), target.get_layer("encoder")
    shapes = [tuple(w.shape) for w in src.weights], [tuple(w.shape) for w in dst.weights]
    if shapes[0] != shapes[1]:
        raise ValueError(
            "transfer_encoder_weights: the two encoders differ (built from different configs): "
            f"{len(shapes[0])} weights {shapes[0][:3]}... vs {len(shapes[1])} {shapes[1][:3]}..."
        )
    for mine, theirs in zip(dst.weights, src.weights, strict=True):
        mine.assign(ops.convert_to_tensor(theirs))


def pretraining_tasks() -> tuple[str, ...]:
    """The tasks whose inputs can be pretrained on (every classification task)."""
    return tuple(presets.TASKS)
