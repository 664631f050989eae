"""The zoo: configs, presets and task models for every registered attention."""

from __future__ import annotations

import inspect
import json
import math

import keras
import numpy as np
import pytest

from lra_keras.layers import ATTENTIONS, FullAttention, LRAEncoder
from lra_keras.zoo import (
    CONFIG_KEYS,
    OVERRIDE_KEYS,
    TASKS,
    build_model,
    build_model_from_config,
    get_config,
)
from tests.backends.backend_testing import loss_and_grads
from tests.layers.reference import lengths_mask

NAMES = sorted(ATTENTIONS)
GRID_TASKS = sorted(t for t, info in TASKS.items() if info.get("grid"))
# Every registered attention runs on these three (a padded 1D sequence with CLS, the two-tower
# model, an image grid without padding); the other tasks run `full` and the variants with
# static needs (a length table or a grid), when registered.
REPRESENTATIVE_TASKS = ("listops", "retrieval", "image")
STATIC_NEEDS = ("full", "linformer", "synthesizer", "axial", "image_local")
SWEEP = [(t, n) for t in REPRESENTATIVE_TASKS for n in NAMES] + [
    (t, n)
    for t in sorted(set(TASKS) - set(REPRESENTATIVE_TASKS))
    for n in STATIC_NEEDS
    if n in ATTENTIONS
]
if keras.backend.backend() == "jax":
    # `make test`'s JAX pass, which also runs the layer contract over every name: every
    # attention once in a task model (ListOps), `full` in every task's model, and the variants
    # with static needs in one grid task's too. Which static need a task's config asks for is
    # backend-free logic that the TensorFlow pass checks over the whole sweep; on JAX each
    # pair costs an XLA compile of the whole model (4-8 s on a core).
    SWEEP = [
        (t, n)
        for t, n in SWEEP
        if t == "listops" or n == "full" or (t == "pathfinder" and n in STATIC_NEEDS)
    ]
# `full` on Path-256 (65,536 tokens) is quadratic: 40 s on a core, so slow.
SWEEP_PARAMS = [
    pytest.param(t, n, marks=pytest.mark.slow) if (t, n) == ("pathfinder256", "full") else (t, n)
    for t, n in SWEEP
]


def has_grid_argument(cls) -> bool:
    params = inspect.signature(cls).parameters
    return "image_shape" in params or "axis_shape" in params


