"""Throughput of the readers and the Pathfinder generator on small generated sets.

    python -m lra_keras.data.benchmark --out /tmp/lra_data_bench [--repeats 3]

Prints examples per second of each reader (median of `--repeats` full passes, batch 32, after
one warm-up pass) and Pathfinder images per second at 32 and 128 pixels with 1 and 2 workers.
Text and image read TFDS mocks (in-memory examples): they time decoding and batching only.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import app, flags

flags.DEFINE_string("out", "/tmp/lra_data_bench", "Scratch folder.")
flags.DEFINE_integer("repeats", 3, "Timed passes per measurement (median reported).")
FLAGS = flags.FLAGS


def _rate(make, repeats):
    rates = []
    for i in range(repeats + 1):
        ds = make()
        start = time.perf_counter()
        n = sum(int(y.shape[0]) for _, y in ds)
        if i:  # the first pass warms caches and traces functions
            rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def _pathfinder_rate(out, resolution, workers, num_images, repeats):
    from lra_keras.data.pathfinder_generator import write_pathfinder

    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        write_pathfinder(
            os.path.join(out, f"pf{resolution}_w{workers}_{r}"),
            resolution=resolution,
            num_images=num_images,
            seed=r,
            workers=workers,
        )
        rates.append(num_images / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from lra_keras.data import load, prepare, write_listops, write_pathfinder

    out, reps = FLAGS.out, FLAGS.repeats
    os.makedirs(out, exist_ok=True)
    results = {}

    for workers in (1, 2):
        for res, n in ((32, 600), (128, 150)):
            results[f"pathfinder generator {res}px workers={workers} (images/s)"] = (
                _pathfinder_rate(out, res, workers, n, reps)
            )

    lo = os.path.join(out, "listops")
    write_listops(lo, num_train=2000, num_val=10, num_test=10, seed=0)  # lengths 500-2000
    results["listops release TSV"] = _rate(lambda: load("listops", "train", lo, 32), reps)
    prepare("listops", lo)
    results["listops prepared"] = _rate(lambda: load("listops", "train", lo, 32), reps)

    aan = os.path.join(out, "aan")
    os.makedirs(aan, exist_ok=True)
    rng = np.random.default_rng(0)
    words = np.array(
        ["the", "of", "model", "attention", "sequence", "long", "paper", "we", "propose"]
    )
    for split in ("train", "eval", "test"):
        with open(os.path.join(aan, f"new_aan_pairs.{split}.tsv"), "w") as f:
            for i in range(1000 if split == "train" else 10):
                t1, t2 = (" ".join(rng.choice(words, 900)) for _ in range(2))
                f.write(f"{i % 2}.0\tp{i}\tq{i}\t{t1}\t{t2}\n")
    results["retrieval release TSV"] = _rate(lambda: load("retrieval", "train", aan, 32), reps)
    prepare("retrieval", aan)
    results["retrieval prepared"] = _rate(lambda: load("retrieval", "train", aan, 32), reps)

    for res, task in ((32, "pathfinder"), (128, "pathx")):
        pf = os.path.join(out, f"pf_read{res}")
        write_pathfinder(pf, resolution=res, num_images=1000 if res == 32 else 300, workers=2)
        results[f"{task} release PNG"] = _rate(lambda t=task, p=pf: load(t, "train", p, 32), reps)
        prepare(task, pf)
        results[f"{task} prepared"] = _rate(lambda t=task, p=pf: load(t, "train", p, 32), reps)

    texts = [" ".join(rng.choice(words, 800)) for _ in range(2000)]
    images = rng.integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8)

    def fake(self, split, **kwargs):
        if self.name == "imdb_reviews":
            return tf.data.Dataset.from_tensor_slices({"text": texts, "label": np.arange(2000) % 2})
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(2000) % 10})

    with tfds.testing.mock_data(as_dataset_fn=fake):
        results["text (TFDS mock)"] = _rate(lambda: load("text", "train", out, 32), reps)
        results["image (TFDS mock)"] = _rate(lambda: load("image", "test", out, 32), reps)

    for name, value in results.items():
        unit = "" if "images/s" in name else " (examples/s)"
        print(f"{name}{unit}: {value:.0f}")


if __name__ == "__main__":
    app.run(main)
