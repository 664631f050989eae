"""`get_config`: the plain, JSON-serialisable dict that describes one LRA task model."""

from __future__ import annotations

import copy
import inspect
import math

import keras

from lra_keras.layers import ATTENTIONS
from lra_keras.layers.encoder.lra_encoder import POSITION_MODES
from lra_keras.layers.encoder.sequence_pooling import POOLING_MODES
from lra_keras.zoo import presets

SCHEDULES = ("rsqrt", "cosine")
# The attention arguments the encoder sets from the config's own keys.
_ENCODER_SET_ATTENTION_ARGS = {
    "num_heads": "num_heads",
    "key_dim": "qkv_dim (key_dim = qkv_dim // num_heads)",
    "dropout": "attention_dropout",
    "name": None,
    "dtype": None,
}
# Constructor arguments that describe a 2D grid the sequence must fill (L = h * w).
GRID_ARGUMENTS = ("image_shape", "axis_shape")

MODEL_KEYS = (
    "vocab_size",
    "num_classes",
    "max_length",
    "image_shape",
    "embed_dim",
    "num_layers",
    "num_heads",
    "qkv_dim",
    "mlp_dim",
    "dropout",
    "attention_dropout",
    "pooling",
    "learned_positions",
    "positions",
    "mask_padding",
    "attention_kwargs",
)
TRAINING_KEYS = (
    "batch_size",
    "learning_rate",
    "weight_decay",
    "warmup_steps",
    "schedule",
    "num_train_steps",
    "grad_clip_norm",
    "eval_every",
    "num_eval_steps",
)
# Keys `**overrides` may set; `task`, `attention` and `preset` are the positional arguments.
OVERRIDE_KEYS = MODEL_KEYS + TRAINING_KEYS
CONFIG_KEYS = ("task", "attention", "preset") + OVERRIDE_KEYS


def _names(values) -> str:
    return ", ".join(sorted(values))


def _check_task(task: str) -> None:
    if task not in presets.TASKS and task != "lm":
        raise ValueError(
            f"Unknown task {task!r}. Available tasks: {_names(list(presets.TASKS) + ['lm'])}."
        )


def _check_preset(preset: str) -> None:
    if preset not in presets.PRESETS:
        raise ValueError(
            f"Unknown preset {preset!r}. Available presets: {', '.join(presets.PRESETS)}."
        )


def _check_attention(attention: str) -> type | None:
    """The variant's class; None for a segment-recurrent encoder (`transformer_xl`, ...)."""
    if attention in presets.RECURRENT_ATTENTIONS:
        return None
    if attention not in ATTENTIONS:
        known = list(ATTENTIONS) + list(presets.RECURRENT_ATTENTIONS)
        raise ValueError(
            f"Unknown attention {attention!r}. Available attention names: {_names(known)}."
        )
    return ATTENTIONS[attention]


def _fill_recurrent_needs(config: dict, overrides: dict) -> None:
    attention, kwargs = config["attention"], config["attention_kwargs"]
    unknown = sorted(set(kwargs) - set(presets.RECURRENT_KWARGS))
    if unknown:
        raise ValueError(
            f"The '{attention}' encoder has no argument(s) {unknown} (from `attention_kwargs`). "
            f"Its arguments: {', '.join(presets.RECURRENT_KWARGS)}."
        )
    for key, value in presets.recurrent_defaults(attention, config["max_length"]).items():
        kwargs.setdefault(key, value)
    if attention != "compressive":
        for key in ("compressed_memory_length", "compression_rate", "compression"):
            if key in kwargs:
                raise ValueError(f"`{key}` applies to the 'compressive' encoder only.")
    if config["task"] == "lm":
        return
    # A CLS token would sit in the first segment only; pool over every real token instead.
    if overrides.get("pooling") == "cls":
        raise ValueError(
            f"The segment-recurrent '{attention}' encoder needs pooling='mean': a CLS token "
            "would only see the first segment."
        )
    config["pooling"] = "mean"


