"""Runs the trainer on Keras's JAX backend in a fresh process, for `test_jax_trainer.py`.

    python -m tests.training.jax_run [--save_logits PATH] cli <lra-train flags>
    python -m tests.training.jax_run [--sleep S] \
        synthetic --model_dir D [--steps N --trajectory --grad_accum_steps K ...]

`cli` runs `lra-train` in this process; `synthetic` trains `tests.training.synthetic`'s model
on its task through `Trainer` and prints one JSON line (results, or each step's loss, and a
fingerprint of the weights). `--save_logits` saves, after `cli`, validation tokens and the
JAX model's logits on them from the run's best weights; `--sleep` slows every training step
(to be killed in). Run it under `tests/backends/no_tensorflow.py`'s environment to have no
TensorFlow at all.
Emulated devices come from `XLA_FLAGS=--xla_force_host_platform_device_count=N`, which the
caller sets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def slow_steps(seconds: float) -> None:
    import time

    from lra_keras.training.backends import jax as jax_backend

    call = jax_backend.TrainStep.__call__

    def slow(self, micro_batches):
        time.sleep(seconds)
        return call(self, micro_batches)

    jax_backend.TrainStep.__call__ = slow


def synthetic(argv) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--eval_every", type=int, default=10)
    p.add_argument("--checkpoint_every", type=int, default=None)
    p.add_argument("--grad_accum_steps", type=int, default=1)
    p.add_argument("--grad_clip_norm", type=float, default=None)
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--schedule", default="constant")
    p.add_argument("--warmup_steps", type=int, default=0)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--no_shuffle", action="store_true")
    p.add_argument("--init_weights", help="a .weights.h5 file to start from")
    p.add_argument("--trajectory", action="store_true", help="print each step's loss")
    p.add_argument("--poison_step", type=int, help="this training step's loss is NaN")
    args = p.parse_args(argv)

    import jax

    from lra_keras.training import Trainer
    from lra_keras.training.backends import set_random_seed
    from tests.training.numpy_data import synthetic as data
    from tests.training.synthetic import make_model, weights_fingerprint

    def model_fn():
        model = make_model(args.dropout)
        if args.init_weights:
            model.load_weights(args.init_weights)
        return model

    train_data = data(256, 16, seed=1, shuffle=not args.no_shuffle)
    if args.poison_step:
        model_fn, train_data = poisoned(args.poison_step, args.batch_size)
    set_random_seed(0)
    trainer = Trainer(
        model_fn,
        train_data,
        eval_data={"validation": data(64, 16, seed=2), "test": data(64, 16, seed=3)},
        model_dir=args.model_dir,
        strategy=args.strategy,
        batch_size=args.batch_size,
        num_train_steps=args.steps,
        learning_rate=args.learning_rate,
        schedule=args.schedule,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        grad_accum_steps=args.grad_accum_steps,
        grad_clip_norm=args.grad_clip_norm,
        verbose=0,
        export_fn=None,
    )
    out = {"devices": len(jax.devices()), "replicas": trainer.num_replicas}
    if args.trajectory:
        losses = []
        for _ in range(args.steps):
            micro = tuple(
                trainer._distribute(next(trainer._train_iterator))
                for _ in range(trainer.grad_accum_steps)
            )
            losses.append(float(trainer._train_fn(micro)["loss"]))
        out["losses"] = losses
    else:
        from lra_keras.errors import UserError

        try:
            out["results"] = trainer.train()
        except UserError as error:
            out["error"] = str(error)
    out["weights"] = weights_fingerprint(trainer.model)
    out["tensorflow_loaded"] = "tensorflow" in sys.modules
    print(json.dumps(out, default=float))
    sys.stdout.flush()


def poisoned(step: int, batch_size: int):
    """`test_misuse_training`'s poisoned run on numpy data: training step `step` has token 0,
    which the model turns into a NaN loss."""
    import keras

    from tests.training.numpy_data import ArrayDataset
    from tests.training.synthetic import make_arrays, make_model

    tokens, labels = make_arrays(64, seed=1)
    tokens[(step - 1) * batch_size : step * batch_size, 0] = 0

    def model_fn():
        base = make_model()
        inputs = keras.Input((base.inputs[0].shape[1],), dtype="int32", name="tokens")
        poison = keras.layers.Lambda(
            lambda t: keras.ops.where(keras.ops.equal(t[:, :1], 0), float("nan"), 0.0)
        )(inputs)
        return keras.Model({"tokens": inputs}, base({"tokens": inputs}) + poison)

    return model_fn, ArrayDataset({"tokens": tokens}, labels, batch_size)


def main() -> None:
    argv = sys.argv[1:]
    sleep, save_logits = 0.0, None
    while argv and argv[0].startswith("--"):
        flag = argv.pop(0)
        if flag == "--sleep":
            sleep = float(argv.pop(0))
        elif flag == "--save_logits":
            save_logits = argv.pop(0)
        else:
            raise SystemExit(f"unknown option {flag}")
    mode = argv.pop(0)
    if sleep:
        slow_steps(sleep)
    if mode == "synthetic":
        synthetic(argv)
        return
    from lra_keras.training import cli

    sys.argv = ["lra-train", *argv]
    try:
        cli.run()
    except SystemExit as done:
        if done.code not in (0, None) or save_logits is None:
            raise
    model_dir = argv[argv.index("--model_dir") + 1]
    best_logits(model_dir, argv[argv.index("--data_dir") + 1], save_logits)


def best_logits(model_dir: str, data_dir: str, path: str) -> None:
    """Saves validation tokens and the JAX model's logits on them, from the run's best weights."""
    import numpy as np

    from lra_keras.data import load_numpy
    from lra_keras.zoo import build_model_from_config

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    config = {k: v for k, v in config.items() if k not in ("trainer", "run")}
    model = build_model_from_config(config)
    model.load_weights(os.path.join(model_dir, "best", "model.weights.h5"))
    data = load_numpy(config["task"], "validation", data_dir, 8, max_length=config["max_length"])
    features, _ = next(iter(data.batches()))
    logits = np.asarray(model(features, training=False))
    np.savez(path, logits=logits, **features)


if __name__ == "__main__":
    main()
