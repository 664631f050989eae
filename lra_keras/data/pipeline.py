"""`load`: the tf.data input pipeline of every LRA task."""

from __future__ import annotations

import tensorflow as tf

from lra_keras.data import readers
from lra_keras.data.tasks import (
    PATHFINDER_RESOLUTION,
    SHUFFLE_BUFFER,
    resolve_load_arguments,
)


def load(
    task: str,
    split: str,
    data_dir: str,
    batch_size: int,
    max_length: int | None = None,
    shuffle: bool | None = None,
    seed: int = 0,
    **task_options,
) -> tf.data.Dataset:
    """Returns the batched `tf.data.Dataset` of `(features, label)` for an LRA task.

    Features match the zoo's inputs: `{"tokens": int32 [B, L]}` for the classifiers and
    `{"tokens_1", "tokens_2"}` for retrieval; labels are int32 `[B]`. The pipeline is pure
    tf.data (its iterator can be checkpointed) and deterministic for a given `seed`.

    Args:
        task: one of `TASKS` (listops, text, retrieval, image, pathfinder, pathfinder64, pathx,
            pathfinder256).
        split: "train", "validation" or "test".
        data_dir: the task's folder: ListOps `basic_*.tsv`, AAN `new_aan_pairs.*.tsv`, a TFDS
            folder with `imdb_reviews` / `cifar10`, or a Pathfinder resolution folder holding
            `curv_*` difficulty folders. LRA release folders work too. If `lra-data prepare` has
            written TFRecords under `<data_dir>/tfds`, they are read instead.
        batch_size: the global batch size. Train batches drop the remainder (static batch
            shape); validation and test keep it, so every example is evaluated once.
        max_length: token length (truncate, pad with 0); defaults: listops 2000, text 4000,
            retrieval 4000 (per document). Image lengths are fixed by the resolution (None or
            exactly res*res); Pathfinder also takes s*s with s dividing the resolution, and
            then area-downsamples the images to s x s (the zoo's `tiny` preset uses 32 x 32).
        shuffle: shuffle examples (not batches) with a seeded buffer; default: train only.
        seed: the shuffle seed; each pass (e.g. after `.repeat()`) reshuffles deterministically.
        **task_options: listops `task_name="basic"`; text `split_seed=0` (which 10% of train
            validates); pathfinder tasks `difficulty="hard"` (easy, intermediate, hard) and
            `split_seed=0` (the 80/10/10 partition).

    Returns:
        A `tf.data.Dataset` of `(features, label)` batches (not repeated).

    Raises:
        UserError (a ValueError): a bad argument; a split with fewer examples than one batch
            (train) or none (validation, test), naming the file; prepared records whose
            release files changed since `lra-data prepare` (rerun it); a Pathfinder metadata row
            whose image path leaves the data folder; a folder that `lra-data` left incomplete
            (regenerate it). A missing data set raises its subclass `DataNotFoundError` (also a
            FileNotFoundError), which says what file is expected where and how to generate or
            fetch it. A malformed line or image raises `tf.errors.InvalidArgumentError` when it
            is read, whose message holds one line naming the file (and line);
            `lra_keras.data.user_error_from(error)` turns it into that UserError.
    """
    args = resolve_load_arguments(task, split, batch_size, max_length, shuffle, task_options)
    records, decode = _records(task, split, data_dir, args.max_length, args.options, args.need)
    if args.shuffle:
        records = records.shuffle(SHUFFLE_BUFFER[task], seed=seed, reshuffle_each_iteration=True)
    dataset = decode(records)
    if args.downsample is not None:
        dataset = dataset.map(
            lambda features, label: (_downsample(features, *args.downsample), label),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    dataset = dataset.batch(batch_size, drop_remainder=args.drop_remainder)
    opts = tf.data.Options()
    opts.deterministic = True
    return dataset.with_options(opts).prefetch(tf.data.AUTOTUNE)


def _downsample(features: dict, resolution: int, side: int) -> dict:
    """Area-averages a flattened `resolution`^2 image to `side`^2 (small CPU presets)."""
    image = tf.reshape(tf.cast(features["tokens"], tf.float32), [resolution, resolution, 1])
    small = tf.image.resize(image, [side, side], method="area")
    tokens = tf.cast(tf.round(tf.reshape(small, [side * side])), tf.int32)
    return {**features, "tokens": tokens}


def _records(task, split, data_dir, max_length, options, need):
    if task == "text":
        return readers.text_tfds(data_dir, split, max_length, options["split_seed"], need)
    if task == "image":
        return readers.image_tfds(data_dir, split, need)
    if task == "listops":
        prepared = options["task_name"] == "basic" and _prepared(task, split, data_dir, options)
        if prepared:
            return readers.listops_prepared(_enough(prepared, task, split, need), max_length)
        return readers.listops_release(data_dir, split, max_length, options["task_name"], need)
    if task == "retrieval":
        prepared = _prepared(task, split, data_dir, options)
        if prepared:
            return readers.retrieval_prepared(_enough(prepared, task, split, need), max_length)
        return readers.retrieval_release(data_dir, split, max_length, need)
    resolution = PATHFINDER_RESOLUTION[task]
    # Prepared records hold the default partition (split_seed 0).
    prepared = options["split_seed"] == 0 and _prepared(task, split, data_dir, options)
    if prepared:
        return readers.pathfinder_prepared(_enough(prepared, task, split, need), resolution)
    return readers.pathfinder_release(
        data_dir, split, resolution, options["difficulty"], options["split_seed"], need
    )


def _prepared(task, split, data_dir, options):
    """`(dataset, count, where)` of the prepared records, or None (read the release files)."""
    import os

    if not os.path.isdir(os.path.join(data_dir, "tfds")):
        return None
    from lra_keras.data import builders

    return builders.prepared_dataset(task, data_dir, split, **options)


def _enough(prepared, task: str, split: str, need: int) -> tf.data.Dataset:
    dataset, count, where = prepared
    readers.require_examples(task, split, f"the prepared records {where}", count, need)
    return dataset
