"""Readers of the LRA release files and the TFDS data sets, as pure tf.data record streams.

Each reader returns `(records, decode)`: `records` is a dataset of cheap elements (lines, file
paths, encoded examples) that `load` shuffles, and `decode` turns the (shuffled) records into
`(features, label)` examples. Parsing errors are reported by `tf.debugging.Assert` ops whose
message is one line naming the file (and line), raised when the bad line or image is read as
a `tf.errors.InvalidArgumentError`; `user_error_from` (lazy_errors.py) turns it into the
`UserError` the CLIs print. The files' layout, the Python twins of the line checks
(`tsv_lines`, `parse_tsv_line`, which accept and refuse exactly the same lines) and the
Pathfinder index live in release_files.py, which needs no TensorFlow. Before any record is read,
each reader checks that its split holds enough examples for one batch (`need`), so an empty or
too small split is named instead of yielding nothing.
"""

from __future__ import annotations

import tensorflow as tf

from lra_keras.data import encoding
from lra_keras.data.release_files import (  # noqa: F401 (re-exported for builders and tests)
    AAN_FORMAT,
    CORRUPT_PNG,
    LISTOPS_FORMAT,
    PNG_END,
    PNG_SIGNATURE,
    UTF8_BOM,
    TsvFormat,
    aan_file,
    count_tsv_examples,
    listops_file,
    parse_tsv_line,
    pathfinder_index,
    pathfinder_metadata_files,
    pathfinder_root,
    pathfinder_split,
    require_examples,
    split_indices,
    tsv_lines,
)
from lra_keras.data.tasks import DataNotFoundError


def _mapped(decode):
    """The stream decoder of a per-record `decode`: a deterministic parallel map."""

    def stream(records: tf.data.Dataset) -> tf.data.Dataset:
        return records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return stream


def _numbered_lines(path: str, fmt: TsvFormat) -> tf.data.Dataset:
    """(line number, line) of the data lines of a release TSV, as `tsv_lines` yields them."""
    lines = tf.data.TextLineDataset(path).enumerate(start=1)

    def clean(n, line):
        line = tf.strings.regex_replace(line, "\r$", "")
        bom = tf.logical_and(tf.equal(n, 1), tf.equal(tf.strings.substr(line, 0, 3), UTF8_BOM))
        return n, tf.where(bom, tf.strings.substr(line, 3, -1), line)

    lines = lines.map(clean)
    if fmt.header is not None:
        header = fmt.header.decode()
        lines = lines.filter(
            lambda n, line: tf.logical_not(tf.logical_and(tf.equal(n, 1), tf.equal(line, header)))
        )
    return lines.filter(lambda n, line: tf.strings.length(tf.strings.strip(line)) > 0)