def _lm_config(attention: str, preset: str, overrides: dict) -> dict:
    if attention not in presets.RECURRENT_ATTENTIONS:
        raise ValueError(
            f"Task 'lm' runs on the segment-recurrent encoders: attention must be one of "
            f"{_names(presets.RECURRENT_ATTENTIONS)}, got {attention!r}."
        )
    config = {"task": "lm", "attention": attention, "preset": preset, "vocab_size": 257}
    config.update(presets.LM_MODEL[preset])
    config.update(presets.LM_TRAINING)
    config.update({"dropout": 0.1, "attention_dropout": 0.0, "attention_kwargs": {}})
    valid = sorted(set(config) - {"task", "attention", "preset", "vocab_size"})
    if overrides.get("vocab_size", 257) != 257:
        raise ValueError("Task 'lm' reads bytes: `vocab_size` is fixed at 257 (byte + 1).")
    overrides = {k: v for k, v in overrides.items() if k != "vocab_size"}
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown config key(s) {unknown} for task 'lm'. Valid keys: {', '.join(valid)}."
        )
    for key, value in overrides.items():
        if key == "attention_kwargs":
            config["attention_kwargs"].update(copy.deepcopy(value or {}))
        else:
            config[key] = copy.deepcopy(value)
    _fill_recurrent_needs(config, overrides)
    return _jsonable(config)


