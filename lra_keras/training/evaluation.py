"""Evaluation over whole splits under a `tf.distribute` strategy (the TensorFlow backend)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lra_keras.training import objectives


class Evaluator:
    """Loss and accuracy of `model` over evaluation splits, under `strategy`.

    Every worker evaluates the whole split on its local replicas (no collectives, so workers
    cannot hang on uneven shards); padding examples have weight 0.

    Args:
        model: the classifier (float32 logits).
        strategy: the `tf.distribute.Strategy`.
        batching: the run's `Batching` (prepares and distributes the batches).
        eval_data: dict split -> `tf.data.Dataset` of `(features, labels)` batches.
        max_eval_batches: int or None. At most this many batches per split.
        jit_compile: bool. XLA-compile the forward pass.
        objective: the name of the loss and accuracy (`lra_keras.training.objectives`).
    """

    def __init__(
        self,
        model,
        strategy,
        batching,
        eval_data,
        max_eval_batches,
        jit_compile,
        objective="classification",
    ):
        self.model = model
        self.objective = objectives.get(objective)
        self.strategy = strategy
        self.batching = batching
        self.data = {k: batching.prepare_eval(v, max_eval_batches) for k, v in eval_data.items()}
        self._forward = tf.function(self._replica_forward, jit_compile=jit_compile)
        self._step_fn = tf.function(self._step)

    def __contains__(self, split: str) -> bool:
        return split in self.data

    def _replica_forward(self, features, labels, weights):
        per_example, correct = self.objective(labels, self.model(features, training=False))
        return (
            tf.reduce_sum(per_example * weights),
            tf.reduce_sum(correct * weights),
            tf.reduce_sum(weights),
        )

    def _step(self, batch):
        results = self.strategy.run(self._forward, args=batch)
        # Local replicas only: every worker evaluates the whole split, no collectives.
        return [tf.add_n(self.strategy.experimental_local_results(r)) for r in results]

    def evaluate(self, split: str) -> dict:
        """Loss and accuracy over `split` (at most `max_eval_batches` batches)."""
        if split not in self.data:
            raise ValueError(f"No evaluation data for split {split!r}; have {sorted(self.data)}.")
        totals = np.zeros(3, np.float64)
        for batch in self.data[split]:
            totals += np.array([float(x) for x in self._step_fn(self.batching.distribute(batch))])
        if totals[2] == 0:
            raise ValueError(f"The {split!r} split is empty.")
        return {
            "loss": totals[0] / totals[2],
            "accuracy": totals[1] / totals[2],
            "examples": int(totals[2]),
        }
