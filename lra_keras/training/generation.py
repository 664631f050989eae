"""A compiled per-byte step for `ByteLanguageModel.generate` (TensorFlow-specific)."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def compiled_lm_step(model, jit_compile: bool = False) -> Callable:
    """A `tf.function` step `(tokens, state) -> (logits, state)` for `model.generate(step_fn=)`.

    `generate`'s default step is an eager call, which pays Python and op-dispatch cost for every
    layer at every byte; the state (memory rows and masks) keeps its shapes from one byte to the
    next, so one trace serves the whole generation.

    Args:
        model: a `lra_keras.zoo.ByteLanguageModel`.
        jit_compile: bool. Compile the step with XLA.

    Returns:
        The step function.

    Example:

    >>> from lra_keras.zoo import build_model
    >>> lm = build_model("lm", "transformer_xl", "tiny")
    >>> step = compiled_lm_step(lm)
    >>> len(lm.generate(b"def ", num_bytes=4, seed=0, step_fn=step))
    4
    """

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(tokens, state):
        return model(tokens, state=state, return_state=True, training=False)

    return step
