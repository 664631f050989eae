"""benchmarks.pathfinder_curve: the recipe's command builds the intended model; the curve and
its first step at the target are read from a run folder's records."""

import argparse
import json

import pytest

from benchmarks import pathfinder_curve


def _args(**kwargs):
    defaults = dict(
        attention="s5",
        difficulty="easy",
        num_images=64000,
        num_train_steps=6000,
        eval_every=250,
        max_eval_batches=32,
        batch_size=32,
        seed=0,
        cores=0,
        smoke=False,
    )
    defaults.update(kwargs)
    return argparse.Namespace(**defaults)


def test_the_command_builds_the_recipes_model():
    # Not lra_keras.training.cli's parser: importing that module defines absl flags that
    # another CLI module imported in the same test process already holds.
    from lra_keras.training.train_task import build_run_config

    command = pathfinder_curve.train_command(_args(), "data/pf", "runs/pf")
    sets = [part.split("=", 1)[1] for part in command if part.startswith("--set=")]
    overrides = {key: json.loads(value) for key, value in (s.split("=", 1) for s in sets)}
    config = build_run_config("pathfinder", "s5", "small", overrides=overrides)
    assert config["num_layers"] == 4 and config["dropout"] == 0.0
    assert config["norm"] == "batch" and config["input_encoding"] == "linear"
    assert config["pooling"] == "mean" and config["warmup_steps"] == 200
    assert config["attention_kwargs"]["state_dim"] == 64
    assert config["attention_kwargs"]["blocks"] == 4
    assert "--data_option=difficulty=easy" in command
    assert "--num_train_steps=6000" in command and "--eval_every=250" in command


def test_cores_pin_the_run():
    command = pathfinder_curve.train_command(_args(cores=1), "d", "m")
    if command[0] == "taskset":
        assert command[:3] == ["taskset", "-c", "0-0"]
    else:
        pytest.skip("taskset is not installed")


def test_curve_and_first_step_at_target():
    validations = {
        "500": {"accuracy": 0.66, "loss": 0.6},
        "250": {"accuracy": 0.51, "loss": 0.69},
        "750": {"accuracy": 0.64, "loss": 0.61},
    }
    rows = pathfinder_curve.curve(validations, batch_size=32, train_seconds=300.0, steps=750)
    assert [row["step"] for row in rows] == [250, 500, 750]
    assert rows[0]["examples_seen"] == 8000
    assert rows[1]["approx_wall_s"] == 200
    assert pathfinder_curve.first_step_at(rows, 0.65) == 500
    assert pathfinder_curve.first_step_at(rows, 0.9) is None
    text = pathfinder_curve.markdown(
        {
            "attention": "s5",
            "difficulty": "easy",
            "command": "x",
            "status": "done",
            "best_step": 500,
            "test_accuracy": 0.65,
            "first_step_at_target": 500,
            "curve": rows,
        }
    )
    assert "| 500 | 16000 | 0.6600 | 0.6000 | 200 |" in text


@pytest.mark.slow
def test_smoke_runs_end_to_end(tmp_path):
    report = pathfinder_curve.main(
        [
            "--smoke",
            "--cores=0",
            f"--data_root={tmp_path / 'data'}",
            f"--out_dir={tmp_path / 'out'}",
        ]
    )
    assert report["status"] == "done"
    assert [row["step"] for row in report["curve"]] == [1, 2]
    assert report["test_accuracy"] is not None
    assert (tmp_path / "out" / "curve.md").exists()
