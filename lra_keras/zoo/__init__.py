"""The LRA task models: configs (presets) and builders.

`get_config(task, attention, preset, **overrides)` returns a plain JSON-serialisable dict (model,
data and training settings); `build_model(...)` builds the Keras model from it, and
`build_model_from_config(config)` rebuilds a model from a saved config.
"""

from lra_keras.zoo.builders import build_model, build_model_from_config
from lra_keras.zoo.byte_language_model import ByteLanguageModel
from lra_keras.zoo.config import (
    CONFIG_KEYS,
    MODEL_KEYS,
    OVERRIDE_KEYS,
    TRAINING_KEYS,
    get_config,
    validate_config,
)
from lra_keras.zoo.presets import PRESETS, RECURRENT_ATTENTIONS, TASKS

__all__ = [
    "ByteLanguageModel",
    "CONFIG_KEYS",
    "MODEL_KEYS",
    "OVERRIDE_KEYS",
    "PRESETS",
    "RECURRENT_ATTENTIONS",
    "TASKS",
    "TRAINING_KEYS",
    "build_model",
    "build_model_from_config",
    "get_config",
    "validate_config",
]
