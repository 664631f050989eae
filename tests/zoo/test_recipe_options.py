"""The LRA leaders' recipe options in the zoo: norm, input_encoding, pooling, no_weight_decay,
and the state-space models' `lra` presets (S5, LRU, Mega)."""

import keras
import numpy as np
import pytest

from lra_keras.layers import ATTENTIONS, MaskedBatchNormalization
from lra_keras.zoo import build_model, build_model_from_config, get_config
from lra_keras.zoo.presets import TASKS

TINY = dict(dropout=0.0, attention_dropout=0.0)


def test_defaults_keep_the_old_behaviour_and_old_configs_load():
    config = get_config("image", "full", "tiny")
    assert (config["norm"], config["input_encoding"], config["no_weight_decay"]) == (
        "layer",
        "embedding",
        [],
    )
    old = {
        k: v for k, v in config.items() if k not in ("norm", "input_encoding", "no_weight_decay")
    }
    model = build_model_from_config(old)
    encoder = model.get_layer("encoder")
    assert encoder.norm == "layer" and encoder.input_encoding == "embedding"
    assert isinstance(encoder.token_embedding, keras.layers.Embedding)


def test_linear_pixel_encoding_keeps_integer_token_inputs():
    model = build_model("image", "full", "tiny", input_encoding="linear", **TINY)
    assert model.input["tokens"].dtype == "int32"
    encoder = model.get_layer("encoder")
    assert isinstance(encoder.token_embedding, keras.layers.Dense)
    # S4's CIFAR grayscale normalisation; Pathfinder's x * 2 - 1.
    np.testing.assert_allclose(encoder.pixel_stats, (122.6 / 255, 61.0 / 255))
    pf = build_model("pathfinder", "full", "tiny", input_encoding="linear").get_layer("encoder")
    assert pf.pixel_stats == (0.5, 0.5)
    tokens = np.random.default_rng(0).integers(0, 256, size=(2, 1024)).astype("int32")
    logits = keras.ops.convert_to_numpy(model({"tokens": tokens}))
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    # Nearby pixel values give nearby inputs (an embedding table would not).
    with pytest.raises(ValueError, match="input_encoding"):
        get_config("text", "full", "tiny", input_encoding="linear")
    with pytest.raises(ValueError, match="input_encoding"):
        get_config("image", "full", "tiny", input_encoding="pixels")


