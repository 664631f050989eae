"""Reading any file tree as a byte corpus for the byte-level language model (numpy only)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np


def read_byte_corpus(
    paths: str | Sequence[str], suffixes: Sequence[str] = (".py",), max_bytes: int | None = None
) -> np.ndarray:
    """Concatenates the bytes of files (or of every file with `suffixes` under directories).

    Files are read in sorted path order, so the corpus is the same on every machine that has
    the same files.

    Args:
        paths: a file, a directory, or a list of either.
        suffixes: file name endings taken from directories.
        max_bytes: stop once this many bytes are read.

    Returns:
        uint8 array of the concatenated bytes.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                files.extend(
                    os.path.join(root, n) for n in sorted(names) if n.endswith(tuple(suffixes))
                )
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(
                f"Byte corpus path {path!r} does not exist: pass a file or a directory."
            )
    chunks, total = [], 0
    for name in files:
        with open(name, "rb") as f:
            data = f.read()
        chunks.append(data)
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    if not chunks:
        raise ValueError(f"No files ending in {tuple(suffixes)} under {list(paths)}.")
    corpus = np.frombuffer(b"".join(chunks), np.uint8)
    return corpus[:max_bytes] if max_bytes is not None else corpus


def split_corpus(corpus: np.ndarray, heldout_fraction: float = 0.1):
    """(train, held-out): the held-out slice is the corpus's last `heldout_fraction`."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"`heldout_fraction` must be in (0, 1), got {heldout_fraction}.")
    cut = int(len(corpus) * (1.0 - heldout_fraction))
    return corpus[:cut], corpus[cut:]


def random_windows(
    corpus: np.ndarray, batch_size: int, sequence_length: int, seed: int = 0
) -> Iterator[np.ndarray]:
    """Endless batches of random windows as token ids (byte + 1), int32 `[batch, length]`."""
    if len(corpus) <= sequence_length:
        raise ValueError(
            f"The corpus has {len(corpus)} bytes, fewer than sequence_length={sequence_length}."
        )
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(corpus) - sequence_length, size=batch_size)
        windows = np.stack([corpus[s : s + sequence_length] for s in starts])
        yield windows.astype("int32") + 1


def consecutive_windows(corpus: np.ndarray, sequence_length: int) -> np.ndarray:
    """The corpus cut into non-overlapping windows of token ids, int32 `[n, length]`."""
    n = len(corpus) // sequence_length
    if n == 0:
        raise ValueError(
            f"The corpus has {len(corpus)} bytes, fewer than sequence_length={sequence_length}."
        )
    return corpus[: n * sequence_length].reshape(n, sequence_length).astype("int32") + 1
