"""Model builders: the LRA classifier and the two-tower retrieval model, from a config dict."""

from __future__ import annotations

import keras

from lra_keras.layers import LRAEncoder, SequencePooling
from lra_keras.zoo import presets
from lra_keras.zoo.byte_language_model import ByteLanguageModel
from lra_keras.zoo.config import get_config, validate_config


def _tuples(value):
    # Configs hold JSON lists; layers take shapes as tuples.
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def encoder_from_config(config: dict, causal: bool = False) -> LRAEncoder:
    """The task model's `LRAEncoder` (layer name `encoder`) for a validated zoo config."""
    return LRAEncoder(
        vocab_size=config["vocab_size"],
        max_length=config["max_length"],
        embed_dim=config["embed_dim"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        key_dim=config["qkv_dim"] // config["num_heads"],
        mlp_dim=config["mlp_dim"],
        attention=config["attention"],
        attention_kwargs={k: _tuples(v) for k, v in config["attention_kwargs"].items()},
        dropout=config["dropout"],
        attention_dropout=config["attention_dropout"],
        use_cls_token=config["pooling"] == "cls",
        learned_positions=config["learned_positions"],
        positions=config.get("positions"),
        mask_padding=config["mask_padding"],
        causal=causal,
        norm=config.get("norm", "layer"),
        input_encoding=config.get("input_encoding", "embedding"),
        pixel_stats=presets.PIXEL_STATS.get(config["task"], (0.5, 0.5)),
        name="encoder",
    )


def _language_model(config: dict) -> ByteLanguageModel:
    model = ByteLanguageModel(
        block=config["attention"],
        embed_dim=config["embed_dim"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        key_dim=config["qkv_dim"] // config["num_heads"],
        mlp_dim=config["mlp_dim"],
        dropout=config["dropout"],
        attention_dropout=config["attention_dropout"],
        name=f"lra_lm_{config['attention']}",
        **config["attention_kwargs"],
    )
    model(keras.ops.ones((1, config["max_length"]), "int32"))
    return model


def _dense(units: int, name: str, activation=None, dtype=None):
    # Flax's default Dense initialisation, as LRA's classifier head.
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer="lecun_normal",
        dtype=dtype,
        name=name,
    )


def _token_input(config: dict, name: str):
    return keras.Input(shape=(config["max_length"],), dtype="int32", name=name)


def build_model_from_config(config: dict) -> keras.Model:
    """Builds the task model a `get_config` dict (or its saved JSON) describes.

    Task `lm` gives a `ByteLanguageModel` (token ids -> next-byte logits `[batch, L, 257]`).
    Classifiers take `{"tokens": int32 [batch, max_length]}`; the retrieval model takes
    `{"tokens_1", "tokens_2"}` (one shared encoder, a CLS token per tower, no cross-attention,
    features `[u, v, u * v, u - v]`). Both return float32 logits `[batch, num_classes]` (the
    last Dense computes in float32 under mixed precision).

    Args:
        config: a dict with the keys `lra_keras.zoo.CONFIG_KEYS`.

    Returns:
        An unbuilt-weights `keras.Model` (functional; its variables exist).
    """
    config = validate_config(dict(config))
    if config["task"] == "lm":
        return _language_model(config)
    encoder = encoder_from_config(config)
    pooling = SequencePooling(config["pooling"], name="pooling")
    num_classes = config["num_classes"]
    if presets.TASKS[config["task"]]["kind"] == "two_tower":
        tokens_1 = _token_input(config, "tokens_1")
        tokens_2 = _token_input(config, "tokens_2")
        u = pooling(encoder(tokens_1))
        v = pooling(encoder(tokens_2))
        x = keras.layers.Concatenate(name="interaction")(
            [
                u,
                v,
                keras.layers.Multiply(name="product")([u, v]),
                keras.layers.Subtract(name="difference")([u, v]),
            ]
        )
        x = _dense(config["mlp_dim"], "mlp", "relu")(x)
        x = _dense(config["mlp_dim"] // 2, "mlp2", "relu")(x)
        inputs = {"tokens_1": tokens_1, "tokens_2": tokens_2}
    else:
        tokens = _token_input(config, "tokens")
        x = pooling(encoder(tokens))
        x = _dense(config["mlp_dim"], "mlp", "relu")(x)
        inputs = {"tokens": tokens}
    logits = _dense(num_classes, "logits", dtype="float32")(x)
    name = f"lra_{config['task']}_{config['attention']}"
    model = keras.Model(inputs=inputs, outputs=logits, name=name)
    # Read by `lra_keras.training.optimizers.build_optimizer` (a tuple: Keras does not track it).
    model.no_weight_decay = tuple(config["no_weight_decay"])
    return model


def build_model(
    task: str, attention: str = "full", preset: str = "lra", **overrides
) -> keras.Model:
    """Builds an LRA task model: `build_model_from_config(get_config(task, ...))`.

    Args:
        task: one of `listops`, `text`, `retrieval`, `image`, `pathfinder`, `pathfinder64`,
            `pathx`, `pathfinder256`.
        attention: any registered attention name (`lra_keras.layers.ATTENTIONS`).
        preset: `lra`, `small` or `tiny`.
        **overrides: top-level config keys (see `get_config`).

    Returns:
        A `keras.Model` from `{"tokens": ...}` (retrieval: `{"tokens_1", "tokens_2"}`) to
        float32 logits `[batch, num_classes]`.

    Example:

    >>> import numpy as np
    >>> from lra_keras.zoo import build_model
    >>> model = build_model("listops", "full", preset="tiny")
    >>> tuple(model({"tokens": np.ones((2, 128), "int32")}).shape)
    (2, 10)
    """
    return build_model_from_config(get_config(task, attention, preset, **overrides))