def test_batch_norm_reaches_every_norm_and_trains():
    model = build_model("pathfinder", "full", "tiny", norm="batch", input_encoding="linear")
    norms = [
        layer
        for layer in model.get_layer("encoder")._flatten_layers(include_self=False)
        if "norm" in layer.name
    ]
    assert len(norms) == 3 and all(isinstance(n, MaskedBatchNormalization) for n in norms)
    tokens = np.random.default_rng(1).integers(0, 256, size=(4, 1024)).astype("int32")
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit({"tokens": tokens}, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert not np.allclose(keras.ops.convert_to_numpy(norms[-1].moving_mean), 0.0)
    with pytest.raises(ValueError, match="`norm`"):
        get_config("image", "full", "tiny", norm="rms")
    with pytest.raises(ValueError, match="`norm`"):
        get_config("text", "transformer_xl", "tiny", norm="batch")


@pytest.mark.parametrize("pooling", ["max", "last"])
def test_new_pooling_modes_configure_without_a_cls_token(pooling):
    config = get_config("text", "full", "tiny", pooling=pooling)
    model = build_model_from_config(config)
    assert not model.get_layer("encoder").use_cls_token
    assert model.get_layer("pooling").mode == pooling


def test_no_weight_decay_is_checked():
    assert get_config("text", "full", "tiny", no_weight_decay=["bias"])["no_weight_decay"] == [
        "bias"
    ]
    with pytest.raises(ValueError, match="no_weight_decay"):
        get_config("text", "full", "tiny", no_weight_decay=["gamma"])
    with pytest.raises(ValueError, match="no_weight_decay"):
        get_config("text", "full", "tiny", no_weight_decay="bias")


# ------------------------------------------------------------------------------- presets

# lindermanlab/S5 bin/run_experiments/run_lra_*.sh: depth, width, state size, dropout,
# lr (lr_factor * ssm_lr_base), ssm lr, batch, epochs, weight decay.
S5 = {
    "listops": (8, 128, 16, 0.0, 0.003, 0.001, 50, 40, 0.04),
    "text": (6, 256, 192, 0.1, 0.004, 0.001, 50, 35, 0.07),
    "retrieval": (6, 128, 256, 0.0, 0.002, 0.001, 32, 20, 0.05),
    "image": (6, 512, 384, 0.1, 0.0045, 0.001, 50, 250, 0.07),
    "pathfinder": (6, 192, 256, 0.05, 0.0045, 0.0009, 64, 200, 0.03),
    "pathx": (6, 128, 256, 0.0, 0.0018, 0.0006, 32, 75, 0.06),
}
# facebookresearch/mega examples/mega/README.lra.md: depth, lr, weight decay, batch, steps.
MEGA = {
    "listops": (6, 0.001, 0.01, 64, 90000),
    "text": (4, 0.004, 0.01, 50, 25000),
    "retrieval": (6, 0.003, 0.04, 64, 91960),
    "image": (8, 0.01, 0.02, 50, 180000),
    "pathfinder": (6, 0.01, 0.01, 128, 250000),
    "pathx": (4, 0.01, 0.01, 128, 125000),
}


# Orvieto et al. 2023 (arXiv 2303.06349) appendix D.2 Table 9: depth, H, N, iterations, batch,
# LR factor, weight decay, dropout; appendix C.3 Table 8 (LRU row): r_min, r_max; appendix
# D.1: bidirectional on PathFinder and PathX only.
LRU = {
    "image": (6, 512, 384, 180000, 50, 0.25, 0.05, 0.1, 0.9, 0.999, False),
    "listops": (6, 128, 256, 80000, 32, 0.5, 0.05, 0.0, 0.0, 0.99, False),
    "text": (6, 256, 192, 50000, 32, 0.1, 0.05, 0.1, 0.5, 0.9, False),
    "retrieval": (6, 128, 256, 100000, 64, 0.5, 0.05, 0.1, 0.5, 0.9, False),
    "pathfinder": (6, 192, 256, 500000, 64, 0.25, 0.05, 0.0, 0.9, 0.999, True),
    "pathx": (6, 128, 256, 250000, 32, 0.25, 0.05, 0.0, 0.999, 0.9999, True),
}


def _needs(name):
    if name not in ATTENTIONS:
        pytest.skip(f"the `{name}` mixer is not registered on this branch")
    return ATTENTIONS[name]


@pytest.mark.parametrize("task", sorted(S5))
def test_s5_lra_preset(task):
    _needs("s5")
    depth, width, state, dropout, lr, ssm_lr, batch, epochs, wd = S5[task]
    config = get_config(task, "s5", "lra")
    assert (config["num_layers"], config["embed_dim"], config["dropout"]) == (depth, width, dropout)
    # S5's scripts give the learning rate as lr_factor * ssm_lr: equal up to round-off.
    assert config["learning_rate"] == pytest.approx(lr, rel=1e-12)
    assert (config["weight_decay"], config["batch_size"]) == (wd, batch)
    assert config["num_train_steps"] == epochs * config["eval_every"]
    assert (config["norm"], config["pooling"]) == ("batch", "mean")
    grid = TASKS[task].get("grid", False)
    assert config["input_encoding"] == ("linear" if grid else "embedding")
    kwargs = config["attention_kwargs"]
    if "ssm_learning_rate" in kwargs:
        assert kwargs["ssm_learning_rate"] == ssm_lr
    if "state_dim" in kwargs:
        assert kwargs["state_dim"] == state


@pytest.mark.parametrize("task", sorted(MEGA))
def test_mega_lra_preset(task):
    _needs("mega")
    depth, lr, wd, batch, steps = MEGA[task]
    config = get_config(task, "mega", "lra")
    assert (config["num_layers"], config["learning_rate"], config["weight_decay"]) == (
        depth,
        lr,
        wd,
    )
    assert (config["batch_size"], config["num_train_steps"]) == (batch, steps)
    assert config["norm"] == ("batch" if TASKS[task].get("grid") else "layer")
    assert config["pooling"] == "mean" and config["grad_clip_norm"] == 1.0


@pytest.mark.parametrize("task", sorted(LRU))
def test_lru_lra_preset_is_the_papers_table(task):
    _needs("lru")
    depth, width, state, steps, batch, factor, wd, dropout, r_min, r_max, bidirectional = LRU[task]
    config = get_config(task, "lru", "lra")
    assert (config["num_layers"], config["embed_dim"]) == (depth, width)
    assert config["dropout"] == config["attention_dropout"] == dropout
    assert (config["num_train_steps"], config["batch_size"]) == (steps, batch)
    assert config["warmup_steps"] == steps // 10 and config["weight_decay"] == wd
    assert (config["norm"], config["schedule"]) == ("batch", "cosine")
    kwargs = config["attention_kwargs"]
    assert (kwargs["state_dim"], kwargs["r_min"], kwargs["r_max"]) == (state, r_min, r_max)
    assert kwargs["bidirectional"] == bidirectional
    # The base learning rate is not in the paper (S4D's stands in); the factor is.
    assert kwargs["ssm_learning_rate"] == pytest.approx(factor * config["learning_rate"])
    phase = np.pi / 10 if task == "pathx" else 2 * np.pi
    assert kwargs["max_phase"] == pytest.approx(phase)
    assert kwargs["activation"] == ("half_glu1" if task == "pathx" else "full_glu")


def test_lru_preset_builds_the_papers_ring():
    _needs("lru")
    for alias, task in (("pathfinder64", "pathfinder"), ("pathfinder256", "pathx")):
        assert (
            get_config(alias, "lru", "lra")["attention_kwargs"]
            == get_config(task, "lru", "lra")["attention_kwargs"]
        )
    kwargs = get_config("pathx", "lru", "lra")["attention_kwargs"]
    layer = ATTENTIONS["lru"](num_heads=1, key_dim=16, **kwargs)
    assert (layer.r_min, layer.r_max, layer.bidirectional) == (0.999, 0.9999, True)


def test_s4d_lra_preset_now_applies_batch_norm_and_pixel_encoding():
    config = get_config("image", "s4d", "lra")
    assert (config["norm"], config["input_encoding"]) == ("batch", "linear")
    assert get_config("text", "s4d", "lra")["input_encoding"] == "embedding"
    # `small` and every other variant keep their settings.
    assert get_config("image", "full", "lra")["norm"] == "layer"


def test_runs_saved_before_the_recipe_keys_still_resume():
    from lra_keras.training.run_state import config_differences

    new = get_config("text", "full", "tiny")
    old = {k: v for k, v in new.items() if k not in ("norm", "input_encoding", "no_weight_decay")}
    assert config_differences(old, new) == []
    changed = get_config("text", "full", "tiny", no_weight_decay=["bias"])
    assert config_differences(old, changed) == ['no_weight_decay: (unset) -> ["bias"]']