def tokens_for(config, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    length = config["max_length"]
    low = 1 if config["mask_padding"] else 0

    def one():
        ids = rng.integers(low, config["vocab_size"], size=(batch, length))
        if config["mask_padding"]:
            ids = np.where(lengths_mask([length, length // 2 + 1][:batch], length), ids, 0)
        return ids.astype("int32")

    if TASKS[config["task"]]["kind"] == "two_tower":
        return {"tokens_1": one(), "tokens_2": one()}
    return {"tokens": one()}


def train_step(model, inputs, num_classes):
    labels = np.arange(len(next(iter(inputs.values())))) % num_classes
    names = sorted(inputs)

    def loss_fn(*tokens):
        logits = model(dict(zip(names, tokens, strict=True)), training=True)
        loss = keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
        return loss, (loss, logits)

    variables = model.trainable_variables
    (loss, logits), grads = _aux_and_grads(loss_fn, [inputs[n] for n in names], variables)
    grads = grads[len(names) :]
    return logits, loss, dict(zip([v.path for v in variables], grads, strict=True))


def _aux_and_grads(fn, inputs, variables):
    # Token ids are not differentiable: close over them and differentiate the variables only.
    def closed():
        return fn(*inputs)

    aux, grads = loss_and_grads(lambda: closed(), [], variables)
    return aux, [None] * len(inputs) + grads


# ---------------------------------------------------------------------- fake variants (static)


class _FakeAxial(FullAttention):
    """Full attention that insists on a required `axis_shape` grid (like `axial`)."""

    attention_name = "fake_axial"
    needs_static_length = True

    def __init__(self, num_heads, key_dim, axis_shape, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.axis_shape = tuple(axis_shape)

    def _build_variant(self, query_shape, value_shape):
        if query_shape[1] != math.prod(self.axis_shape):
            raise ValueError(f"length {query_shape[1]} != prod{self.axis_shape}")


class _FakeImageLocal(FullAttention):
    """Optional `image_shape` (None = 1D mode), like `image_local`."""

    attention_name = "fake_image_local"

    def __init__(self, num_heads, key_dim, image_shape=None, block_length=8, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.image_shape = image_shape
        self.block_length = block_length


class _FakeStatic(FullAttention):
    """A length table fixed at build, like `linformer`."""

    attention_name = "fake_static"
    needs_static_length = True

    def __init__(self, num_heads, key_dim, max_length, projection_dim=4, **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.max_length = max_length
        self.projection_dim = projection_dim

    def _build_variant(self, query_shape, value_shape):
        if query_shape[1] != self.max_length:
            raise ValueError(f"length {query_shape[1]} != max_length {self.max_length}")


@pytest.fixture
def fakes(monkeypatch):
    for cls in (_FakeAxial, _FakeImageLocal, _FakeStatic):
        monkeypatch.setitem(ATTENTIONS, cls.attention_name, cls)


# ------------------------------------------------------------------------------- the sweep


@pytest.mark.parametrize("task,name", SWEEP_PARAMS)
def test_tiny_forward_backward(task, name):
    # The every-variant image sweep uses a 16x16 grid to stay fast; other tasks run as preset.
    overrides = {"image_shape": [16, 16]} if task == "image" else {}
    if not TASKS[task].get("grid") and has_grid_argument(ATTENTIONS[name]):
        # A grid variant on a 1D task: either the zoo refuses it clearly, or the variant has
        # a 1D mode and must then build and run below.
        try:
            config = get_config(task, name, "tiny", **overrides)
        except ValueError as error:
            assert f"'{name}' needs a 2D grid" in str(error) and f"'{task}'" in str(error)
            return
    else:
        config = get_config(task, name, "tiny", **overrides)
    model = build_model_from_config(config)
    if any(config["attention_kwargs"].get(a) is not None for a in ("image_shape", "axis_shape")):
        # A grid variant fills the h * w grid: no CLS token, mean pooling.
        assert config["pooling"] == "mean" and not model.get_layer("encoder").use_cls_token
    logits, loss, grads = train_step(model, tokens_for(config), config["num_classes"])
    assert logits.shape == (2, config["num_classes"])
    assert logits.dtype == "float32"
    assert np.isfinite(float(loss))
    for path in ("encoder/token_embedding/embeddings", "logits/kernel"):
        assert grads[path] is not None, path
    for path, grad in grads.items():
        if grad is not None:
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(grad))), path


def test_sweep_covers_every_attention():
    assert {n for _, n in SWEEP} == set(NAMES)
    assert {t for t, _ in SWEEP} == set(TASKS)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_tiny_preset_runs_as_is(task):
    config = get_config(task, "full", "tiny")
    model = build_model(task, "full", "tiny")
    logits, loss, _ = train_step(model, tokens_for(config), config["num_classes"])
    assert logits.shape == (2, TASKS[task]["num_classes"])
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("preset", ["lra", "small", "tiny"])
def test_every_registered_attention_configures_on_every_task(preset):
    for task in TASKS:
        for name in NAMES:
            try:
                config = get_config(task, name, preset)
            except ValueError as error:
                assert "needs a 2D grid" in str(error), str(error)
                assert not TASKS[task].get("grid") and has_grid_argument(ATTENTIONS[name])
                continue
            assert json.loads(json.dumps(config)) == config
            assert tuple(config) == CONFIG_KEYS


# --------------------------------------------------------------------------- learning


def test_tiny_model_learns_token_presence():
    """Label = whether token 1 occurs: a tiny model reaches > 90% held-out accuracy."""
    length, vocab = 24, 17
    rng = np.random.default_rng(0)

    def data(n):
        lengths = rng.integers(6, length + 1, size=n)
        ids = rng.integers(2, vocab, size=(n, length))
        labels = rng.integers(0, 2, size=n)
        where = rng.integers(0, lengths)
        ids[np.arange(n), where] = np.where(labels == 1, 1, ids[np.arange(n), where])
        ids = np.where(lengths_mask(lengths, length), ids, 0).astype("int32")
        return {"tokens": ids}, labels.astype("int32")

    keras.utils.set_random_seed(1)
    model = build_model(
        "listops",
        "full",
        "tiny",
        max_length=length,
        num_classes=2,
        dropout=0.0,
        attention_dropout=0.0,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = data(4096)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    x_test, y_test = data(512)
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)
    assert accuracy > 0.9, accuracy


# ---------------------------------------------------------------------------- padding


def _copy_weights(source, target):
    # Same architecture, possibly longer position tables in `target`: copy the prefix rows.
    for src, dst in zip(source.weights, target.weights, strict=True):
        value = keras.ops.convert_to_numpy(src)
        if src.shape != dst.shape:
            full = keras.ops.convert_to_numpy(dst).copy()
            full[: value.shape[0]] = value
            value = full
        dst.assign(value)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "last"])
@pytest.mark.parametrize("learned_positions", [False, True])
def test_padding_does_not_change_logits(pooling, learned_positions):
    """A sequence padded to 10 or to 19 tokens gives the same logits (mean over real only)."""
    kwargs = dict(
        pooling=pooling,
        learned_positions=learned_positions,
        dropout=0.0,
        attention_dropout=0.0,
    )
    short = build_model("text", "full", "tiny", max_length=10, **kwargs)
    long = build_model("text", "full", "tiny", max_length=19, **kwargs)
    _copy_weights(short, long)
    rng = np.random.default_rng(3)
    ids = np.where(lengths_mask([10, 4], 10), rng.integers(1, 257, size=(2, 10)), 0)
    padded = np.pad(ids, [(0, 0), (0, 9)]).astype("int32")
    a = keras.ops.convert_to_numpy(short({"tokens": ids.astype("int32")}))
    b = keras.ops.convert_to_numpy(long({"tokens": padded}))
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_mean_pooling_matches_numpy_masked_mean():
    model = build_model("text", "full", "tiny", max_length=9, pooling="mean", dropout=0.0)
    ids = np.where(lengths_mask([9, 3], 9), np.arange(1, 10)[None], 0).astype("int32")
    encoded = keras.ops.convert_to_numpy(model.get_layer("encoder")(ids))
    pooled = keras.Model(model.input, model.get_layer("pooling").output)({"tokens": ids})
    mask = ids > 0
    expected = (encoded * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pooled), expected, atol=1e-5)
    # Padded rows are not zero, so an unmasked mean (the LRA reference's) would differ.
    assert not np.allclose(encoded.mean(1)[1], expected[1], atol=1e-3)


# ---------------------------------------------------------------------------- retrieval


def test_retrieval_is_two_towers_over_one_shared_encoder():
    model = build_model("retrieval", "full", "tiny", max_length=12, dropout=0.0)
    encoders = [layer for layer in model.layers if isinstance(layer, LRAEncoder)]
    assert len(encoders) == 1
    encoder = encoders[0]
    assert encoder.use_cls_token
    head = sum(model.get_layer(n).count_params() for n in ("mlp", "mlp2", "logits"))
    assert model.count_params() == encoder.count_params() + head
    assert sorted(model.input) == ["tokens_1", "tokens_2"]

    rng = np.random.default_rng(0)
    a = np.where(lengths_mask([12, 5], 12), rng.integers(1, 257, (2, 12)), 0).astype("int32")
    b = np.where(lengths_mask([7, 12], 12), rng.integers(1, 257, (2, 12)), 0).astype("int32")
    logits = keras.ops.convert_to_numpy(model({"tokens_1": a, "tokens_2": b}))
    # Independent head in numpy on the shared encoder's CLS vectors.
    u = keras.ops.convert_to_numpy(encoder(a))[:, 0]
    v = keras.ops.convert_to_numpy(encoder(b))[:, 0]
    x = np.concatenate([u, v, u * v, u - v], axis=-1)
    for name, relu in (("mlp", True), ("mlp2", True), ("logits", False)):
        kernel, bias = model.get_layer(name).get_weights()
        x = x @ kernel + bias
        x = np.maximum(x, 0) if relu else x
    np.testing.assert_allclose(logits, x, atol=1e-4, rtol=1e-4)
    assert model.get_layer("mlp2").units == model.get_layer("mlp").units // 2


# ------------------------------------------------------------------------- static needs


def test_static_length_and_grid_needs_are_filled(fakes):
    config = get_config("listops", "fake_static", "tiny")
    assert config["pooling"] == "cls"
    assert config["attention_kwargs"]["max_length"] == config["max_length"] + 1
    assert get_config("pathfinder", "fake_static", "tiny")["attention_kwargs"]["max_length"] == (
        32 * 32
    )
    build_model("listops", "fake_static", "tiny", max_length=16)

    config = get_config("image", "fake_axial", "tiny")
    assert config["attention_kwargs"]["axis_shape"] == [32, 32]
    assert config["pooling"] == "mean"  # the image preset says CLS; the grid forces mean
    model = build_model("image", "fake_axial", "tiny", image_shape=[4, 6])
    assert not model.get_layer("encoder").use_cls_token
    assert model.input["tokens"].shape == (None, 24)

    config = get_config("pathx", "fake_image_local", "tiny")
    assert config["attention_kwargs"]["image_shape"] == [32, 32]
    assert config["pooling"] == "mean"
    # Optional grid argument: 1D mode on a sequence task, CLS pooling kept.
    config = get_config("text", "fake_image_local", "tiny")
    assert "image_shape" not in config["attention_kwargs"]
    assert config["pooling"] == "cls"


def test_grid_variant_errors(fakes):
    with pytest.raises(ValueError, match="'fake_axial' needs a 2D grid.*'text'.*image"):
        get_config("text", "fake_axial", "tiny")
    with pytest.raises(ValueError, match="pooling='mean'"):
        get_config("image", "fake_axial", "tiny", pooling="cls")
    with pytest.raises(ValueError, match="cells"):
        get_config("image", "fake_axial", "tiny", attention_kwargs={"axis_shape": [4, 4]})
    # An explicit grid on a 1D task, factorising its length, works with mean pooling.
    config = get_config(
        "text", "fake_axial", "tiny", max_length=24, attention_kwargs={"axis_shape": [4, 6]}
    )
    assert config["pooling"] == "mean"
    build_model_from_config(config)


def test_attention_kwargs_merge_and_are_checked(fakes):
    config = get_config("text", "fake_static", "tiny", attention_kwargs={"projection_dim": 2})
    assert config["attention_kwargs"]["projection_dim"] == 2
    assert config["attention_kwargs"]["max_length"] == 257
    with pytest.raises(ValueError, match="no argument 'block_sise'.*projection_dim"):
        get_config("text", "fake_static", "tiny", attention_kwargs={"block_sise": 2})
    with pytest.raises(ValueError, match="must not set 'num_heads'"):
        get_config("text", "full", "tiny", attention_kwargs={"num_heads": 2})


# -------------------------------------------------------------------------------- errors


def test_clear_errors_for_bad_names():
    with pytest.raises(ValueError, match="Unknown task 'imdb'.*listops.*pathx.*retrieval"):
        get_config("imdb")
    with pytest.raises(ValueError, match="Unknown preset 'huge'.*lra, small, tiny"):
        get_config("text", preset="huge")
    with pytest.raises(ValueError, match="Unknown attention 'fulll'.*full"):
        build_model("text", "fulll", "tiny")
    with pytest.raises(ValueError, match="Unknown config key.*'num_layer'.*num_layers"):
        get_config("text", "full", "tiny", num_layer=3)
    with pytest.raises(ValueError, match="'lm' runs on the segment-recurrent encoders"):
        get_config("lm", "full")
    with pytest.raises(ValueError, match="needs pooling='mean'"):
        get_config("text", "transformer_xl", "tiny", pooling="cls")
    with pytest.raises(ValueError, match="has no argument.*'block_size'"):
        get_config("text", "compressive", "tiny", attention_kwargs={"block_size": 4})


@pytest.mark.parametrize("attention", ["transformer_xl", "compressive"])
@pytest.mark.parametrize("task", ["listops", "retrieval"])
def test_segment_recurrent_encoders_train_a_step(task, attention):
    config = get_config(task, attention, "tiny")
    assert config["pooling"] == "mean"
    assert config["attention_kwargs"]["segment_length"] < config["max_length"]
    model = build_model_from_config(config)
    names = ["tokens_1", "tokens_2"] if task == "retrieval" else ["tokens"]
    inputs = {n: np.ones((2, config["max_length"]), "int32") for n in names}

    def loss_fn():
        loss = keras.ops.sum(model(inputs, training=True) ** 2) + sum(model.losses)
        return loss, loss

    _, grads = loss_and_grads(loss_fn, [], model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads, strict=True) if g is None]
    assert not missing


@pytest.mark.parametrize("attention", ["transformer_xl", "compressive"])
def test_lm_task_builds_the_byte_language_model(attention):
    config = get_config("lm", attention, "tiny", attention_kwargs={"memory_length": 8})
    model = build_model_from_config(config)
    assert type(model).__name__ == "ByteLanguageModel"
    assert model.memory_length == 8
    logits = model(np.ones((2, config["max_length"]), "int32"))
    assert tuple(logits.shape) == (2, config["max_length"], 257)
    assert build_model_from_config(json.loads(json.dumps(config))).count_params() == (
        model.count_params()
    )


def test_clear_errors_for_bad_values():
    with pytest.raises(ValueError, match="qkv_dim.*multiple of `num_heads`"):
        get_config("text", "full", "tiny", num_heads=3)
    with pytest.raises(ValueError, match="pooling"):
        get_config("text", "full", "tiny", pooling="median")
    with pytest.raises(ValueError, match="schedule"):
        get_config("text", "full", "tiny", schedule="linear")
    with pytest.raises(ValueError, match="square number"):
        get_config("image", "full", "tiny", max_length=1000)
    with pytest.raises(ValueError, match="image_shape.*image tasks only"):
        get_config("text", "full", "tiny", image_shape=[4, 4])
    with pytest.raises(ValueError, match="missing keys.*unknown keys"):
        build_model_from_config({"task": "text", "foo": 1})


def test_image_length_overrides():
    assert get_config("image", "full", "tiny", max_length=64)["image_shape"] == [8, 8]
    config = get_config("pathx", "full", "tiny", image_shape=[4, 8])
    assert config["max_length"] == 32


# ------------------------------------------------------------------------- lra numbers


def test_lra_listops():
    c = get_config("listops")
    assert (c["num_layers"], c["embed_dim"], c["num_heads"], c["qkv_dim"], c["mlp_dim"]) == (
        4,
        512,
        8,
        512,
        1024,
    )
    assert (c["max_length"], c["vocab_size"], c["num_classes"], c["pooling"]) == (
        2000,
        17,
        10,
        "cls",
    )
    assert c["learned_positions"] is False and c["mask_padding"] is True
    assert (c["dropout"], c["attention_dropout"]) == (0.1, 0.1)
    assert (c["batch_size"], c["learning_rate"], c["weight_decay"], c["warmup_steps"]) == (
        32,
        0.05,
        0.1,
        1000,
    )
    assert (c["schedule"], c["num_train_steps"], c["eval_every"], c["grad_clip_norm"]) == (
        "rsqrt",
        5000,
        50,
        None,
    )


def test_lra_text_and_retrieval():
    c = get_config("text")
    assert (c["max_length"], c["embed_dim"], c["num_heads"], c["num_layers"], c["mlp_dim"]) == (
        4000,
        256,
        4,
        4,
        1024,
    )
    assert (c["warmup_steps"], c["num_train_steps"], c["eval_every"], c["vocab_size"]) == (
        8000,
        20000,
        100,
        257,
    )
    c = get_config("retrieval")
    assert (c["max_length"], c["embed_dim"], c["num_heads"], c["num_layers"], c["mlp_dim"]) == (
        4000,
        128,
        4,
        4,
        512,
    )


def test_lra_pathfinder32_transformer():
    c = get_config("pathfinder", "full")
    got = tuple(
        c[k] for k in ("num_layers", "num_heads", "embed_dim", "dropout", "qkv_dim", "mlp_dim")
    )
    assert got == (4, 4, 32, 0.2, 16, 32)
    assert (c["pooling"], c["learned_positions"], c["mask_padding"]) == ("mean", False, False)
    assert (c["batch_size"], c["learning_rate"], c["schedule"], c["warmup_steps"]) == (
        512,
        1e-3,
        "cosine",
        312,
    )
    assert (c["num_train_steps"], c["weight_decay"], c["image_shape"]) == (62400, 0.0, [32, 32])
    c = get_config("pathx")
    assert (c["max_length"], c["grad_clip_norm"], c["batch_size"]) == (16384, 1.0, 64)


def test_lra_cifar_local(monkeypatch):
    if "local" not in ATTENTIONS:

        class _Local(FullAttention):
            def __init__(self, num_heads, key_dim, block_size=64, **kwargs):
                super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)

        monkeypatch.setitem(ATTENTIONS, "local", _Local)
    c = get_config("image", "local")
    got = tuple(c[k] for k in ("num_layers", "embed_dim", "qkv_dim", "mlp_dim", "num_heads"))
    assert got == (1, 128, 64, 128, 2)
    assert c["attention_kwargs"] == {"block_size": 64}
    assert (c["pooling"], c["learned_positions"], c["dropout"], c["attention_dropout"]) == (
        "mean",
        True,
        0.3,
        0.2,
    )
    assert (c["batch_size"], c["learning_rate"], c["schedule"], c["warmup_steps"]) == (
        256,
        5e-4,
        "cosine",
        175,
    )
    assert get_config("text", "local")["attention_kwargs"] == {"block_size": 50}
    # The image task's Transformer: transformer_base.py's 8 heads.
    c = get_config("image", "full")
    assert (c["num_heads"], c["qkv_dim"], c["embed_dim"], c["pooling"]) == (8, 64, 128, "cls")