def attention_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments a variant's constructor takes, its own and its bases' (by MRO).

    Walks up the classes while each `__init__` forwards `**kwargs`, stopping at Keras' `Layer`
    (whose `name`/`dtype` the encoder sets).
    """
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass in (keras.layers.Layer, object) or "__init__" not in vars(klass):
            continue
        forwards = False
        for name, param in inspect.signature(vars(klass)["__init__"]).parameters.items():
            if name == "self" or param.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
                continue
            params.setdefault(name, param)
        if not forwards:
            break
    return params


_GRID_REQUIRED: dict[tuple[type, str], bool] = {}


def _grid_required(cls: type, arg: str, params: dict) -> bool:
    if params[arg].default is inspect.Parameter.empty:
        return True
    # A `None` default may mean a 1D mode (image_local) or "required, checked in __init__"
    # (axial): construct one without the grid (no weights are created) to find out.
    key = (cls, arg)
    if key not in _GRID_REQUIRED:
        probe = {"num_heads": 1, "key_dim": 1}
        for name, param in params.items():
            if param.default is inspect.Parameter.empty and name not in probe:
                probe[name] = 8  # e.g. a static `max_length`
        try:
            cls(**probe)
            _GRID_REQUIRED[key] = False
        except (ValueError, TypeError):
            _GRID_REQUIRED[key] = True
    return _GRID_REQUIRED[key]


def grid_arguments(cls: type) -> dict[str, bool]:
    """{argument: required} for the variant's grid arguments (`image_shape`, `axis_shape`).

    Read from the constructor's signature: a grid argument without a default is required; one
    defaulting to None is required when the constructor refuses None.
    """
    params = attention_parameters(cls)
    return {name: _grid_required(cls, name, params) for name in GRID_ARGUMENTS if name in params}


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _preset_config(task: str, attention: str, preset: str) -> dict:
    info = presets.TASKS[task]
    lra = presets.LRA[task]
    config = {
        "vocab_size": info["vocab_size"],
        "num_classes": info["num_classes"],
        "max_length": None,
        "image_shape": None,
        "mask_padding": not info.get("grid", False),
        "positions": None,
    }
    config.update(copy.deepcopy(lra["data"]))
    if preset == "lra":
        config.update(lra["model"])
        config.update(lra["training"])
        per_model = lra["per_model"].get(attention)
        if per_model is None and "default_model" in lra:
            per_model = lra["per_model"][lra["default_model"]]
        config.update(per_model or {})
        attention_kwargs = lra["attention_kwargs"].get(attention, {})
    elif preset == "small":
        config.update(presets.SMALL_MODEL)
        config.update(lra["training"])
        attention_kwargs = lra["attention_kwargs"].get(attention, {})
    if preset != "tiny" and attention in presets.STATE_SPACE_PRESETS:
        # A state-space model with its own paper's model and training settings.
        ssm_config, attention_kwargs = presets.STATE_SPACE_PRESETS[attention](task, preset)
        config.update(ssm_config)
    if preset != "tiny" and attention == "mega":
        # Mega's own (paper) model and training settings.
        mega_config, attention_kwargs = presets.mega_preset(task, preset)
        config.update(mega_config)
    if preset == "tiny":
        config.update(presets.TINY_MODEL)
        config.update(presets.TINY_TRAINING)
        config.update(presets.TINY_LENGTHS[task])
        attention_kwargs = presets.TINY_ATTENTION.get(attention, {})
    config["attention_kwargs"] = copy.deepcopy(attention_kwargs)
    if config["image_shape"] is not None:
        config["max_length"] = math.prod(config["image_shape"])
    return config


def _apply_overrides(config: dict, task: str, overrides: dict) -> None:
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown config key(s) {unknown} for get_config/build_model. Valid keys: "
            f"{', '.join(OVERRIDE_KEYS)} (and the arguments task, attention, preset)."
        )
    extra_kwargs = overrides.get("attention_kwargs")
    if extra_kwargs is not None and not isinstance(extra_kwargs, dict):
        raise ValueError(
            f"`attention_kwargs` must be a dict of the variant's hyperparameters, got "
            f"{extra_kwargs!r}."
        )
    for key, value in overrides.items():
        if key == "attention_kwargs":
            config["attention_kwargs"].update(copy.deepcopy(value or {}))
        else:
            config[key] = copy.deepcopy(value)
    grid = presets.TASKS[task].get("grid", False)
    if not grid:
        if config["image_shape"] is not None:
            raise ValueError(
                f"`image_shape` applies to the image tasks only; task '{task}' is a 1D token "
                f"sequence (set `max_length`), got image_shape={config['image_shape']!r}."
            )
        return
    shape, length = config["image_shape"], config["max_length"]
    if "image_shape" in overrides:
        if (
            not isinstance(shape, list | tuple)
            or len(shape) != 2
            or not all(isinstance(s, int) and s > 0 for s in shape)
        ):
            raise ValueError(
                f"`image_shape` must be [height, width] of positive ints, got {shape!r}."
            )
        if "max_length" in overrides and length != math.prod(shape):
            raise ValueError(
                f"`max_length` ({length}) must equal height * width of `image_shape` "
                f"{list(shape)} on the image task '{task}'."
            )
        config["max_length"] = math.prod(shape)
    elif "max_length" in overrides:
        side = math.isqrt(length) if isinstance(length, int) and length > 0 else 0
        if side * side != length:
            raise ValueError(
                f"On the image task '{task}', `max_length` must be a square number (the "
                f"image is flattened row by row), got {length!r}; or set `image_shape`."
            )
        config["image_shape"] = [side, side]


def _fill_attention_needs(config: dict, task: str, cls: type, overrides: dict) -> None:
    attention = config["attention"]
    params = attention_parameters(cls)
    kwargs = config["attention_kwargs"]
    for key in kwargs:
        if key in _ENCODER_SET_ATTENTION_ARGS:
            where = _ENCODER_SET_ATTENTION_ARGS[key]
            raise ValueError(
                f"`attention_kwargs` must not set {key!r}: the encoder sets it"
                + (f" from the config key {where}." if where else ".")
            )
        if key not in params:
            raise ValueError(
                f"Attention '{attention}' ({cls.__name__}) has no argument {key!r} (from "
                f"`attention_kwargs`). Its arguments: "
                f"{_names(set(params) - set(_ENCODER_SET_ATTENTION_ARGS))}."
            )
    grid_task = presets.TASKS[task].get("grid", False)
    for arg, required in grid_arguments(cls).items():
        if arg in kwargs:
            continue
        if grid_task:
            kwargs[arg] = list(config["image_shape"])
        elif required:
            raise ValueError(
                f"Attention '{attention}' needs a 2D grid (`{arg}`, with length = height * "
                f"width), and task '{task}' is a 1D token sequence. Use it on the image tasks "
                f"({_names(t for t, i in presets.TASKS.items() if i.get('grid'))}), or pass "
                f"attention_kwargs={{'{arg}': [h, w]}} with h * w = max_length and "
                "pooling='mean'."
            )
    if any(kwargs.get(arg) is not None for arg in GRID_ARGUMENTS):
        # A CLS token would make the sequence one longer than the h * w grid.
        if overrides.get("pooling") == "cls":
            raise ValueError(
                f"Attention '{attention}' attends over a 2D grid, which a prepended CLS "
                "token would break (length h * w + 1): use pooling='mean' with it."
            )
        config["pooling"] = "mean"
        for arg in GRID_ARGUMENTS:
            shape = kwargs.get(arg)
            if shape is not None and math.prod(shape) != config["max_length"]:
                raise ValueError(
                    f"attention_kwargs[{arg!r}] = {list(shape)} has {math.prod(shape)} cells, "
                    f"but the sequence has max_length = {config['max_length']} tokens."
                )
    if "max_length" in params and "max_length" not in kwargs:
        # Static length tables (Linformer's projection, Synthesizer's logits) cover the
        # sequence the attention sees, CLS included.
        kwargs["max_length"] = config["max_length"] + int(config["pooling"] == "cls")


def validate_config(config: dict) -> dict:
    """Checks a config dict's keys and values; returns it (raises a ValueError when invalid)."""
    if not isinstance(config, dict):
        raise ValueError(f"A zoo config must be a dict, got {type(config).__name__}.")
    if config.get("task") == "lm":
        return _lm_config(
            config.get("attention"),
            config.get("preset"),
            {k: v for k, v in config.items() if k not in ("task", "attention", "preset")}
            | {"vocab_size": 257},
        )
    # Configs saved before `positions` existed follow their `learned_positions`.
    config.setdefault("positions", None)
    missing = [k for k in CONFIG_KEYS if k not in config]
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if missing or unknown:
        raise ValueError(
            f"Invalid zoo config: missing keys {missing}, unknown keys {unknown}. "
            f"Valid keys: {', '.join(CONFIG_KEYS)}."
        )
    _check_task(config["task"])
    _check_preset(config["preset"])
    _check_attention(config["attention"])

    def positive_int(key, allow_none=False):
        value = config[key]
        if allow_none and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"Config key `{key}` must be a positive int, got {value!r}.")

    for key in (
        "vocab_size",
        "num_classes",
        "max_length",
        "embed_dim",
        "num_layers",
        "num_heads",
        "qkv_dim",
        "mlp_dim",
        "batch_size",
        "num_train_steps",
        "eval_every",
    ):
        positive_int(key)
    positive_int("num_eval_steps", allow_none=True)
    if isinstance(config["warmup_steps"], bool) or not (
        isinstance(config["warmup_steps"], int) and config["warmup_steps"] >= 0
    ):
        raise ValueError(
            f"Config key `warmup_steps` must be an int >= 0, got {config['warmup_steps']!r}."
        )
    if config["qkv_dim"] % config["num_heads"]:
        raise ValueError(
            f"`qkv_dim` ({config['qkv_dim']}) must be a multiple of `num_heads` "
            f"({config['num_heads']}): key_dim = qkv_dim // num_heads."
        )
    for key in ("dropout", "attention_dropout"):
        if not isinstance(config[key], int | float) or not 0.0 <= config[key] < 1.0:
            raise ValueError(f"Config key `{key}` must be in [0, 1), got {config[key]!r}.")
    for key in ("learning_rate", "weight_decay"):
        if not isinstance(config[key], int | float) or config[key] < 0:
            raise ValueError(f"Config key `{key}` must be a number >= 0, got {config[key]!r}.")
    clip = config["grad_clip_norm"]
    if clip is not None and (not isinstance(clip, int | float) or clip <= 0):
        raise ValueError(f"Config key `grad_clip_norm` must be None or > 0, got {clip!r}.")
    if config["pooling"] not in POOLING_MODES:
        raise ValueError(
            f"Config key `pooling` must be one of {list(POOLING_MODES)}, got {config['pooling']!r}."
        )
    if config["schedule"] not in SCHEDULES:
        raise ValueError(
            f"Config key `schedule` must be one of {list(SCHEDULES)}, got {config['schedule']!r}."
        )
    for key in ("learned_positions", "mask_padding"):
        if not isinstance(config[key], bool):
            raise ValueError(f"Config key `{key}` must be a bool, got {config[key]!r}.")
    _resolve_positions(config)
    if not isinstance(config["attention_kwargs"], dict):
        raise ValueError(
            f"Config key `attention_kwargs` must be a dict, got {config['attention_kwargs']!r}."
        )
    return config


