"""The backend-specific parts of training, one module per Keras backend.

`Trainer` (`lra_keras/training/trainer.py`) is one loop: evaluation cadence, best-step
selection, checkpoint order, SIGTERM handling, summaries and `results.json`. What differs per
backend is here, behind the same interface (`TrainingBackend`):

- `tensorflow`: `tf.distribute` strategies, a `tf.function` step (`train_step.py`), tf.data
  input, `tf.train.Checkpoint` files, `tf.summary` writers.
- `jax`: `keras.distribution` (data parallel over the local devices), a `jax.jit` stateless
  step (`model.stateless_call`, `optimizer.stateless_apply`), numpy input
  (`lra_keras.data.load_numpy`), `.npz` checkpoints and `best/model.weights.h5`, TensorBoard's
  own event writer. It never imports TensorFlow.

`get_backend()` picks the module of `keras.backend.backend()`.
"""

from __future__ import annotations

import importlib

BACKENDS = ("tensorflow", "jax")


def get_backend(name: str | None = None):
    """The backend module for `name` (default: Keras's current backend)."""
    if name is None:
        import keras

        name = keras.backend.backend()
    if name not in BACKENDS:
        from lra_keras.errors import UserError

        raise UserError(
            f"lra-train runs on the {' and '.join(BACKENDS)} Keras backends; KERAS_BACKEND is "
            f"{name!r}."
        )
    return importlib.import_module(f"{__name__}.{name}")


def set_random_seed(seed: int) -> None:
    """`keras.utils.set_random_seed`, without importing TensorFlow on another backend.

    Keras's function also seeds TensorFlow whenever it is installed (for tf.data), which
    imports it; a JAX run reads numpy data and must not load TensorFlow.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    if not isinstance(seed, int):
        raise ValueError(f"Expected `seed` to be an int; received {seed!r}.")
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (what keras.utils.set_random_seed seeds)
