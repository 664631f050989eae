"""build_optimizer: state-space parameters at their own learning rate, without weight decay."""

import keras
import numpy as np
import tensorflow as tf

from lra_keras.layers import S4DMixing
from lra_keras.training.lra_schedule import LRASchedule
from lra_keras.training.optimizers import GroupedAdamW, build_optimizer
from lra_keras.zoo import build_model

ADAM = dict(beta_1=0.9, beta_2=0.98, epsilon=1e-9)


def tiny_model(ssm_learning_rate=0.002):
    inputs = keras.Input((5, 4))
    mixed = S4DMixing(state_dim=4, seed=1, ssm_learning_rate=ssm_learning_rate)(inputs, inputs)
    outputs = keras.layers.Dense(2, name="head")(mixed)
    return keras.Model(inputs, outputs)


def test_equals_two_adamw_on_disjoint_sets():
    schedule = LRASchedule(0.01, warmup_steps=2, schedule="cosine", steps_per_cycle=10)
    model = tiny_model()
    layer = model.layers[1]
    ssm = {id(v) for v in layer.state_space_variables}
    optimizer = build_optimizer(model, schedule, learning_rate=0.01, weight_decay=0.1, **ADAM)
    assert isinstance(optimizer, GroupedAdamW)
    variables = model.trainable_variables
    optimizer.build(variables)

    # The reference: copies of the variables, updated by two plain AdamW optimizers.
    rest = [keras.Variable(v.numpy(), name=v.name) for v in variables if id(v) not in ssm]
    state = [keras.Variable(v.numpy(), name=v.name) for v in variables if id(v) in ssm]
    scaled = LRASchedule(0.002, warmup_steps=2, schedule="cosine", steps_per_cycle=10)
    adam_rest = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.1, **ADAM)
    adam_state = keras.optimizers.AdamW(learning_rate=scaled, weight_decay=0.0, **ADAM)
    rng = np.random.default_rng(0)
    for _ in range(4):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        for adam, copies, in_group in ((adam_rest, rest, False), (adam_state, state, True)):
            aligned = _aligned(copies, variables, ssm, in_group)
            adam.apply_gradients(
                [(g, c) for g, c in zip(grads, aligned, strict=True) if c is not None]
            )
    it_rest, it_state = iter(rest), iter(state)
    for v in variables:
        want = next(it_state) if id(v) in ssm else next(it_rest)
        np.testing.assert_allclose(v.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    # The groups really differ: a single AdamW would have decayed and moved dt further.
    assert len(state) == 5 and len(rest) > 0


def _aligned(copies, variables, ssm, in_group):
    """Aligns `copies` with `variables`, None where a variable is in the other set."""
    it = iter(copies)
    return [next(it) if (id(v) in ssm) == in_group else None for v in variables]


def test_plain_adamw_without_state_space_layers():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    optimizer = build_optimizer(model, 1e-3, learning_rate=1e-3, weight_decay=0.1, **ADAM)
    assert type(optimizer) is keras.optimizers.AdamW
    # A layer that opts out (ssm_learning_rate=None) trains like any other weight.
    optimizer = build_optimizer(tiny_model(None), 1e-3, learning_rate=1e-3)
    assert type(optimizer) is keras.optimizers.AdamW


def test_under_loss_scaling_and_tf_function():
    model = tiny_model()
    optimizer = keras.optimizers.LossScaleOptimizer(
        build_optimizer(model, 0.01, learning_rate=0.01, weight_decay=0.1, **ADAM)
    )
    optimizer.build(model.trainable_variables)
    x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype("float32")
    before = [v.numpy() for v in model.trainable_variables]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = optimizer.scale_loss(tf.reduce_sum(model(x) ** 2))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    step()
    after = [v.numpy() for v in model.trainable_variables]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)), (
        "every weight moves"
    )


class _DeclaringMixer(keras.layers.Layer):
    """Not s4d: any layer that declares state-space variables and their learning rate."""

    ssm_learning_rate = 0.004

    def build(self, shape):
        self.a = self.add_weight(name="a", shape=(shape[-1],), initializer="ones")
        self.w = self.add_weight(name="w", shape=(shape[-1],), initializer="ones")

    @property
    def state_space_variables(self):
        return [self.a]

    def call(self, x):
        return x * self.a * self.w


