"""A convolutional control for Pathfinder-32: is the task learnable at this budget at all?

When every attention stays at chance on generated Pathfinder, three causes look alike: the
attention, the budget, or the data. This trains a model with no attention on the same
`lra_keras.data` pipeline, so its result separates them: a residual stack of dilated 3x3
convolutions (dilations 1-16, so each output sees the whole 32x32 image, as a path can span
it), global max pooling, and a two-layer head, trained with Adam and cross-entropy.

    python -m benchmarks.pathfinder_control [--difficulty easy] [--images 100000] [--steps 2500]
        [--batch_size 32] [--learning_rate 1e-3] [--data_dir results/accuracy_data]
        [--output results/pathfinder_control.json]

Data are generated once per difficulty and size, in the same folders as `benchmarks.accuracy`
(`pathfinder_<difficulty>_<images>`), so both read the very same images. Prints one JSON line
per evaluation and writes them all to `--output`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

DILATIONS = (1, 2, 4, 8, 16, 1, 2, 4, 8, 1)


def build_control(width: int = 32, resolution: int = 32):
    """The dilated residual convnet: `[B, res*res]` pixel tokens to two logits."""
    import keras

    layers = keras.layers
    tokens = keras.Input((resolution * resolution,), dtype="int32", name="tokens")
    x = layers.Reshape((resolution, resolution, 1))(tokens)
    x = layers.Rescaling(1.0 / 255.0)(x)
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    for rate in DILATIONS:
        branch = layers.Conv2D(width, 3, padding="same", dilation_rate=rate, activation="relu")
        x = layers.Add()([x, branch(x)])
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model({"tokens": tokens}, layers.Dense(2)(x), name="pathfinder_control")


def run(args: argparse.Namespace) -> list[dict]:
    import keras

    from benchmarks.accuracy import generate
    from lra_keras.data import load

    folder = generate("pathfinder", args.data_dir, _accuracy_args(args))
    train = load(
        "pathfinder", "train", folder, args.batch_size, seed=args.seed, difficulty=args.difficulty
    ).repeat()
    validation = load("pathfinder", "validation", folder, 256, difficulty=args.difficulty)
    keras.utils.set_random_seed(args.seed)
    model = build_control()
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rows, done, start = [], 0, time.perf_counter()
    while done < args.steps:
        chunk = min(args.eval_every, args.steps - done)
        history = model.fit(train, steps_per_epoch=chunk, epochs=1, verbose=0)
        done += chunk
        loss, accuracy = model.evaluate(validation, verbose=0)
        rows.append(
            {
                "step": done,
                "examples_seen": done * args.batch_size,
                "train_loss": float(history.history["loss"][-1]),
                "validation_loss": float(loss),
                "validation_accuracy": float(accuracy),
                "wall_seconds": time.perf_counter() - start,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump({"config": vars(args), "evaluations": rows}, f, indent=2)
    return rows


def _accuracy_args(args: argparse.Namespace) -> argparse.Namespace:
    """The fields `benchmarks.accuracy.generate` reads, so both benchmarks share a folder."""
    return argparse.Namespace(
        pathfinder_difficulty=args.difficulty, pathfinder_images=args.images, seed=args.seed
    )


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulty", choices=["easy", "intermediate", "hard"], default="easy")
    parser.add_argument("--images", type=int, default=100000)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--eval_every", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=os.path.join("results", "accuracy_data"))
    parser.add_argument("--output", default=os.path.join("results", "pathfinder_control.json"))
    args = parser.parse_args(argv)
    for key in ("steps", "eval_every", "batch_size"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.images < 10:
        parser.error(f"--images must be >= 10 (an 80/10/10 split), got {args.images}")
    if args.learning_rate <= 0:
        parser.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    return run(args)


if __name__ == "__main__":
    main()