def test_lra_parameter_counts():
    # Users' counts in LRA issue #34 (not confirmed by the maintainers): Text about 3.5M.
    assert 3.4e6 < build_model("text").count_params() < 3.6e6


def test_small_preset():
    c = get_config("text", "full", "small")
    assert (c["num_layers"], c["embed_dim"], c["qkv_dim"], c["num_heads"], c["mlp_dim"]) == (
        2,
        64,
        64,
        2,
        128,
    )
    assert c["max_length"] == 4000


# ------------------------------------------------------------------- round trips, dtypes


def test_config_round_trip_rebuilds_the_same_model(tmp_path):
    config = json.loads(json.dumps(get_config("pathfinder", "full", "tiny", image_shape=[6, 6])))
    model = build_model_from_config(config)
    again = build_model("pathfinder", "full", "tiny", image_shape=[6, 6])
    again.set_weights(model.get_weights())
    x = tokens_for(config)
    expected = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), expected, atol=1e-6)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, atol=1e-6)
    assert set(OVERRIDE_KEYS) < set(config)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_gives_float32_logits(policy):
    keras.config.set_dtype_policy(policy)
    config = get_config("retrieval", "full", "tiny", max_length=16)
    model = build_model_from_config(config)
    logits, loss, _ = train_step(model, tokens_for(config), 2)
    assert logits.dtype == "float32"
    assert np.isfinite(float(loss))
    assert model.get_layer("encoder").compute_dtype == policy.split("_")[1]


def test_fit_with_the_runs_optimizer_on_a_state_space_model():
    # The zoo's optimizer (state-space learning-rate and no-decay groups) under plain
    # `model.fit`, on every backend: on JAX a model weight held by the optimizer was donated
    # twice to the step and failed.
    from lra_keras.training.optimizers import GroupedAdamW, build_optimizer

    keras.utils.set_random_seed(0)
    model = build_model("pathfinder", "s5", "tiny", norm="batch", no_weight_decay=["bias"])
    optimizer = build_optimizer(model, 1e-3, learning_rate=1e-3, weight_decay=0.1)
    assert isinstance(optimizer, GroupedAdamW)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    config = get_config("pathfinder", "s5", "tiny")
    x = tokens_for(config, batch=8)
    y = np.arange(8, dtype="int32") % 2
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