def _decay_step(optimizer, variables):
    """One step with zero gradients from all-ones weights: Adam moves nothing, so only
    decoupled decay acts (a weight is either 1 or 1 - lr * weight_decay after it)."""
    for v in variables:
        v.assign(np.ones(v.shape, "float32"))
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients([(np.zeros(v.shape, "float32"), v) for v in variables])
    return {v.path: (b, v.numpy()) for v, b in zip(variables, before, strict=True)}


def test_any_layer_declaring_state_space_variables_gets_its_group():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, _DeclaringMixer(name="mixer")(inputs))
    optimizer = build_optimizer(model, 0.01, learning_rate=0.01, weight_decay=0.5)
    assert isinstance(optimizer, GroupedAdamW)
    moved = _decay_step(optimizer, model.trainable_variables)
    np.testing.assert_array_equal(*moved["mixer/a"])  # no decay on the state-space variable
    np.testing.assert_allclose(moved["mixer/w"][1], 1.0 - 0.01 * 0.5)
    # Its learning rate: a unit gradient moves `a` by ~lr * 0.004 / 0.01 in Adam's first step.
    optimizer = build_optimizer(model, 0.01, learning_rate=0.01)
    a = model.get_layer("mixer").a
    start = a.numpy().copy()
    optimizer.apply_gradients([(np.ones(v.shape, "float32"), v) for v in model.trainable_variables])
    np.testing.assert_allclose(start - a.numpy(), 0.004, rtol=1e-3)


def test_no_weight_decay_groups_exclude_norms_biases_and_embeddings():
    from lra_keras.zoo import build_model

    model = build_model("listops", "full", "tiny", no_weight_decay=["norm", "bias", "embedding"])
    assert model.no_weight_decay == ("norm", "bias", "embedding")
    optimizer = build_optimizer(model, 0.1, learning_rate=0.1, weight_decay=0.5)
    moved = _decay_step(optimizer, model.trainable_variables)
    kept = {p for p, (b, a) in moved.items() if np.array_equal(b, a)}
    decayed = {p for p, (b, a) in moved.items() if np.allclose(a, 1 - 0.05, atol=1e-7)}
    assert kept | decayed == set(moved)
    norms = {p for p in moved if "norm" in p.split("/")[-2]}
    biases = {p for p in moved if p.endswith("/bias")}
    assert norms and biases and {"encoder/token_embedding/embeddings"} <= kept
    assert norms | biases <= kept
    assert all(p.endswith("/kernel") for p in decayed) and decayed
    # Only some groups: biases alone.
    model = build_model("listops", "full", "tiny", no_weight_decay=["bias"])
    moved = _decay_step(
        build_optimizer(model, 0.1, learning_rate=0.1, weight_decay=0.5),
        model.trainable_variables,
    )
    kept = {p for p, (b, a) in moved.items() if np.array_equal(b, a)}
    assert kept and all(p.endswith("/bias") for p in kept)


def test_default_config_keeps_plain_adamw_and_unknown_groups_are_refused():
    from lra_keras.zoo import build_model

    model = build_model("listops", "full", "tiny")
    assert model.no_weight_decay == ()
    optimizer = build_optimizer(model, 1e-3, learning_rate=1e-3, weight_decay=0.1)
    assert type(optimizer) is keras.optimizers.AdamW
    import pytest

    with pytest.raises(ValueError, match="no_weight_decay"):
        build_optimizer(model, 1e-3, learning_rate=1e-3, no_weight_decay=["gamma"])


def test_the_optimizer_holds_no_model_variable():
    # Held as its own, a model weight would be checkpointed twice and, under model.fit on
    # JAX, donated twice to one step ("Attempt to donate the same buffer twice").
    model = build_model("pathfinder", "s5", "tiny", norm="batch", no_weight_decay=["bias"])
    optimizer = build_optimizer(model, 1e-3, learning_rate=1e-3, weight_decay=0.1)
    assert isinstance(optimizer, GroupedAdamW)
    optimizer.build(model.trainable_variables)
    model_ids = {id(v) for v in model.variables}
    assert not [v.path for v in optimizer.variables if id(v) in model_ids]
    # Adam's two slots per trainable variable, and the step count and learning rate.
    assert len(optimizer.variables) == 2 * len(model.trainable_variables) + 2
