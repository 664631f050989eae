"""Training: one custom loop on TensorFlow (`tf.distribute`) or JAX, LRA schedules, the CLI.

The names below load on first use, so that importing `lra_keras.training.cli` (the `lra-train`
entry point) imports no TensorFlow before the CLI has set up oneDNN (`lra_keras.onednn`).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "compiled_lm_step": "generation",
    "SCHEDULES": "lra_schedule",
    "LRASchedule": "lra_schedule",
    "STRATEGIES": "strategies",
    "make_strategy": "strategies",
    "Trainer": "trainer",
    "parse_profile_steps": "trainer",
    "train_task": "train_task",
}
_SUBMODULES = (
    "backends",
    "cli",
    "generation",
    "lra_schedule",
    "strategies",
    "train_task",
    "trainer",
)

__all__ = [
    "SCHEDULES",
    "STRATEGIES",
    "LRASchedule",
    "Trainer",
    "compiled_lm_step",
    "make_strategy",
    "parse_profile_steps",
    "train_task",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
