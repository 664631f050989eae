"""Task names, splits, file layouts and defaults shared by the readers, builders and CLI.

This module imports no TensorFlow, so the generators and the CLI start quickly.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

from lra_keras.errors import UserError

TASKS = (
    "listops",
    "text",
    "retrieval",
    "image",
    "pathfinder",
    "pathfinder64",
    "pathx",
    "pathfinder256",
)
SPLITS = ("train", "validation", "test")

PATHFINDER_RESOLUTION = {"pathfinder": 32, "pathfinder64": 64, "pathx": 128, "pathfinder256": 256}
DIFFICULTY_DIRS = {
    "easy": "curv_baseline",
    "intermediate": "curv_contour_length_9",
    "hard": "curv_contour_length_14",
}

# Default sequence lengths: the LRA configs (text uses 4K as the paper and DESIGN.md section 3).
DEFAULT_MAX_LENGTH = {"listops": 2000, "text": 4000, "retrieval": 4000, "image": 1024}
DEFAULT_MAX_LENGTH.update({t: r * r for t, r in PATHFINDER_RESOLUTION.items()})

# Shuffle buffers, in examples (records are shuffled before decoding, so they stay small).
SHUFFLE_BUFFER = {"listops": 10000, "text": 25000, "retrieval": 4096, "image": 10000}
SHUFFLE_BUFFER.update({t: 20000 for t in PATHFINDER_RESOLUTION})

# The options each task takes in `load` / `load_numpy`, with their defaults.
TASK_OPTIONS = {
    "listops": {"task_name": "basic"},
    "text": {"split_seed": 0},
    "retrieval": {},
    "image": {},
}
TASK_OPTIONS.update({t: {"difficulty": "hard", "split_seed": 0} for t in PATHFINDER_RESOLUTION})

LISTOPS_FILE_SPLIT = {"train": "train", "validation": "val", "test": "test"}
AAN_FILE_SPLIT = {"train": "train", "validation": "eval", "test": "test"}


class DataNotFoundError(UserError, FileNotFoundError):
    """A data set's files are missing; the message says what is expected where and how to make it.

    A `UserError` (the CLIs print it as one line) that Python callers can also catch as a
    `FileNotFoundError`.
    """


def check_task(task: str) -> str:
    if task not in TASKS:
        raise UserError(f"Unknown task {task!r}; valid tasks are {', '.join(TASKS)}.")
    return task


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"Unknown split {split!r}; valid splits are {', '.join(SPLITS)}.")
    return split


def check_difficulty(difficulty: str) -> str:
    if difficulty not in DIFFICULTY_DIRS:
        raise UserError(
            f"Unknown difficulty {difficulty!r}; valid difficulties are "
            f"{', '.join(DIFFICULTY_DIRS)}."
        )
    return difficulty


def check_preparable(task: str) -> str:
    """`lra-data prepare` writes records for the release-file tasks; TFDS ones have theirs."""
    check_task(task)
    if task in ("text", "image"):
        raise UserError(
            f"`prepare` supports listops, retrieval and the pathfinder tasks, got {task!r} "
            "(text and image are TFDS data sets already)."
        )
    return task


def find_first(candidates: list[str], what: str, how: str) -> str:
    """Returns the first existing path among `candidates` or raises a `DataNotFoundError`."""
    for path in candidates:
        if os.path.exists(path):
            return path
    listed = "\n  ".join(candidates)
    raise DataNotFoundError(f"{what} not found; expected one of:\n  {listed}\n{how}")


class LoadArguments(NamedTuple):
    """`load`'s arguments, checked and with their defaults filled in."""

    options: dict  # the task options, defaults included
    max_length: int
    downsample: tuple[int, int] | None  # (resolution, side) for downsampled Pathfinder
    shuffle: bool
    need: int  # examples the split must hold: one batch for train, one example otherwise
    drop_remainder: bool


def resolve_load_arguments(
    task: str,
    split: str,
    batch_size: int,
    max_length: int | None,
    shuffle: bool | None,
    task_options: dict,
) -> LoadArguments:
    """Checks `load`'s arguments (raising a UserError) and fills in the defaults.

    Shared by the tf.data and the numpy readers, so both accept and refuse the same calls.
    """
    check_task(task)
    check_split(split)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive int, got {batch_size!r}.")
    unknown = set(task_options) - set(TASK_OPTIONS[task])
    if unknown:
        raise UserError(
            f"Unknown options {sorted(unknown)} for task {task!r}; valid options are "
            f"{sorted(TASK_OPTIONS[task]) or 'none'}."
        )
    options = {**TASK_OPTIONS[task], **task_options}
    fixed = task == "image" or task in PATHFINDER_RESOLUTION
    if max_length is None:
        max_length = DEFAULT_MAX_LENGTH[task]
    elif not isinstance(max_length, int) or max_length < 1:
        raise UserError(f"max_length must be a positive int, got {max_length!r}.")
    downsample = None
    if fixed and max_length != DEFAULT_MAX_LENGTH[task]:
        resolution = PATHFINDER_RESOLUTION.get(task)
        side = math.isqrt(max_length)
        if resolution is None or side * side != max_length or resolution % side:
            raise UserError(
                f"max_length for task {task!r} is fixed by the image size: expected None or "
                f"{DEFAULT_MAX_LENGTH[task]}"
                + (
                    f", or (Pathfinder) s*s with s dividing {resolution} to downsample"
                    if resolution
                    else ""
                )
                + f"; got {max_length}."
            )
        downsample = (resolution, side)
    if task in PATHFINDER_RESOLUTION:
        check_difficulty(options["difficulty"])
    if shuffle is None:
        shuffle = split == "train"
    # Train batches drop the remainder: the split must hold one whole batch.
    need = batch_size if split == "train" else 1
    return LoadArguments(options, max_length, downsample, bool(shuffle), need, split == "train")
