"""The `s4d` presets: S4's LRA table in `lra`, a proportionate `small`, and a tiny model."""

import numpy as np
import pytest

from lra_keras.training.optimizers import GroupedAdamW, build_optimizer
from lra_keras.zoo import build_model, get_config
from lra_keras.zoo.presets import TASKS

# (depth, width, dropout, learning rate, batch, steps, epochs, state size) as the state-spaces
# repository's configs/experiment/lra/s4-*.yaml set them.
S4_TABLE = {
    "listops": (6, 256, 0.0, 0.01, 32, 120000, 40, 4),
    "text": (6, 256, 0.0, 0.01, 16, 50000, 32, 4),
    "retrieval": (6, 256, 0.0, 0.01, 64, 50000, 20, 4),
    "image": (6, 512, 0.1, 0.01, 50, 180000, 200, 64),
    "pathfinder": (6, 256, 0.0, 0.004, 64, 500000, 200, 64),
    "pathx": (6, 256, 0.0, 0.002, 16, 500000, 50, 64),
}


@pytest.mark.parametrize("task", sorted(S4_TABLE))
def test_lra_preset_is_the_s4_configuration(task):
    depth, width, dropout, lr, batch, steps, epochs, state = S4_TABLE[task]
    config = get_config(task, "s4d", "lra")
    assert (config["num_layers"], config["embed_dim"]) == (depth, width)
    assert config["dropout"] == config["attention_dropout"] == dropout
    assert (config["learning_rate"], config["weight_decay"]) == (lr, 0.05)
    assert config["batch_size"] == batch and config["schedule"] == "cosine"
    assert config["num_train_steps"] == steps and config["warmup_steps"] == steps // 10
    assert config["eval_every"] == steps // epochs
    assert config["pooling"] == "mean"
    kwargs = config["attention_kwargs"]
    assert kwargs["state_dim"] == state and kwargs["ssm_learning_rate"] == 0.001
    assert kwargs["dt_max"] == 0.1 and kwargs["dt_min"] == (1e-4 if task == "pathx" else 1e-3)


def test_small_is_proportionate_and_other_variants_keep_their_presets():
    lra, small = get_config("text", "s4d", "lra"), get_config("text", "s4d", "small")
    assert small["num_layers"] == 3 and small["embed_dim"] == 64
    assert small["num_train_steps"] == lra["num_train_steps"] // 4
    assert small["learning_rate"] == lra["learning_rate"]
    # Other names are untouched by the s4d entries.
    assert get_config("text", "full", "small")["num_layers"] == 2
    assert get_config("listops", "full", "lra")["learning_rate"] == 0.05


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_configures(task):
    for preset in ("lra", "small", "tiny"):
        assert get_config(task, "s4d", preset)["attention"] == "s4d"


def test_tiny_model_runs_and_gets_the_grouped_optimizer():
    config = get_config("listops", "s4d", "tiny")
    assert config["attention_kwargs"] == {"state_dim": 16}
    model = build_model("listops", "s4d", "tiny")
    optimizer = build_optimizer(model, 1e-3, learning_rate=1e-3, weight_decay=0.1)
    assert isinstance(optimizer, GroupedAdamW)
    tokens = np.random.default_rng(0).integers(1, 17, size=(2, config["max_length"]))
    logits = model({"tokens": tokens.astype("int32")})
    assert logits.shape == (2, 10) and np.all(np.isfinite(np.asarray(logits)))
