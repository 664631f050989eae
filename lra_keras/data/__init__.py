"""tf.data pipelines for the LRA tasks, the ListOps and Pathfinder generators, TFDS builders.

Heavy modules (TensorFlow) load on first use, so `lra-data listops` / `lra-data pathfinder`
start fast and Pathfinder worker processes never import TensorFlow. `load_numpy` reads the
generated and release formats with numpy and Pillow only, where TensorFlow is not installed.
"""

from __future__ import annotations

import importlib

from lra_keras.data.tasks import SPLITS, TASKS

_LAZY = {
    "load": "lra_keras.data.pipeline",
    "load_numpy": "lra_keras.data.numpy_pipeline",
    "NumpyDataset": "lra_keras.data.numpy_pipeline",
    "user_error_from": "lra_keras.data.lazy_errors",
    "encode_bytes": "lra_keras.data.encoding",
    "encode_bytes_tf": "lra_keras.data.encoding",
    "generate_listops": "lra_keras.data.listops_generator",
    "write_listops": "lra_keras.data.listops_generator",
    "generate_pathfinder": "lra_keras.data.pathfinder_generator",
    "write_pathfinder": "lra_keras.data.pathfinder_generator",
    "pathfinder_params": "lra_keras.data.pathfinder_generator",
    "prepare": "lra_keras.data.builders",
}

__all__ = ["SPLITS", "TASKS", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lra_keras.data' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
