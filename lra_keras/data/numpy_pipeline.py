"""`load_numpy`: the LRA release formats read with numpy and Pillow, without TensorFlow.

The same tasks, arguments, checks, defaults and batches as `lra_keras.data.load` for the
formats `lra-data` generates and LRA released: ListOps TSVs, AAN retrieval TSVs and Pathfinder
folders (every resolution). The argument checks, file lookup, line checks and the Pathfinder
partition are shared with the tf.data reader (`tasks.resolve_load_arguments`,
`release_files.py`), so both accept and refuse the same data; tests/data/test_numpy_pipeline.py
compares their batches.

Differences from `load`, by design:

- With `shuffle`, the order is a numpy permutation of the whole split seeded by
  `(seed, epoch)`, not tf.data's buffered shuffle (which numpy cannot reproduce): the same
  examples in another order. Without shuffle the batches are identical.
- Prepared TFRecords (`lra-data prepare`, under `<data_dir>/tfds`) are not read; the release
  files are. A folder holding only prepared records is refused with an error that says so.
- text and image are TFDS data sets and need TensorFlow: refused.
- Bad lines are found while the split is indexed, before the first batch, and raise the
  `UserError` naming the file and line (tf.data raises when it reaches the line). Bad images
  raise theirs when their batch is read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np

from lra_keras.data import release_files as files
from lra_keras.data.tasks import (
    PATHFINDER_RESOLUTION,
    DataNotFoundError,
    resolve_load_arguments,
)
from lra_keras.errors import UserError

_TFDS_TASKS = {"text": "imdb_reviews", "image": "cifar10"}


class NumpyDataset:
    """The batches of one split as numpy arrays: `(features, label)`, int32.

    Attributes:
        num_examples: the examples in the split (empty Pathfinder images dropped).
        batch_size: the batch size.
        drop_remainder: True for train (as `load`): every batch is full. Otherwise the last
            batch keeps the remainder, so every example is seen once.
        element_spec: feature name -> (shape without the batch axis, numpy dtype), plus
            "label".
        num_batches: batches in one pass.

    `batches(epoch, start)` yields the batches of one pass; with shuffle their order is a
    permutation seeded by `(seed, epoch)` (the same for the same pair, another for another
    epoch), and `start` skips that many batches, so `(epoch, batch index)` resumes exactly.
    """

    def __init__(
        self,
        reader,
        num_examples: int,
        batch_size: int,
        drop_remainder: bool,
        element_spec: dict,
        shuffle: bool,
        seed: int,
    ):
        self._reader = reader
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.element_spec = element_spec
        self.shuffle = shuffle
        self.seed = seed

    @property
    def num_batches(self) -> int:
        if self.drop_remainder:
            return self.num_examples // self.batch_size
        return math.ceil(self.num_examples / self.batch_size)

    def order(self, epoch: int = 0) -> np.ndarray:
        """The example indices of one pass, in the order `batches(epoch)` yields them."""
        _check_count("epoch", epoch)
        if not self.shuffle:
            return np.arange(self.num_examples)
        # SeedSequence takes non-negative entries; distinct seeds stay distinct.
        rng = np.random.default_rng([self.seed % 2**64, epoch])
        return rng.permutation(self.num_examples)

    def batches(
        self, epoch: int = 0, start: int = 0
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """The batches of pass `epoch`, from batch index `start` on."""
        _check_count("start", start)
        if start > self.num_batches:
            raise ValueError(
                f"start={start} is past the {self.num_batches} batches of a pass "
                f"({self.num_examples} examples, batch size {self.batch_size})."
            )
        order = self.order(epoch)
        return self._batches(order, start)

    def _batches(self, order: np.ndarray, start: int):
        with self._reader.open() as read:
            for b in range(start, self.num_batches):
                yield read(order[b * self.batch_size : (b + 1) * self.batch_size])

    def __iter__(self):
        return self.batches(0)

    def __len__(self) -> int:
        return self.num_batches


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}.")


def load_numpy(
    task: str,
    split: str,
    data_dir: str,
    batch_size: int,
    max_length: int | None = None,
    shuffle: bool | None = None,
    seed: int = 0,
    **task_options,
) -> NumpyDataset:
    """Returns the batches of an LRA split read with numpy and Pillow (no TensorFlow).

    The arguments, task options, defaults, checks, features, labels and dtypes are
    `lra_keras.data.load`'s (see it): `{"tokens": int32 [B, L]}` for listops and the
    pathfinder tasks, `{"tokens_1", "tokens_2"}` for retrieval, int32 labels `[B]`. Without
    shuffle the batches equal `load`'s; with it the order differs (see the module docstring).

    Raises:
        UserError (a ValueError): everything `load` raises for the same call, a malformed
            line (naming the file and line) when the split is indexed, a bad image (naming
            the file) when its batch is read, and text or image (TFDS, which needs TensorFlow).
            A missing data set raises `DataNotFoundError` (also a FileNotFoundError), saying
            so when only prepared TFRecords are there.
    """
    args = resolve_load_arguments(task, split, batch_size, max_length, shuffle, task_options)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise UserError(f"seed must be an int, got {seed!r}.")
    if task in _TFDS_TASKS:
        raise UserError(
            f"Task {task!r} is read from TensorFlow Datasets ({_TFDS_TASKS[task]}), which needs "
            "TensorFlow: install tensorflow and tensorflow-datasets and use "
            "lra_keras.data.load. The numpy reader takes listops, retrieval and the pathfinder "
            "tasks."
        )
    try:
        reader = _reader(task, split, data_dir, args)
    except DataNotFoundError as err:
        prepared = os.path.join(data_dir, "tfds")
        if not os.path.isdir(prepared):
            raise
        raise DataNotFoundError(
            f"{err} Only prepared TFRecords ({prepared}, from `lra-data prepare`) are there; "
            "the numpy reader reads the release files, not the records: put the release "
            "files beside them, or read the records with lra_keras.data.load (TensorFlow)."
        ) from err
    return NumpyDataset(
        reader,
        reader.num_examples,
        batch_size,
        args.drop_remainder,
        reader.element_spec,
        args.shuffle,
        int(seed),
    )


def _reader(task: str, split: str, data_dir: str, args):
    if task == "listops":
        path = files.listops_file(data_dir, split, args.options["task_name"])
        reader = _TsvReader(path, files.LISTOPS_FORMAT, args.max_length, _listops_example)
        what = "listops"
    elif task == "retrieval":
        path = files.aan_file(data_dir, split)
        reader = _TsvReader(path, files.AAN_FORMAT, args.max_length, _retrieval_example)
        what = "retrieval"
    else:
        resolution = PATHFINDER_RESOLUTION[task]
        paths, labels = files.pathfinder_split(
            data_dir,
            split,
            resolution,
            args.options["difficulty"],
            args.options["split_seed"],
            args.need,
        )
        return _PathfinderReader(paths, labels, resolution, args.downsample)
    files.require_examples(what, split, path, reader.num_examples, args.need)
    return reader


# Readers: `open()` is a context manager giving `read(indices) -> (features, labels)`. ---------


class _Opened:
    def __init__(self, read, close=None):
        self._read, self._close = read, close

    def __enter__(self):
        return self._read

    def __exit__(self, *exc):
        if self._close is not None:
            self._close()


def _listops_example(fields: list[bytes], max_length: int):
    ids = files.listops_ids_py(fields[0].decode("utf-8"))
    return {"tokens": _padded(ids, max_length)}, int(fields[1])


def _retrieval_example(fields: list[bytes], max_length: int):
    features = {
        "tokens_1": _byte_ids(fields[3], max_length),
        "tokens_2": _byte_ids(fields[4], max_length),
    }
    return features, int(float(fields[0]))


def _padded(ids, max_length: int) -> np.ndarray:
    out = np.zeros(max_length, np.int32)
    ids = ids[:max_length]
    out[: len(ids)] = ids
    return out


def _byte_ids(text: bytes, max_length: int) -> np.ndarray:
    """Bytes as byte + 1, truncated and 0-padded (`encoding.encode_bytes`)."""
    out = np.zeros(max_length, np.int32)
    clipped = np.frombuffer(text[:max_length], np.uint8)
    out[: len(clipped)] = clipped.astype(np.int32) + 1
    return out


class _TsvReader:
    """A release TSV indexed by its data lines' byte offsets; lines are read per batch."""

    def __init__(self, path: str, fmt: files.TsvFormat, max_length: int, example):
        self.path, self.fmt, self.max_length, self._example = path, fmt, max_length, example
        linenos, offsets = [], []
        # Every line is checked now: a bad one is named before the first batch.
        for lineno, offset, line in files.tsv_records(path, fmt):
            files.parse_tsv_line(path, lineno, line, fmt)
            linenos.append(lineno)
            offsets.append(offset)
        self.linenos = np.asarray(linenos, np.int64)
        self.offsets = np.asarray(offsets, np.int64)
        self.num_examples = len(offsets)
        names = ("tokens",) if fmt is files.LISTOPS_FORMAT else ("tokens_1", "tokens_2")
        spec = {name: ((max_length,), np.dtype(np.int32)) for name in names}
        self.element_spec = {**spec, "label": ((), np.dtype(np.int32))}

    def open(self):
        f = open(self.path, "rb")  # noqa: SIM115 (closed by _Opened)

        def read(indices: np.ndarray):
            examples = []
            for i in indices:
                lineno = int(self.linenos[i])
                line = files.read_tsv_line(f, int(self.offsets[i]), lineno)
                fields = files.parse_tsv_line(self.path, lineno, line, self.fmt)
                examples.append(self._example(fields, self.max_length))
            return _stack(examples)

        return _Opened(read, f.close)