def _resolve_positions(config: dict) -> None:
    """Fills `positions` from `learned_positions` (the presets' key) and keeps both in step."""
    positions = config["positions"]
    if positions is None:
        positions = "learned" if config["learned_positions"] else "sinusoidal"
    if positions not in POSITION_MODES:
        raise ValueError(
            f"Config key `positions` must be one of {list(POSITION_MODES)}, got {positions!r}."
        )
    config["positions"] = positions
    config["learned_positions"] = positions == "learned"
    if positions != "rotary":
        return
    attention = config["attention"]
    if attention in presets.RECURRENT_ATTENTIONS:
        raise ValueError(
            f"positions='rotary' does not apply to the segment-recurrent '{attention}' "
            "encoder, which has relative positions of its own."
        )
    if not getattr(ATTENTIONS[attention], "supports_rotary", False):
        raise ValueError(
            f"Attention '{attention}' does not support positions='rotary' (it has no "
            "query-key dot product to rotate); use 'learned' or 'sinusoidal'."
        )


def get_config(task: str, attention: str = "full", preset: str = "lra", **overrides) -> dict:
    """The plain dict that `build_model` builds from: model, data and training settings.

    Args:
        task: one of `listops`, `text`, `retrieval`, `image`, `pathfinder` (32x32),
            `pathfinder64`, `pathx` (128x128), `pathfinder256`, or `lm` (the byte-level
            language model; its config has the model and training keys only).
        attention: any name in `lra_keras.layers.ATTENTIONS`, or `transformer_xl` /
            `compressive` for a segment-recurrent encoder (`attention_kwargs`:
            segment_length, memory_length, compressed_memory_length, compression_rate,
            compression; mean pooling).
        preset: `lra` (LRA's configs with their per-model overrides), `small` (2 layers,
            width 64, 2 heads, MLP 128) or `tiny` (tests and CPU demos; short sequences).
        **overrides: any top-level config key (`CONFIG_KEYS` less the three arguments);
            `attention_kwargs` entries are merged into the preset's.

    Returns:
        A JSON-serialisable dict with the keys `CONFIG_KEYS`. The variant's static needs are
        filled from the task: `max_length` (CLS included) for variants that take one, and
        the image grid for variants taking `image_shape`/`axis_shape` (which forces mean
        pooling, since a CLS token would break length = h * w).

    Raises:
        ValueError: an unknown or reserved task, preset or attention name, an unknown
            override key, a variant the task cannot admit, or an invalid value.
    """
    _check_task(task)
    _check_preset(preset)
    cls = _check_attention(attention)
    if task == "lm":
        return _lm_config(attention, preset, overrides)
    config = {"task": task, "attention": attention, "preset": preset}
    config.update(_preset_config(task, attention, preset))
    _apply_overrides(config, task, overrides)
    validate_config(config)
    if cls is not None and not getattr(cls, "has_attention_probabilities", True):
        # The presets' attention dropout applies to attention probabilities; this variant
        # forms none, so it gets 0 (an explicit non-zero override is refused).
        if overrides.get("attention_dropout"):
            raise ValueError(
                f"Attention '{attention}' forms no attention probabilities: "
                f"`attention_dropout` must be 0, got {overrides['attention_dropout']!r}."
            )
        config["attention_dropout"] = 0.0
    if cls is None:
        _fill_recurrent_needs(config, overrides)
    else:
        _fill_attention_needs(config, task, cls, overrides)
    config = _jsonable({k: config[k] for k in CONFIG_KEYS})
    return config
