"""Readers of the LRA release files and the TFDS data sets, as pure tf.data record streams.

Each reader returns `(records, decode)`: `records` is a dataset of cheap elements (lines, file
paths, encoded examples) that `load` shuffles, and `decode` maps one record to
`(features, label)`. Parsing errors are reported by `tf.debugging.Assert` ops that name the
file and line, raised when the bad line is read. `lra-data prepare` parses the same files with
the Python twins below (`tsv_lines`, `parse_tsv_line`), which accept and refuse exactly the same
lines. Before any record is read, each reader checks that its split holds enough examples for
one batch (`need`), so an empty or too small split is named instead of yielding nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from lra_keras.data import encoding
from lra_keras.data.tasks import (
    AAN_FILE_SPLIT,
    DIFFICULTY_DIRS,
    LISTOPS_FILE_SPLIT,
    DataNotFoundError,
    find_first,
)
from lra_keras.errors import UserError

_SPACE = "[ \\t\\n\\v\\f\\r]*"  # the same class in RE2 (tf.strings) and Python's re


class TsvFormat(NamedTuple):
    """One release TSV layout: field count, the label field and its pattern, text fields."""

    num_fields: int
    label_index: int
    label_pattern: str  # full match, RE2 and Python syntax alike
    what: str
    header: bytes | None  # an optional first line, skipped when present
    text_fields: tuple[int, ...]  # fields that must be UTF-8


LISTOPS_FORMAT = TsvFormat(
    2, 1, f"{_SPACE}[0-9]{_SPACE}", "Source, Target (a digit 0-9)", b"Source\tTarget", (0,)
)
# AAN labels are written as floats: 0, 1, 0.0, 1.0. Texts may be any bytes.
AAN_FORMAT = TsvFormat(
    5, 0, f"{_SPACE}[01](\\.0*)?{_SPACE}", "label 0/1, id1, id2, text1, text2", None, ()
)


def tsv_lines(path: str, fmt: TsvFormat) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its end) of the data lines of a release TSV.

    Blank lines are skipped, and the first line when it is the format's header: a file
    without the header loses no example.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            line = line[:-1] if line.endswith(b"\r") else line
            if lineno == 1 and fmt.header is not None and line == fmt.header:
                continue
            if line.strip():
                yield lineno, line


def parse_tsv_line(path: str, lineno: int, line: bytes, fmt: TsvFormat) -> list[bytes]:
    """The fields of one data line, or a UserError naming the file and line."""
    fields = line.split(b"\t")
    problem = None
    if len(fields) != fmt.num_fields:
        problem = f"got {len(fields)} fields"
    elif not re.fullmatch(fmt.label_pattern.encode(), fields[fmt.label_index]):
        problem = f"field {fmt.label_index + 1} is {fields[fmt.label_index][:40]!r}"
    else:
        for i in fmt.text_fields:
            try:
                fields[i].decode("utf-8")
            except UnicodeDecodeError:
                problem = f"field {i + 1} is not UTF-8 text"
    if problem:
        shown = line.decode("utf-8", errors="replace")[:200]
        raise UserError(
            f"Malformed line in {path}, line {lineno}: expected {fmt.num_fields} "
            f"tab-separated fields ({fmt.what}); {problem}: {shown!r}."
        )
    return fields


def count_tsv_examples(path: str, fmt: TsvFormat, limit: int) -> int:
    """The number of data lines of a release TSV, counting no further than `limit`."""
    count = 0
    for _ in tsv_lines(path, fmt):
        count += 1
        if count >= limit:
            break
    return count


def require_examples(what: str, split: str, where: str, count: int, need: int) -> None:
    """Raises a UserError when a split holds fewer than `need` examples (one batch)."""
    if count >= need:
        return
    if count == 0:
        raise UserError(
            f"The {split} split of {what} is empty: {where} holds no examples (an empty file, "
            "a header only, or nothing left after filtering). Regenerate or replace it."
        )
    raise UserError(
        f"The {split} split of {what} has only {count} examples ({where}), fewer than the "
        f"batch size {need}; training batches drop the remainder, so it would yield no batch. "
        "Use a smaller batch size or more examples."
    )


def _numbered_lines(path: str, fmt: TsvFormat) -> tf.data.Dataset:
    """(line number, line) of the data lines of a release TSV, as `tsv_lines` yields them."""
    lines = tf.data.TextLineDataset(path).enumerate(start=1)
    lines = lines.map(lambda n, line: (n, tf.strings.regex_replace(line, "\r$", "")))
    if fmt.header is not None:
        header = fmt.header.decode()
        lines = lines.filter(
            lambda n, line: tf.logical_not(tf.logical_and(tf.equal(n, 1), tf.equal(line, header)))
        )
    return lines.filter(lambda n, line: tf.strings.length(tf.strings.strip(line)) > 0)


def _valid_utf8(text: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace"), text)


def _checked_fields(path: str, lineno, line, fmt: TsvFormat):
    """Splits a TSV line into its fields, asserting the count, the label and the text fields."""
    num_fields = fmt.num_fields
    fields = tf.strings.split(line, "\t")
    count = tf.size(fields)
    fields = tf.concat([fields, tf.fill([num_fields], "")], 0)[:num_fields]
    ok = tf.logical_and(
        tf.equal(count, num_fields),
        tf.strings.regex_full_match(fields[fmt.label_index], fmt.label_pattern),
    )
    for i in fmt.text_fields:
        ok = tf.logical_and(ok, _valid_utf8(fields[i]))
    # The quoted prefix is made valid UTF-8 (bad bytes replaced, whole characters only):
    # a message with invalid UTF-8 would lose the file and line in Python's error.
    shown = tf.strings.unicode_transcode(line, "UTF-8", "UTF-8", errors="replace")
    check = tf.debugging.Assert(
        ok,
        [
            f"Malformed line in {path}, line",
            lineno,
            f": expected {num_fields} tab-separated fields ({fmt.what}), the label matching "
            f"{fmt.label_pattern!r} and UTF-8 text; got",
            count,
            "fields:",
            tf.strings.substr(shown, 0, 200, unit="UTF8_CHAR"),
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


def listops_release(
    data_dir: str, split: str, max_length: int, task_name: str = "basic", need: int = 1
):
    path = listops_file(data_dir, split, task_name)
    have = count_tsv_examples(path, LISTOPS_FORMAT, need)
    require_examples("listops", split, path, have, need)
    records = _numbered_lines(path, LISTOPS_FORMAT)

    def decode(lineno, line):
        source, target = _checked_fields(path, lineno, line, LISTOPS_FORMAT)
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


def retrieval_release(data_dir: str, split: str, max_length: int, need: int = 1):
    path = aan_file(data_dir, split)
    require_examples("retrieval", split, path, count_tsv_examples(path, AAN_FORMAT, need), need)
    records = _numbered_lines(path, AAN_FORMAT)

    def decode(lineno, line):
        label, _, _, text1, text2 = _checked_fields(path, lineno, line, AAN_FORMAT)
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


def _pathfinder_how(resolution: int, difficulty: str) -> str:
    return (
        f"Generate it with `lra-data pathfinder --out DATA_DIR --resolution {resolution} "
        f"--difficulty {difficulty} --num_images 200000 --seed 0 --workers 8` (or unpack the "
        f"LRA release's pathfinder{resolution} folder there)."
    )


def pathfinder_root(data_dir: str, resolution: int, difficulty: str) -> str:
    sub = DIFFICULTY_DIRS[difficulty]
    return find_first(
        [
            os.path.join(data_dir, sub),
            os.path.join(data_dir, f"pathfinder{resolution}", sub),
            os.path.join(data_dir, "lra_release", f"pathfinder{resolution}", sub),
        ],
        f"Pathfinder {resolution}px {difficulty!r} folder",
        _pathfinder_how(resolution, difficulty),
    )


def pathfinder_metadata_files(root: str) -> list[str]:
    """The `metadata/<k>.npy` files under a difficulty folder, in numeric order."""
    meta_dir = os.path.join(root, "metadata")
    if not os.path.isdir(meta_dir):
        return []
    names = [n for n in os.listdir(meta_dir) if n.endswith(".npy")]
    names.sort(key=lambda n: (len(n), n))  # numeric order for 0.npy, 1.npy, ..., 10.npy
    return [os.path.join(meta_dir, n) for n in names]


def pathfinder_index(
    root: str, resolution: int = 32, difficulty: str = "hard"
) -> tuple[list[str], list[int]]:
    """Reads every `metadata/<k>.npy` (text rows) under `root`: image paths and labels.

    A row whose image path leaves `root` (`..`, an absolute path) is refused.
    """
    meta_dir = os.path.join(root, "metadata")
    if not os.path.isdir(meta_dir):
        raise DataNotFoundError(
            f"Pathfinder metadata folder not found: expected {meta_dir} (metadata/<k>.npy text "
            f"rows beside imgs/<k>/). {_pathfinder_how(resolution, difficulty)}"
        )
    base = os.path.normpath(os.path.abspath(root))
    paths, labels = [], []
    for meta in pathfinder_metadata_files(root):
        with open(meta, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                row = raw.decode("utf-8", errors="replace")
                fields = row.split()
                if not fields:
                    continue
                if "\ufffd" in row or len(fields) < 4 or fields[3] not in ("0", "1"):
                    raise UserError(
                        f"Malformed Pathfinder metadata in {meta}, line {lineno}: expected "
                        f"'imgs/<k> sample_<n>.png <n> <label 0/1> ...', got {row.strip()!r}."
                    )
                path = os.path.normpath(os.path.join(base, fields[0], fields[1]))
                if (
                    os.path.isabs(fields[0])
                    or os.path.isabs(fields[1])
                    or (os.path.commonpath([base, path]) != base)
                ):
                    raise UserError(
                        f"Pathfinder metadata in {meta}, line {lineno} names an image outside "
                        f"the data folder {root}: {fields[0]}/{fields[1]}. Image paths must be "
                        "relative and stay inside it (imgs/<k> sample_<n>.png)."
                    )
                paths.append(path)
                labels.append(int(fields[3]))
    if not paths:
        raise DataNotFoundError(
            f"No Pathfinder metadata rows under {meta_dir}. "
            f"{_pathfinder_how(resolution, difficulty)}"
        )
    return paths, labels


def split_indices(num: int, split: str, split_seed: int) -> np.ndarray:
    """The seeded 80/10/10 train/validation/test partition of `num` examples."""
    order = np.random.default_rng(split_seed).permutation(num)
    a, b = int(0.8 * num), int(0.9 * num)
    return {"train": order[:a], "validation": order[a:b], "test": order[b:]}[split]


def pathfinder_release(
    data_dir: str,
    split: str,
    resolution: int,
    difficulty: str = "hard",
    split_seed: int = 0,
    need: int = 1,
):
    root = pathfinder_root(data_dir, resolution, difficulty)
    paths, labels = pathfinder_index(root, resolution, difficulty)
    keep = split_indices(len(paths), split, split_seed)
    # The release has empty files (e.g. pathfinder32/curv_baseline/imgs/0/sample_172.png).
    nonempty = []
    for i in keep:
        try:
            if os.path.getsize(paths[i]) > 0:
                nonempty.append(i)
        except OSError as err:
            raise DataNotFoundError(
                f"Pathfinder image {paths[i]}, listed in {root}/metadata, cannot be read "
                f"({err.strerror}). {_pathfinder_how(resolution, difficulty)}"
            ) from err
    keep = nonempty
    require_examples(f"pathfinder {resolution}px {difficulty}", split, root, len(keep), need)
    records = tf.data.Dataset.from_tensor_slices(
        ([paths[i] for i in keep], np.asarray(labels, np.int32)[keep])
    )

    def decode(path, label):
        png = _checked_png(path, tf.io.read_file(path), resolution)
        return _pixels(png, resolution), label

    return records, decode


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC


def _checked_png(path: tf.Tensor, png: tf.Tensor, resolution: int) -> tf.Tensor:
    """Asserts, naming the file, that `png` is a whole PNG of `resolution` x `resolution`.

    The checks read the signature, the IHDR size and the final IEND chunk, so a non-PNG, a
    wrong-size or a truncated file is named; damage inside the compressed data is left to the
    decoder, which cannot name the file.
    """
    padded = tf.strings.join([png, b"\0" * 24])
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, 24), tf.uint8), tf.int64)
    scale = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)
    width = tf.reduce_sum(head[16:20] * scale)
    height = tf.reduce_sum(head[20:24] * scale)
    is_png = tf.logical_and(
        tf.equal(tf.strings.substr(padded, 0, 8), _PNG_SIGNATURE),
        tf.equal(tf.strings.substr(padded, 12, 4), b"IHDR"),
    )
    whole = tf.equal(tf.strings.substr(tf.strings.join([b"\0" * 12, png]), -12, 12), _PNG_END)
    sized = tf.logical_and(tf.equal(width, resolution), tf.equal(height, resolution))
    reason = tf.where(
        is_png,
        tf.where(whole, "has the wrong size", "is truncated (no IEND chunk at its end)"),
        "is not a PNG file",
    )
    check = tf.debugging.Assert(
        tf.logical_and(is_png, tf.logical_and(whole, sized)),
        [
            "Bad Pathfinder image",
            path,
            ":",
            reason,
            f"(expected a whole {resolution}x{resolution} PNG; width, height):",
            width,
            height,
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(png)


def _pixels(png: tf.Tensor, resolution: int) -> dict:
    image = tf.io.decode_png(png, channels=1)
    flat = tf.reshape(tf.cast(image, tf.int32), [resolution * resolution])
    return {"tokens": flat}


def pathfinder_prepared(dataset: tf.data.Dataset, resolution: int):
    # `lra-data prepare` decoded and checked every image.
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
        raise DataNotFoundError(
            f"TFDS data set {name!r} not found under {data_dir}. "
            + _TFDS_HELP.format(name=name, data_dir=data_dir, archive=_ARCHIVES[name])
        ) from err


def _require_tfds(name: str, split: str, data_dir: str, records, need: int) -> None:
    count = int(records.cardinality())
    if count >= 0:  # known for TFDS splits; unknown after a filter
        require_examples(name, split, f"the TFDS folder {data_dir}", count, need)


def text_tfds(data_dir: str, split: str, max_length: int, split_seed: int = 0, need: int = 1):
    if split == "test":
        records = tfds_split("imdb_reviews", "test", data_dir)
        _require_tfds("imdb_reviews", split, data_dir, records, need)
    else:
        # A seeded 10% of train validates (the reference validated on test).
        train = tfds_split("imdb_reviews", "train", data_dir)
        _require_tfds("imdb_reviews", "train", data_dir, train, 1)
        train = train.enumerate()

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


def image_tfds(data_dir: str, split: str, need: int = 1):
    tfds_name = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}[split]
    records = tfds_split("cifar10", tfds_name, data_dir)
    _require_tfds("cifar10", split, data_dir, records, need)

    def decode(example):
        return {"tokens": grayscale_ids(example["image"])}, tf.cast(example["label"], tf.int32)

    return records, decode
