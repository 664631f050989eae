"""The `mega` presets: Mega's LRA configuration in `lra`, a proportionate `small`, a tiny model."""

import numpy as np
import pytest

from lra_keras.training.optimizers import build_optimizer
from lra_keras.zoo import build_model, get_config
from lra_keras.zoo.presets import TASKS

# (depth, d, z, hidden, attention function, dropout, learning rate, weight decay, batch,
# steps, warmup, truncation, length) as facebookresearch/mega's examples/mega/README.lra.md
# and fairseq/models/lra/model.py (`mega_lra_*`) set them; batch = batch-size x update-freq
# (x 8 GPUs on Path-X, whose warmup the README leaves free).
MEGA_TABLE = {
    "listops": (6, 80, 64, 160, "softmax", 0.1, 0.001, 0.01, 64, 90000, 3000, 1024, 2000),
    "text": (4, 128, 64, 256, "softmax", 0.1, 0.004, 0.01, 50, 25000, 10000, 1024, 4000),
    "retrieval": (6, 128, 64, 256, "softmax", 0.1, 0.003, 0.04, 64, 91960, 10000, 1024, 4000),
    "image": (8, 160, 96, 320, "laplace", 0.0, 0.01, 0.02, 50, 180000, 9000, 1024, 1024),
    "pathfinder": (6, 128, 64, 256, "laplace", 0.0, 0.01, 0.01, 128, 250000, 50000, 1024, 1024),
    "pathx": (4, 64, 32, 128, "laplace", 0.0, 0.01, 0.01, 128, 125000, 25000, 4096, 16384),
}


@pytest.mark.parametrize("task", sorted(MEGA_TABLE))
def test_lra_preset_is_the_mega_configuration(task):
    depth, d, z, hidden, function, dropout, lr, wd, batch, steps, warmup, trunc, length = (
        MEGA_TABLE[task]
    )
    config = get_config(task, "mega", "lra")
    assert (config["num_layers"], config["embed_dim"], config["mlp_dim"]) == (depth, d, hidden)
    assert config["dropout"] == dropout and config["attention_dropout"] == 0.0
    assert (config["learning_rate"], config["weight_decay"]) == (lr, wd)
    assert config["batch_size"] == batch and config["grad_clip_norm"] == 1.0
    assert (config["num_train_steps"], config["warmup_steps"]) == (steps, warmup)
    assert config["pooling"] == "mean" and config["max_length"] == length
    assert config["attention_kwargs"] == {
        "ema_dim": 16,
        "z_dim": z,
        "hidden_dim": hidden,
        "attention_activation": function,
        "max_positions": length,
        "truncation": trunc,
    }


def test_small_is_proportionate_and_other_variants_keep_their_presets():
    lra, small = get_config("text", "mega", "lra"), get_config("text", "mega", "small")
    assert small["num_layers"] == 2 and small["embed_dim"] == 64
    assert small["attention_kwargs"]["z_dim"] == 32
    assert small["num_train_steps"] == lra["num_train_steps"] // 4
    assert small["learning_rate"] == lra["learning_rate"]
    assert get_config("text", "full", "small")["num_layers"] == 2
    assert get_config("text", "s4d", "lra")["learning_rate"] == 0.01


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_configures(task):
    for preset in ("lra", "small", "tiny"):
        assert get_config(task, "mega", preset)["attention"] == "mega"


def test_tiny_model_runs_with_one_learning_rate():
    config = get_config("listops", "mega", "tiny")
    assert config["attention_kwargs"]["chunk_size"] == 32
    model = build_model("listops", "mega", "tiny")
    tokens = np.random.default_rng(0).integers(1, 17, size=(2, config["max_length"]))
    tokens[1, 50:] = 0  # padding
    logits = model({"tokens": tokens.astype("int32")})
    assert logits.shape == (2, 10) and np.all(np.isfinite(np.asarray(logits)))
    # Mega trains its EMA parameters like every other weight: a plain AdamW.
    optimizer = build_optimizer(model, 1e-3, learning_rate=1e-3, weight_decay=0.1)
    assert type(optimizer).__name__ == "AdamW"