def _valid_utf8(text: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace"), text)


def _shown(text: tf.Tensor, length: int) -> tf.Tensor:
    """A prefix of `text` made valid UTF-8 (bad bytes replaced, whole characters only).

    A message with invalid UTF-8 would lose the file and line in Python's error. Tabs are
    shown as `\\t`, as Python's repr in `parse_tsv_line` shows them.
    """
    valid = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
    prefix = tf.strings.substr(valid, 0, length, unit="UTF8_CHAR")
    return tf.strings.regex_replace(prefix, "\t", "\\\\t")


def _checked_fields(path: str, lineno, line, fmt: TsvFormat):
    """Splits a TSV line into its fields, asserting the count, the label and the text fields.

    The assertion's message is one line, as `parse_tsv_line`'s: the file, the line number,
    what was expected, what is wrong and the line's start.
    """
    num_fields = fmt.num_fields
    fields = tf.strings.split(line, "\t")
    count = tf.size(fields)
    fields = tf.concat([fields, tf.fill([num_fields], "")], 0)[:num_fields]
    counted = tf.equal(count, num_fields)
    labelled = tf.strings.regex_full_match(fields[fmt.label_index], fmt.label_pattern)
    problem = tf.where(
        counted,
        tf.strings.join(
            [f"field {fmt.label_index + 1} is '", _shown(fields[fmt.label_index], 40), "'"]
        ),
        tf.strings.join(["got ", tf.strings.as_string(count), " fields"]),
    )
    ok = tf.logical_and(counted, labelled)
    for i in fmt.text_fields:
        utf8 = _valid_utf8(fields[i])
        problem = tf.where(ok, f"field {i + 1} is not UTF-8 text", problem)
        ok = tf.logical_and(ok, utf8)
    message = tf.strings.join(
        [
            f"Malformed line in {path}, line ",
            tf.strings.as_string(lineno),
            f": expected {num_fields} tab-separated fields ({fmt.what}); ",
            problem,
            ": '",
            _shown(line, 200),
            "'.",
        ]
    )
    check = tf.debugging.Assert(ok, [message])
    with tf.control_dependencies([check]):
        return [tf.identity(fields[i]) for i in range(num_fields)]


# ListOps ------------------------------------------------------------------------------------


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

    return records, _mapped(decode)


def listops_prepared(dataset: tf.data.Dataset, max_length: int):
    def decode(example):
        ids = tf.cast(example["tokens"], tf.int32)
        return {"tokens": encoding.pad_or_truncate(ids, max_length)}, tf.cast(
            example["label"], tf.int32
        )

    return dataset, _mapped(decode)


# Retrieval (AAN) ----------------------------------------------------------------------------


def retrieval_release(data_dir: str, split: str, max_length: int, need: int = 1):
    path = aan_file(data_dir, split)
    require_examples("retrieval", split, path, count_tsv_examples(path, AAN_FORMAT, need), need)
    records = _numbered_lines(path, AAN_FORMAT)

    def decode(lineno, line):
        label, _, _, text1, text2 = _checked_fields(path, lineno, line, AAN_FORMAT)
        tokens = encoding.encode_bytes(tf.stack([text1, text2]), max_length)
        label = tf.cast(tf.strings.to_number(label, tf.float32), tf.int32)
        return {"tokens_1": tokens[0], "tokens_2": tokens[1]}, label

    return records, _mapped(decode)


def retrieval_prepared(dataset: tf.data.Dataset, max_length: int):
    def decode(example):
        tokens = encoding.encode_bytes(tf.stack([example["text_1"], example["text_2"]]), max_length)
        return {"tokens_1": tokens[0], "tokens_2": tokens[1]}, tf.cast(example["label"], tf.int32)

    return dataset, _mapped(decode)


# Pathfinder ---------------------------------------------------------------------------------


def pathfinder_release(
    data_dir: str,
    split: str,
    resolution: int,
    difficulty: str = "hard",
    split_seed: int = 0,
    need: int = 1,
):
    paths, labels = pathfinder_split(data_dir, split, resolution, difficulty, split_seed, need)
    records = tf.data.Dataset.from_tensor_slices((paths, labels))
    return records, lambda shuffled: _decoded_images(shuffled, resolution)


def _png_problem(png: tf.Tensor, resolution: int):
    """("" or what is wrong, width, height): `release_files.png_problem` in graph ops.

    The signature, the IHDR size and the final IEND chunk name a non-PNG, a wrong-size or a
    truncated file; damage inside the compressed data is found by the decoder.
    """
    padded = tf.strings.join([png, b"\0" * 24])
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, 24), tf.uint8), tf.int64)
    scale = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)
    width = tf.reduce_sum(head[16:20] * scale)
    height = tf.reduce_sum(head[20:24] * scale)
    is_png = tf.logical_and(
        tf.equal(tf.strings.substr(padded, 0, 8), PNG_SIGNATURE),
        tf.equal(tf.strings.substr(padded, 12, 4), b"IHDR"),
    )
    whole = tf.equal(tf.strings.substr(tf.strings.join([b"\0" * 12, png]), -12, 12), PNG_END)
    sized = tf.logical_and(tf.equal(width, resolution), tf.equal(height, resolution))
    problem = tf.where(sized, "", "has the wrong size")
    problem = tf.where(whole, problem, "is truncated (no IEND chunk at its end)")
    problem = tf.where(is_png, problem, "is not a PNG file")
    return problem, width, height


