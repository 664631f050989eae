"""The optimizer step under a `tf.distribute` strategy (the TensorFlow backend): data slicing,
gradients, the update."""

from __future__ import annotations

import keras
import tensorflow as tf

from lra_keras.training import objectives
from lra_keras.training.optimizers import make_optimizer  # noqa: F401 (its former home)


class Batching:
    """How the global batch is cut: micro-batches per step, replicas, workers."""

    def __init__(self, strategy, num_workers, worker_index, batch_size, grad_accum_steps):
        self.strategy = strategy
        self.num_workers = num_workers
        self.worker_index = worker_index
        self.num_replicas = strategy.num_replicas_in_sync
        self.num_local_replicas = max(1, self.num_replicas // num_workers)
        self.micro_batch_size = batch_size // grad_accum_steps
        self.per_replica_batch = self.micro_batch_size // self.num_replicas
        self.local_batch = self.per_replica_batch * self.num_local_replicas

    def prepare_train(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        ds = ds.unbatch()
        if self.num_workers > 1:
            ds = ds.shard(self.num_workers, self.worker_index)
        per_worker = self.micro_batch_size // self.num_workers
        return ds.repeat().batch(per_worker, drop_remainder=True).prefetch(2)

    def prepare_eval(self, ds: tf.data.Dataset, max_batches: int | None) -> tf.data.Dataset:
        """Full local batches; the padding copies have weight 0 (static shapes for XLA, TPU)."""
        ds = ds.unbatch()
        if max_batches:
            ds = ds.take(max_batches * self.local_batch)
        real = ds.map(lambda f, y: (f, y, tf.constant(1.0)))
        filler = real.take(1).map(lambda f, y, w: (f, y, tf.constant(0.0)))
        filler = filler.repeat(self.local_batch - 1)
        return real.concatenate(filler).batch(self.local_batch, drop_remainder=True).prefetch(1)

    def distribute(self, batch):
        if self.num_replicas == 1:
            return batch
        per, local = self.per_replica_batch, self.num_local_replicas

        def value_fn(ctx):
            i = ctx.replica_id_in_sync_group % local
            return tf.nest.map_structure(lambda t: t[i * per : (i + 1) * per], batch)

        return self.strategy.experimental_distribute_values_from_function(value_fn)


class TrainStep:
    """One optimizer step: `grad_accum_steps` micro-batches, all replicas, one update.

    Calling it with a tuple of distributed micro-batches returns the global batch's summed
    loss, model loss and accuracy.
    """

    def __init__(
        self,
        model,
        optimizer,
        strategy,
        *,
        batch_size,
        grad_accum_steps,
        grad_clip_norm,
        jit_compile,
        objective="classification",
    ):
        self.model = model
        self.objective = objectives.get(objective)
        self.optimizer = optimizer
        self.strategy = strategy
        self.batch_size = batch_size
        self.grad_accum_steps = grad_accum_steps
        self.grad_clip_norm = grad_clip_norm
        self.num_replicas = strategy.num_replicas_in_sync
        self._grad_fn = tf.function(self._compute_grads, jit_compile=jit_compile)
        self._step_fn = tf.function(self._train_step)

    def __call__(self, micro_batches):
        return self._step_fn(micro_batches)

    def _loss_scaled(self) -> bool:
        return isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

    def _compute_grads(self, features, labels):
        with tf.GradientTape() as tape:
            logits = self.model(features, training=True)
            per_example, correct = self.objective(labels, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.batch_size)
            if self.model.losses:
                extra = tf.add_n([tf.cast(x, tf.float32) for x in self.model.losses])
                extra = tf.nn.scale_regularization_loss(extra) / self.grad_accum_steps
            else:
                extra = tf.constant(0.0)
            total = loss + extra
            if self._loss_scaled():
                total = self.optimizer.scale_loss(total)
        grads = tape.gradient(total, self.model.trainable_variables)
        return loss, extra, tf.reduce_sum(correct), grads

    def _finalize_grads(self, grads):
        if self.grad_clip_norm is None:
            return grads
        if self.num_replicas > 1:
            ctx = tf.distribute.get_replica_context()
            present = [g for g in grads if g is not None]
            reduced = iter(ctx.all_reduce(tf.distribute.ReduceOp.SUM, present))
            grads = [None if g is None else next(reduced) for g in grads]
        scale = None
        if self._loss_scaled():
            scale = tf.cast(self.optimizer.dynamic_scale, tf.float32)
            grads = [None if g is None else g / tf.cast(scale, g.dtype) for g in grads]
        present = [g for g in grads if g is not None]
        clipped = iter(tf.clip_by_global_norm(present, self.grad_clip_norm)[0])
        grads = [None if g is None else next(clipped) for g in grads]
        if scale is not None:
            grads = [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]
        if self.num_replicas > 1:
            # The optimizer sums the replicas' gradients again; these are already the sum.
            grads = [None if g is None else g / self.num_replicas for g in grads]
        return grads

    def _replica_step(self, micro_batches):
        total_grads = None
        loss = extra = correct = 0.0
        for features, labels in micro_batches:
            l_i, e_i, c_i, grads = self._grad_fn(features, labels)
            loss, extra, correct = loss + l_i, extra + e_i, correct + c_i
            # Embedding gradients come as IndexedSlices: they do not add, and the optimizer
            # would update them sparsely (moments of absent rows left alone), so one step
            # would differ with and without accumulation. LRA vocabularies are small.
            grads = [None if g is None else tf.convert_to_tensor(g) for g in grads]
            if total_grads is None:
                total_grads = list(grads)
            else:
                total_grads = [
                    g if a is None else (a if g is None else a + g)
                    for a, g in zip(total_grads, grads, strict=True)
                ]
        grads = self._finalize_grads(total_grads)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return loss, extra, correct

    def _train_step(self, micro_batches):
        results = self.strategy.run(self._replica_step, args=(micro_batches,))
        loss, extra, correct = (
            self.strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results
        )
        return {"loss": loss, "model_loss": extra, "accuracy": correct / self.batch_size}
