"""Exported SavedModels reload through every route and give the Keras model's outputs."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lra_keras.data import encode_bytes
from lra_keras.export import export_saved_model, load
from lra_keras.layers import ATTENTIONS
from lra_keras.zoo import build_model, get_config

TASKS = ["listops", "text", "retrieval", "image", "pathfinder", "pathfinder64", "pathx"]
TASKS += ["pathfinder256"]
# One per family: exact softmax, a linear (kernel) variant, a sorting-based variant.
FAMILIES = ["full", "linear", "sinkhorn"]
FAST = [("listops", "full"), ("text", "linear"), ("retrieval", "full"), ("pathfinder", "full")]
FAST += [("listops", "sinkhorn")]
SLOW = [(t, a) for t in TASKS for a in FAMILIES if (t, a) not in FAST]


def tokens_for(config, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config["vocab_size"], size=(batch, config["max_length"]), dtype="int32")
    ids[0, config["max_length"] // 2 :] = 0 if config.get("mask_padding", True) else ids[0, 0]
    if config["task"] == "retrieval":
        return {"tokens_1": ids, "tokens_2": ids[::-1].copy()}
    return {"tokens": ids}


def endpoint_input(inputs):
    return inputs if len(inputs) > 1 else next(iter(inputs.values()))


def exported(tmp_path, task, attention):
    if attention not in ATTENTIONS:
        pytest.skip(f"attention '{attention}' is not registered yet")
    config = get_config(task, attention, "tiny")
    model = build_model(task, attention, "tiny")
    path = export_saved_model(model, os.path.join(tmp_path, "export"), config=config)
    return config, model, path


def check_reloads(tmp_path, task, attention):
    config, model, path = exported(tmp_path, task, attention)
    inputs = tokens_for(config)
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    reloaded = tf.saved_model.load(path)
    np.testing.assert_allclose(
        reloaded.serve(endpoint_input(inputs))["logits"].numpy(), expected, atol=1e-5
    )
    np.testing.assert_allclose(
        reloaded(endpoint_input(inputs), training=False).numpy(), expected, atol=1e-5
    )
    signature = reloaded.signatures["serving_default"](**inputs)
    np.testing.assert_allclose(signature["logits"].numpy(), expected, atol=1e-5)
    layer = keras.layers.TFSMLayer(path, call_endpoint="serve", call_training_endpoint="train")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(endpoint_input(inputs))["logits"]), expected, atol=1e-5
    )
    archive = keras.saving.load_model(os.path.join(path, "model.keras"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(archive(inputs, training=False)), expected, atol=1e-5
    )
    assert load(path).config["task"] == task


@pytest.mark.parametrize("task,attention", FAST)
def test_reloaded_outputs_equal_keras(tmp_path, task, attention):
    check_reloads(tmp_path, task, attention)


@pytest.mark.slow
@pytest.mark.parametrize("task,attention", SLOW)
def test_reloaded_outputs_equal_keras_all_tasks(tmp_path, task, attention):
    check_reloads(tmp_path, task, attention)


@pytest.mark.parametrize("task", ["text", "retrieval"])
def test_serve_text_equals_encoding_then_calling(tmp_path, task):
    config, model, path = exported(tmp_path, task, "full")
    texts = ["a short review", "caf\xe9 \u2603 " * 40]
    raw = [b"\xff\xfe invalid utf-8 \x80", b""]
    loaded = load(path)
    for batch in (texts, raw):
        strings = [batch, batch[::-1]] if task == "retrieval" else [batch]
        ids = [encode_bytes(tf.constant(s), config["max_length"]).numpy() for s in strings]
        names = ["tokens_1", "tokens_2"] if task == "retrieval" else ["tokens"]
        expected = keras.ops.convert_to_numpy(model(dict(zip(names, ids, strict=True))))
        np.testing.assert_allclose(loaded.predict_text(*strings)["logits"], expected, atol=1e-5)


def test_fine_tuning_through_tfsm_layer_lowers_the_loss(tmp_path):
    config, model, path = exported(tmp_path, "listops", "full")
    layer = keras.layers.TFSMLayer(path, call_endpoint="serve", call_training_endpoint="train")
    tokens = keras.Input((config["max_length"],), dtype="int32")
    logits = layer(tokens)["logits"]
    tuned = keras.Model(tokens, logits)
    optimizer = keras.optimizers.Adam(3e-3)
    optimizer.build(tuned.trainable_variables)
    tuned.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = tokens_for(config, batch=8)["tokens"]
    y = np.arange(8) % config["num_classes"]
    before = tuned.evaluate(x, y, verbose=0)
    tuned.fit(x, y, epochs=10, batch_size=8, verbose=0)
    assert tuned.evaluate(x, y, verbose=0) < before


def test_hub_keras_layer_inside_a_tf_keras_model(tmp_path):
    hub = pytest.importorskip("tensorflow_hub")
    tf_keras = pytest.importorskip("tf_keras")
    config, model, path = exported(tmp_path, "listops", "full")
    tokens = tf_keras.Input((config["max_length"],), dtype=tf.int32)
    outputs = hub.KerasLayer(path, trainable=True)(tokens)
    wrapped = tf_keras.Model(tokens, outputs)
    inputs = tokens_for(config)
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    np.testing.assert_allclose(wrapped(inputs["tokens"]).numpy(), expected, atol=1e-5)
    assert len(wrapped.trainable_variables) == len(model.trainable_variables)


def test_refuses_to_overwrite_and_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    config, model, path = exported(tmp_path, "listops", "full")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_saved_model(model, path, config=config)
    target = os.path.join(tmp_path, "interrupted")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted mid-write")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        export_saved_model(model, target, config=config)
    assert not os.path.exists(target)
    assert sorted(os.listdir(tmp_path)) == ["export"]
    # An interrupted overwrite keeps the old export intact.
    with pytest.raises(KeyboardInterrupt):
        export_saved_model(model, path, config=config, overwrite=True)
    assert load(path).config["task"] == "listops"