def _bad_image_message(path, problem, resolution: int, width, height) -> tf.Tensor:
    """`release_files.bad_image` as a string tensor."""
    return tf.strings.join(
        [
            "Bad Pathfinder image ",
            path,
            ": ",
            problem,
            f" (expected a whole {resolution}x{resolution} PNG; got width ",
            tf.strings.as_string(width),
            ", height ",
            tf.strings.as_string(height),
            "). Regenerate or replace it.",
        ]
    )


_UNDECODABLE = (
    "cannot be read or decoded (corrupt compressed pixel data, or the file went away). "
    "Regenerate or replace it."
)


def _decoded_images(records: tf.data.Dataset, resolution: int) -> tf.data.Dataset:
    """Decodes `(path, label)` records to `({"tokens"}, label)`, naming any bad image.

    `tf.io.decode_png` cannot say which file it failed on, so a failed decode is dropped
    (`ignore_errors`) and the next record names it: each record carries its position in the
    pass and the previous record's path, and a gap in the positions is the failed image. A
    sentinel record at the end names a failure in the last image. All of it is tf.data, so
    the iterator stays checkpointable.
    """
    end = tf.data.Dataset.from_tensors((tf.constant(""), tf.constant(-1, tf.int32)))
    zero = tf.constant(0, tf.int64)

    def number(state, record):
        position, previous = state
        path, label = record
        return (position + 1, path), (position, previous, path, label)

    numbered = records.concatenate(end).scan((zero, tf.constant("")), number)

    def decode(position, previous, path, label):
        is_end = label < 0
        png = tf.cond(is_end, lambda: tf.constant(b""), lambda: tf.io.read_file(path))
        problem, width, height = _png_problem(png, resolution)
        problem = tf.where(is_end, "", problem)
        pixels = tf.cond(
            tf.logical_or(is_end, tf.not_equal(problem, "")),
            lambda: tf.zeros([resolution, resolution, 1], tf.uint8),
            lambda: tf.io.decode_png(png, channels=1),
        )
        image = (problem, width, height, pixels)
        return position, previous, path, label, image

    decoded = numbered.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    decoded = decoded.ignore_errors()

    def check(expected, element):
        position, previous, path, label, (problem, width, height, pixels) = element
        dropped = tf.debugging.Assert(
            tf.equal(position, expected),
            [tf.strings.join(["Bad Pathfinder image ", previous, f": {_UNDECODABLE}"])],
        )
        bad = tf.debugging.Assert(
            tf.equal(problem, ""), [_bad_image_message(path, problem, resolution, width, height)]
        )
        with tf.control_dependencies([dropped, bad]):
            flat = tf.reshape(tf.cast(pixels, tf.int32), [resolution * resolution])
            return position + 1, ({"tokens": flat}, tf.identity(label))

    checked = decoded.scan(zero, check)
    return checked.filter(lambda features, label: label >= 0)


def _pixels(png: tf.Tensor, resolution: int) -> dict:
    image = tf.io.decode_png(png, channels=1)
    flat = tf.reshape(tf.cast(image, tf.int32), [resolution * resolution])
    return {"tokens": flat}


def pathfinder_prepared(dataset: tf.data.Dataset, resolution: int):
    # `lra-data prepare` decoded and checked every image.
    def decode(example):
        return _pixels(example["image"], resolution), tf.cast(example["label"], tf.int32)

    return dataset, _mapped(decode)


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

    return records, _mapped(decode)


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

    return records, _mapped(decode)
