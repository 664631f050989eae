"""Per-example loss and accuracy of the two kinds of model the trainer fits."""

from __future__ import annotations

import keras
import tensorflow as tf


def classification(labels, logits):
    """Sparse softmax cross-entropy and 0/1 correctness, per example (`labels` `[batch]`)."""
    logits = tf.cast(logits, tf.float32)
    per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    return per_example, tf.cast(tf.equal(predictions, labels), tf.float32)


def token_prediction(labels, logits):
    """Cross-entropy and accuracy over each example's scored tokens, averaged per example.

    `labels` `[batch, length]` holds the target token where a position is scored and a negative
    id (`lra_keras.zoo.pretraining.IGNORE_LABEL`) where it is not; `logits` `[batch, length,
    vocab]`. An example with no scored token has loss and accuracy 0.
    """
    logits = tf.cast(logits, tf.float32)
    scored = labels >= 0
    safe = tf.where(scored, labels, tf.zeros_like(labels))
    per_token = keras.losses.sparse_categorical_crossentropy(safe, logits, from_logits=True)
    weights = tf.cast(scored, tf.float32)
    count = tf.maximum(tf.reduce_sum(weights, axis=-1), 1.0)
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    correct = tf.cast(tf.equal(predictions, labels), tf.float32) * weights
    return (
        tf.reduce_sum(per_token * weights, axis=-1) / count,
        tf.reduce_sum(correct, axis=-1) / count,
    )


OBJECTIVES = {"classification": classification, "token_prediction": token_prediction}


def get(name: str):
    """The objective function called `name`; a ValueError lists the known names."""
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; objectives: {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[name]
