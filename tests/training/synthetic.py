"""A trivially learnable synthetic task and a tiny model, for the training tests.

Run as a module to train in a fresh process (logical CPU devices must be configured before
TensorFlow initialises, and the kill/resume tests need a process to kill):

    python -m tests.training.synthetic --model_dir D --steps 20 [--cpus 2 --strategy mirrored]

It prints one JSON line: the results and a fingerprint of the final weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

VOCAB, LENGTH, CLASSES = 16, 8, 4


def make_arrays(n: int, seed: int):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, size=(n, LENGTH)).astype("int32")
    labels = (tokens[:, 0] % CLASSES).astype("int32")
    return tokens, labels


def make_dataset(n: int, batch_size: int, seed: int = 0, shuffle: bool = False):
    import tensorflow as tf

    tokens, labels = make_arrays(n, seed)
    ds = tf.data.Dataset.from_tensor_slices(({"tokens": tokens}, labels))
    if shuffle:
        ds = ds.shuffle(n, seed=seed)
    return ds.batch(batch_size)


def make_model(dropout: float = 0.0, activity_l2: float = 0.0, seed: int = 0):
    import keras

    inputs = {"tokens": keras.Input((LENGTH,), dtype="int32", name="tokens")}
    x = keras.layers.Embedding(VOCAB, 8)(inputs["tokens"])
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed)(x)
    if activity_l2:
        x = keras.layers.ActivityRegularization(l2=activity_l2)(x)
    logits = keras.layers.Dense(CLASSES, dtype="float32")(x)
    return keras.Model(inputs, logits)


def weights_fingerprint(model) -> list[float]:
    return [float(np.sum(np.asarray(w, np.float64))) for w in model.get_weights()]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--strategy", default="default")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--activity_l2", type=float, default=0.0)
    p.add_argument("--eval_every", type=int, default=10)
    p.add_argument("--checkpoint_every", type=int, default=None)
    p.add_argument("--grad_accum_steps", type=int, default=1)
    p.add_argument("--grad_clip_norm", type=float, default=None)
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep per step")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--trajectory", action="store_true", help="print each step's loss")
    p.add_argument("--export", action="store_true", help="export the best model at the end")
    p.add_argument(
        "--slow_export",
        action="store_true",
        help="the export's SavedModel write waits (up to 2 min) after creating model_dir/exporting",
    )
    args = p.parse_args(argv)

    import tensorflow as tf

    if args.cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpus
        )
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    import keras

    from lra_keras.training import Trainer, make_strategy

    keras.utils.set_random_seed(0)
    devices = [f"/cpu:{i}" for i in range(args.cpus)] if args.strategy == "mirrored" else None
    strategy = make_strategy(args.strategy, devices=devices)
    trainer = Trainer(
        lambda: make_model(args.dropout, args.activity_l2),
        make_dataset(256, 16, seed=1, shuffle=True),
        eval_data={
            "validation": make_dataset(64, 16, seed=2),
            "test": make_dataset(64, 16, seed=3),
        },
        model_dir=args.model_dir,
        strategy=strategy,
        batch_size=args.batch_size,
        num_train_steps=args.steps,
        learning_rate=args.learning_rate,
        schedule="constant",
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        grad_accum_steps=args.grad_accum_steps,
        grad_clip_norm=args.grad_clip_norm,
        verbose=0,
        export_fn="auto" if args.export else None,
    )
    if args.trajectory:
        losses = []
        for _ in range(args.steps):
            micro = tuple(
                trainer._distribute(next(trainer._train_iterator))
                for _ in range(trainer.grad_accum_steps)
            )
            losses.append(float(trainer._train_fn(micro)["loss"]))
        print(json.dumps({"losses": losses, "weights": weights_fingerprint(trainer.model)}))
        return
    if args.sleep:
        original = trainer._train_fn

        def slow(micro):
            import time

            time.sleep(args.sleep)
            return original(micro)

        trainer._train_fn = slow
    if args.slow_export:
        import time

        original_save = tf.saved_model.save

        def slow_save(*a, **k):
            open(os.path.join(args.model_dir, "exporting"), "w").close()
            for _ in range(1200):  # a SIGTERM arrives meanwhile
                time.sleep(0.1)
            return original_save(*a, **k)

        tf.saved_model.save = slow_save
    results = trainer.train()
    print(json.dumps({"results": results, "weights": weights_fingerprint(trainer.model)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