class _PathfinderReader:
    def __init__(self, paths, labels, resolution: int, downsample):
        self.paths, self.labels, self.resolution = paths, labels, resolution
        self.downsample = downsample
        self.num_examples = len(paths)
        side = resolution if downsample is None else downsample[1]
        self.element_spec = {
            "tokens": ((side * side,), np.dtype(np.int32)),
            "label": ((), np.dtype(np.int32)),
        }

    def _tokens(self, path: str) -> np.ndarray:
        image = files.read_png(path, self.resolution).astype(np.int32)
        if self.downsample is not None:
            _, side = self.downsample
            k = self.resolution // side
            # tf.image.resize(method="area") with an integer factor: block means, rounded
            # half to even as tf.round.
            means = image.reshape(side, k, side, k).astype(np.float32).mean(axis=(1, 3))
            image = np.round(means).astype(np.int32)
        return image.reshape(-1)

    def open(self):
        def read(indices: np.ndarray):
            tokens = np.stack([self._tokens(self.paths[i]) for i in indices])
            return {"tokens": tokens}, self.labels[indices].astype(np.int32)

        return _Opened(read)


def _stack(examples):
    names = examples[0][0].keys()
    features = {name: np.stack([e[0][name] for e in examples]) for name in names}
    return features, np.asarray([e[1] for e in examples], np.int32)
