"""Readers of the LRA release files and the TFDS data sets, as pure tf.data record streams.

Each reader returns `(records, decode)`: `records` is a dataset of cheap elements (lines, file
paths, encoded examples) that `load` shuffles, and `decode` maps one record to
`(features, label)`. Parsing errors are reported by `tf.debugging.Assert` ops that name the
file and line, raised when the bad line is read.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from lra_keras.data import encoding
from lra_keras.data.tasks import (
    AAN_FILE_SPLIT,
    DIFFICULTY_DIRS,
    LISTOPS_FILE_SPLIT,
    find_first,
)

_DIGIT = r"\s*[0-9]\s*"  # ListOps targets 0-9
_BINARY = r"\s*[01](\.0*)?\s*"  # AAN labels are written as floats: 0, 1, 0.0, 1.0


def _numbered_lines(path: str, skip_header: bool) -> tf.data.Dataset:
    """(1-based line number, line) of a text file, without blank lines (e.g. a final one)."""
    lines = tf.data.TextLineDataset(path).enumerate(start=1)
    if skip_header:
        lines = lines.skip(1)
    return lines.filter(lambda n, line: tf.strings.length(tf.strings.strip(line)) > 0)


def _checked_fields(path, lineno, line, num_fields, label_index, label_pattern, what):
    """Splits a TSV line into `num_fields` strings, asserting the count and the label format."""
    line = tf.strings.regex_replace(line, "\r$", "")
    fields = tf.strings.split(line, "\t")
    count = tf.size(fields)
    fields = tf.concat([fields, tf.fill([num_fields], "")], 0)[:num_fields]
    ok = tf.logical_and(
        tf.equal(count, num_fields), tf.strings.regex_full_match(fields[label_index], label_pattern)
    )
    check = tf.debugging.Assert(
        ok,
        [
            f"Malformed line in {path}, line",
            lineno,
            f": expected {num_fields} tab-separated fields ({what}); got",
            count,
            "fields:",
            tf.strings.substr(line, 0, 200),
        ],
        summarize=1,
    )
    with tf.control_dependencies([check]):
        return [tf.identity(fields[i]) for i in range(num_fields)]


# ListOps ------------------------------------------------------------------------------------


def listops_file(data_dir: str, split: str, task_name: str = "basic") -> str:
    name = f"{task_name}_{LISTOPS_FILE_SPLIT[split]}.tsv"
    return find_first(
        [os.path.join(data_dir, name), os.path.join(data_dir, "listops-1000", name)],
        "ListOps file",
        "Generate it with `lra-data listops --out DATA_DIR --seed 0` (or unpack the LRA "
        "release's listops-1000 folder there).",
    )


def listops_release(data_dir: str, split: str, max_length: int, task_name: str = "basic"):
    path = listops_file(data_dir, split, task_name)
    records = _numbered_lines(path, skip_header=True)

    def decode(lineno, line):
        source, target = _checked_fields(
            path, lineno, line, 2, 1, _DIGIT, "Source, Target (a digit)"
        )
        ids = encoding.listops_ids(encoding.listops_tokens(source))
        tokens = encoding.pad_or_truncate(ids, max_length)
        return {"tokens": tokens}, tf.strings.to_number(target, tf.int32)

    return records, decode


def listops_prepared(dataset: tf.data.Dataset, max_length: int):
    def decode(example):
        ids = tf.cast(example["tokens"], tf.int32)
        return {"tokens": encoding.pad_or_truncate(ids, max_length)}, tf.cast(
            example["label"], tf.int32
        )

    return dataset, decode


# Retrieval (AAN) ----------------------------------------------------------------------------


def aan_file(data_dir: str, split: str) -> str:
    name = f"new_aan_pairs.{AAN_FILE_SPLIT[split]}.tsv"
    return find_first(
        [os.path.join(data_dir, name), os.path.join(data_dir, "tsv_data", name)],
        "AAN retrieval file",
        "Unpack the LRA release (lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv, "
        "from https://storage.googleapis.com/long-range-arena/lra_release.gz) into DATA_DIR.",
    )


def retrieval_release(data_dir: str, split: str, max_length: int):
    path = aan_file(data_dir, split)
    records = _numbered_lines(path, skip_header=False)

    def decode(lineno, line):
        label, _, _, text1, text2 = _checked_fields(
            path, lineno, line, 5, 0, _BINARY, "label, id1, id2, text1, text2"
        )
        tokens = encoding.encode_bytes(tf.stack([text1, text2]), max_length)
        label = tf.cast(tf.strings.to_number(label, tf.float32), tf.int32)
        return {"tokens_1": tokens[0], "tokens_2": tokens[1]}, label

    return records, decode


def retrieval_prepared(dataset: tf.data.Dataset, max_length: int):
    def decode(example):
        tokens = encoding.encode_bytes(tf.stack([example["text_1"], example["text_2"]]), max_length)
        return {"tokens_1": tokens[0], "tokens_2": tokens[1]}, tf.cast(example["label"], tf.int32)

    return dataset, decode


# Pathfinder ---------------------------------------------------------------------------------


def pathfinder_root(data_dir: str, resolution: int, difficulty: str) -> str:
    sub = DIFFICULTY_DIRS[difficulty]
    return find_first(
        [
            os.path.join(data_dir, sub),
            os.path.join(data_dir, f"pathfinder{resolution}", sub),
            os.path.join(data_dir, "lra_release", f"pathfinder{resolution}", sub),
        ],
        f"Pathfinder {resolution}px {difficulty!r} folder",
        f"Generate it with `lra-data pathfinder --out DATA_DIR --resolution {resolution} "
        f"--difficulty {difficulty} --num_images 200000 --seed 0 --workers 8` (or unpack the "
        f"LRA release's pathfinder{resolution} folder there).",
    )


def pathfinder_index(root: str) -> tuple[list[str], list[int]]:
    """Reads every `metadata/<k>.npy` (text rows) under `root`: image paths and labels."""
    meta_dir = os.path.join(root, "metadata")
    if not os.path.isdir(meta_dir):
        raise FileNotFoundError(f"Pathfinder metadata folder not found: expected {meta_dir}.")
    names = [n for n in os.listdir(meta_dir) if n.endswith(".npy")]
    names.sort(key=lambda n: (len(n), n))  # numeric order for 0.npy, 1.npy, ..., 10.npy
    paths, labels = [], []
    for name in names:
        meta = os.path.join(meta_dir, name)
        with open(meta) as f:
            for lineno, row in enumerate(f, start=1):
                fields = row.split()
                if not fields:
                    continue
                if len(fields) < 4 or fields[3] not in ("0", "1"):
                    raise ValueError(
                        f"Malformed Pathfinder metadata in {meta}, line {lineno}: expected "
                        f"'imgs/<k> sample_<n>.png <n> <label 0/1> ...', got {row.strip()!r}."
                    )
                paths.append(os.path.join(root, fields[0], fields[1]))
                labels.append(int(fields[3]))
    if not paths:
        raise FileNotFoundError(f"No Pathfinder metadata rows under {meta_dir}.")
    return paths, labels


def split_indices(num: int, split: str, split_seed: int) -> np.ndarray:
    """The seeded 80/10/10 train/validation/test partition of `num` examples."""
    order = np.random.default_rng(split_seed).permutation(num)
    a, b = int(0.8 * num), int(0.9 * num)
    return {"train": order[:a], "validation": order[a:b], "test": order[b:]}[split]


def pathfinder_release(
    data_dir: str, split: str, resolution: int, difficulty: str = "hard", split_seed: int = 0
):
    root = pathfinder_root(data_dir, resolution, difficulty)
    paths, labels = pathfinder_index(root)
    keep = split_indices(len(paths), split, split_seed)
    # The release has empty files (e.g. pathfinder32/curv_baseline/imgs/0/sample_172.png).
    keep = [i for i in keep if os.path.getsize(paths[i]) > 0]
    records = tf.data.Dataset.from_tensor_slices(
        ([paths[i] for i in keep], np.asarray(labels, np.int32)[keep])
    )

    def decode(path, label):
        return _pixels(tf.io.read_file(path), resolution), label

    return records, decode


def _pixels(png: tf.Tensor, resolution: int) -> dict:
    image = tf.io.decode_png(png, channels=1)
    flat = tf.reshape(tf.cast(image, tf.int32), [resolution * resolution])
    return {"tokens": flat}


def pathfinder_prepared(dataset: tf.data.Dataset, resolution: int):
    def decode(example):
        return _pixels(example["image"], resolution), tf.cast(example["label"], tf.int32)

    return dataset, decode


# TFDS: IMDb and CIFAR-10 --------------------------------------------------------------------

_TFDS_HELP = (
    "{name} is read offline from a prepared TFDS folder. Prepare one on a machine with "
    "network access:\n"
    "  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
    "data_dir='{data_dir}').download_and_prepare()\"\n"
    "or put the archive ({archive}) in a manual folder and run\n"
    "  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
    "data_dir='{data_dir}').download_and_prepare(download_config=tfds.download."
    "DownloadConfig(manual_dir='MANUAL_DIR'))\"\n"
    "then copy {data_dir} to this machine."
)
_ARCHIVES = {
    "imdb_reviews": "aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/",
    "cifar10": "cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/",
}


def tfds_split(name: str, split: str, data_dir: str) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    try:
        return tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=False,
            shuffle_files=False,
            try_gcs=False,
            read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1),
        )
    except (AssertionError, FileNotFoundError, tfds.core.DatasetNotFoundError) as err:
        raise FileNotFoundError(
            f"TFDS data set {name!r} not found under {data_dir}. "
            + _TFDS_HELP.format(name=name, data_dir=data_dir, archive=_ARCHIVES[name])
        ) from err


def text_tfds(data_dir: str, split: str, max_length: int, split_seed: int = 0):
    if split == "test":
        records = tfds_split("imdb_reviews", "test", data_dir)
    else:
        # A seeded 10% of train validates (the reference validated on test).
        train = tfds_split("imdb_reviews", "train", data_dir).enumerate()

        def in_validation(index, example):
            seed = tf.stack([tf.cast(split_seed, tf.int64), index])
            return tf.random.stateless_uniform([], seed=seed) < 0.1

        if split == "validation":
            records = train.filter(in_validation)
        else:
            records = train.filter(lambda i, e: tf.logical_not(in_validation(i, e)))
        records = records.map(lambda i, e: e)

    def decode(example):
        tokens = encoding.encode_bytes(example["text"][None], max_length)[0]
        return {"tokens": tokens}, tf.cast(example["label"], tf.int32)

    return records, decode


def grayscale_ids(image: tf.Tensor) -> tf.Tensor:
    """uint8 RGB `[32, 32, 3]` to int32 ids `[1024]`: ITU-R 601 grayscale as the reference."""
    gray = tf.image.rgb_to_grayscale(image)
    return tf.reshape(tf.cast(gray, tf.int32), [-1])


def image_tfds(data_dir: str, split: str):
    tfds_name = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}[split]
    records = tfds_split("cifar10", tfds_name, data_dir)

    def decode(example):
        return {"tokens": grayscale_ids(example["image"])}, tf.cast(example["label"], tf.int32)

    return records, decode
