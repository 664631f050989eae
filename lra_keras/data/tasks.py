"""Task names, splits, file layouts and defaults shared by the readers, builders and CLI.

This module imports no TensorFlow, so the generators and the CLI start quickly.
"""

from __future__ import annotations

import os

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
