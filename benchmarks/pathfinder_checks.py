"""Pipeline checks before a long Pathfinder run: can the model memorise, and does it only learn
what the labels say?

Two short trainings of one zoo model on generated Pathfinder-32 images (issue 26):

1. **Overfit**: `--images` training images with their labels. A model, pipeline and loss that
   work drive the training accuracy (measured in inference mode) to ~1.0. If it stays at
   chance, a long run will too: the bug is in the model or the pipeline, not the budget.
2. **Shuffled labels**: the same images with their labels permuted. Whatever the model fits
   then, its accuracy on held-out images (with their true labels) must stay at chance; above
   chance means labels leak through the inputs or the split.

    python -m benchmarks.pathfinder_checks [--attention s4d] [--preset tiny] [--norm batch]
        [--input_encoding linear] [--pooling mean] [--images 256] [--held_out 256]
        [--epochs 100] [--batch_size 32] [--learning_rate 3e-3] [--difficulty easy]
        [--seed 0] [--output results/pathfinder_checks.json]

Prints one JSON object (both checks' accuracies and losses) and writes it to `--output`.
The images come from `lra_keras.data.pathfinder_generator` (seeded, in memory; nothing is
written but `--output`).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def make_images(count: int, seed: int, difficulty: str, first: int = 0):
    """`count` balanced Pathfinder-32 images as `(tokens int32 [count, 1024], labels)`."""
    from lra_keras.data.pathfinder_generator import generate_pathfinder

    images, labels = [], []
    for i in range(first, first + count):
        image, truth = generate_pathfinder(32, difficulty, seed, i, label=i % 2)
        images.append(image.reshape(-1).astype("int32"))
        labels.append(truth["label"])
    return np.stack(images), np.asarray(labels, "int32")


def _train_and_score(args, tokens, labels, held_tokens, held_labels) -> dict:
    import keras

    from lra_keras.training.optimizers import build_optimizer
    from lra_keras.zoo import build_model

    keras.utils.set_random_seed(args.seed)
    overrides = {"norm": args.norm, "input_encoding": args.input_encoding}
    if args.pooling:
        overrides["pooling"] = args.pooling
    model = build_model("pathfinder", args.attention, args.preset, dropout=0.0, **overrides)
    optimizer = build_optimizer(
        model, args.learning_rate, learning_rate=args.learning_rate, weight_decay=0.0
    )
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        {"tokens": tokens},
        labels,
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        verbose=0,
    )
    train_loss, train_acc = model.evaluate(
        {"tokens": tokens}, labels, batch_size=args.batch_size, verbose=0
    )
    held_loss, held_acc = model.evaluate(
        {"tokens": held_tokens}, held_labels, batch_size=args.batch_size, verbose=0
    )
    return {
        "train_accuracy": float(train_acc),
        "train_loss": float(train_loss),
        "last_epoch_fit_loss": float(history.history["loss"][-1]),
        "held_out_accuracy": float(held_acc),
        "held_out_loss": float(held_loss),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def run(args: argparse.Namespace) -> dict:
    tokens, labels = make_images(args.images, args.seed, args.difficulty)
    held_tokens, held_labels = make_images(
        args.held_out, args.seed, args.difficulty, first=args.images
    )
    shuffled = np.random.default_rng([args.seed, 1]).permutation(labels)
    result = {
        "config": vars(args),
        "overfit": _train_and_score(args, tokens, labels, held_tokens, held_labels),
        "shuffled_labels": _train_and_score(args, tokens, shuffled, held_tokens, held_labels),
        "shuffled_label_agreement": float(np.mean(shuffled == labels)),
    }
    print(json.dumps(result), flush=True)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attention", default="s4d")
    parser.add_argument("--preset", choices=["tiny", "small", "lra"], default="tiny")
    parser.add_argument("--norm", choices=["layer", "batch"], default="batch")
    parser.add_argument("--input_encoding", choices=["embedding", "linear"], default="linear")
    parser.add_argument("--pooling", choices=["cls", "mean", "max", "last"], default="mean")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--held_out", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--difficulty", choices=["easy", "intermediate", "hard"], default="easy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join("results", "pathfinder_checks.json"))
    args = parser.parse_args(argv)
    for key in ("images", "held_out", "epochs", "batch_size"):
        if getattr(args, key) < 2:
            parser.error(f"--{key} must be >= 2, got {getattr(args, key)}")
    if args.learning_rate <= 0:
        parser.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    return run(args)


if __name__ == "__main__":
    main()
