"""Per-example loss and accuracy of the two kinds of model the trainer fits.

Written with `keras.ops`, so the TensorFlow and JAX training steps share them.
"""

from __future__ import annotations

import keras
from keras import ops


def classification(labels, logits):
    """Sparse softmax cross-entropy and 0/1 correctness, per example (`labels` `[batch]`)."""
    logits = ops.cast(logits, "float32")
    per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    predictions = ops.cast(ops.argmax(logits, axis=-1), labels.dtype)
    return per_example, ops.cast(ops.equal(predictions, labels), "float32")


def token_prediction(labels, logits):
    """Cross-entropy and accuracy over each example's scored tokens, averaged per example.

    `labels` `[batch, length]` holds the target token where a position is scored and a negative
    id (`lra_keras.zoo.pretraining.IGNORE_LABEL`) where it is not; `logits` `[batch, length,
    vocab]`. An example with no scored token has loss and accuracy 0.
    """
    logits = ops.cast(logits, "float32")
    scored = labels >= 0
    safe = ops.where(scored, labels, ops.zeros_like(labels))
    per_token = keras.losses.sparse_categorical_crossentropy(safe, logits, from_logits=True)
    weights = ops.cast(scored, "float32")
    count = ops.maximum(ops.sum(weights, axis=-1), 1.0)
    predictions = ops.cast(ops.argmax(logits, axis=-1), labels.dtype)
    correct = ops.cast(ops.equal(predictions, labels), "float32") * weights
    return (
        ops.sum(per_token * weights, axis=-1) / count,
        ops.sum(correct, axis=-1) / count,
    )


OBJECTIVES = {"classification": classification, "token_prediction": token_prediction}


def get(name: str):
    """The objective function called `name`; a ValueError lists the known names."""
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; objectives: {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[name]
