"""The LRA release files, without TensorFlow: where they are, their lines, rows and images.

Both readers use this module: the tf.data pipeline (`readers.py`, `pipeline.load`) and the
numpy/Pillow one (`numpy_pipeline.load_numpy`), as does `lra-data prepare`. It imports only the
standard library and numpy (Pillow when an image is decoded), so it works where TensorFlow is not
installed. The tf.data reader checks lines with graph ops that accept and refuse exactly the
lines `parse_tsv_line` does (tests/data/test_misuse.py holds them together).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from lra_keras.data.output_folder import check_complete
from lra_keras.data.tasks import (
    AAN_FILE_SPLIT,
    DIFFICULTY_DIRS,
    LISTOPS_FILE_SPLIT,
    DataNotFoundError,
    find_first,
)
from lra_keras.errors import UserError

SPACE = "[ \\t\\n\\v\\f\\r]*"  # the same class in RE2 (tf.strings) and Python's re
# Notepad and other Windows editors start a UTF-8 file with a byte order mark.
UTF8_BOM = b"\xef\xbb\xbf"


class TsvFormat(NamedTuple):
    """One release TSV layout: field count, the label field and its pattern, text fields."""

    num_fields: int
    label_index: int
    label_pattern: str  # full match, RE2 and Python syntax alike
    what: str
    header: bytes | None  # an optional first line, skipped when present
    text_fields: tuple[int, ...]  # fields that must be UTF-8


LISTOPS_FORMAT = TsvFormat(
    2, 1, f"{SPACE}[0-9]{SPACE}", "Source, Target (a digit 0-9)", b"Source\tTarget", (0,)
)
# AAN labels are written as floats: 0, 1, 0.0, 1.0. Texts may be any bytes.
AAN_FORMAT = TsvFormat(
    5, 0, f"{SPACE}[01](\\.0*)?{SPACE}", "label 0/1, id1, id2, text1, text2", None, ()
)


def _line_body(raw: bytes, lineno: int) -> bytes:
    """A line without its end (LF or CRLF) and, on line 1, without a UTF-8 byte order mark."""
    line = raw[:-1] if raw.endswith(b"\n") else raw
    line = line[:-1] if line.endswith(b"\r") else line
    if lineno == 1 and line.startswith(UTF8_BOM):
        line = line[len(UTF8_BOM) :]
    return line


def tsv_records(path: str, fmt: TsvFormat) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, line without its end) of a release TSV's data lines.

    Blank lines are skipped, and the first line when it is the format's header: a file
    without the header loses no example. LF and CRLF line ends and a UTF-8 byte order mark
    are accepted.
    """
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            line = _line_body(raw, lineno)
            if lineno == 1 and fmt.header is not None and line == fmt.header:
                continue
            if line.strip():
                yield lineno, start, line


def tsv_lines(path: str, fmt: TsvFormat) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its end) of the data lines of a release TSV."""
    for lineno, _, line in tsv_records(path, fmt):
        yield lineno, line


def read_tsv_line(f, offset: int, lineno: int) -> bytes:
    """The line at `offset` of an open binary file, as `tsv_records` yields it."""
    f.seek(offset)
    return _line_body(f.readline(), lineno)


def malformed_line(path: str, lineno: int, fmt: TsvFormat, problem: str, shown: str) -> str:
    """The one-line message for a bad data line; the tf.data reader builds the same one."""
    return (
        f"Malformed line in {path}, line {lineno}: expected {fmt.num_fields} tab-separated "
        f"fields ({fmt.what}); {problem}: {shown!r}."
    )


def parse_tsv_line(path: str, lineno: int, line: bytes, fmt: TsvFormat) -> list[bytes]:
    """The fields of one data line, or a UserError naming the file and line."""
    fields = line.split(b"\t")
    problem = None
    if len(fields) != fmt.num_fields:
        problem = f"got {len(fields)} fields"
    elif not re.fullmatch(fmt.label_pattern.encode(), fields[fmt.label_index]):
        label = fields[fmt.label_index].decode("utf-8", errors="replace")[:40]
        problem = f"field {fmt.label_index + 1} is '{label}'"
    else:
        for i in fmt.text_fields:
            try:
                fields[i].decode("utf-8")
            except UnicodeDecodeError:
                problem = f"field {i + 1} is not UTF-8 text"
    if problem:
        shown = line.decode("utf-8", errors="replace")[:200]
        raise UserError(malformed_line(path, lineno, fmt, problem, shown))
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


# ListOps ------------------------------------------------------------------------------------

LISTOPS_TOKENS = ("[MIN", "[MAX", "[MED", "[SM", "X") + tuple(str(d) for d in range(10))
_LISTOPS_IDS = {token: i + 1 for i, token in enumerate(LISTOPS_TOKENS)}
LISTOPS_OOV_ID = len(LISTOPS_TOKENS) + 1


def listops_ids_py(source: str) -> list[int]:
    """The Python twin of `encoding.listops_ids(encoding.listops_tokens(...))`."""
    text = source.replace("]", "X").replace("(", " ").replace(")", " ")
    return [_LISTOPS_IDS.get(t, LISTOPS_OOV_ID) for t in text.split()]


def listops_file(data_dir: str, split: str, task_name: str = "basic") -> str:
    name = f"{task_name}_{LISTOPS_FILE_SPLIT[split]}.tsv"
    path = find_first(
        [os.path.join(data_dir, name), os.path.join(data_dir, "listops-1000", name)],
        "ListOps file",
        "Generate it with `lra-data listops --out DATA_DIR --seed 0` (or unpack the LRA "
        "release's listops-1000 folder there).",
    )
    check_complete(os.path.dirname(path))
    return path


# Retrieval (AAN) ----------------------------------------------------------------------------


def aan_file(data_dir: str, split: str) -> str:
    name = f"new_aan_pairs.{AAN_FILE_SPLIT[split]}.tsv"
    return find_first(
        [os.path.join(data_dir, name), os.path.join(data_dir, "tsv_data", name)],
        "AAN retrieval file",
        "Unpack the LRA release (lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv, "
        "from https://storage.googleapis.com/long-range-arena/lra_release.gz) into DATA_DIR.",
    )


# Pathfinder ---------------------------------------------------------------------------------


def pathfinder_how(resolution: int, difficulty: str) -> str:
    return (
        f"Generate it with `lra-data pathfinder --out DATA_DIR --resolution {resolution} "
        f"--difficulty {difficulty} --num_images 200000 --seed 0 --workers 8` (or unpack the "
        f"LRA release's pathfinder{resolution} folder there)."
    )


def pathfinder_root(data_dir: str, resolution: int, difficulty: str) -> str:
    sub = DIFFICULTY_DIRS[difficulty]
    root = find_first(
        [
            os.path.join(data_dir, sub),
            os.path.join(data_dir, f"pathfinder{resolution}", sub),
            os.path.join(data_dir, "lra_release", f"pathfinder{resolution}", sub),
        ],
        f"Pathfinder {resolution}px {difficulty!r} folder",
        pathfinder_how(resolution, difficulty),
    )
    check_complete(root)
    return root


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
            f"rows beside imgs/<k>/). {pathfinder_how(resolution, difficulty)}"
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
            f"{pathfinder_how(resolution, difficulty)}"
        )
    return paths, labels


def split_indices(num: int, split: str, split_seed: int) -> np.ndarray:
    """The seeded 80/10/10 train/validation/test partition of `num` examples."""
    order = np.random.default_rng(split_seed).permutation(num)
    a, b = int(0.8 * num), int(0.9 * num)
    return {"train": order[:a], "validation": order[a:b], "test": order[b:]}[split]


def pathfinder_split(
    data_dir: str,
    split: str,
    resolution: int,
    difficulty: str = "hard",
    split_seed: int = 0,
    need: int = 1,
) -> tuple[list[str], np.ndarray]:
    """The image paths and int32 labels of one split, in partition order, empty files dropped.

    Raises a UserError when the split holds fewer than `need` images.
    """
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
                f"({err.strerror}). {pathfinder_how(resolution, difficulty)}"
            ) from err
    require_examples(f"pathfinder {resolution}px {difficulty}", split, root, len(nonempty), need)
    return [paths[i] for i in nonempty], np.asarray(labels, np.int32)[nonempty]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC


def bad_image(path: str, reason: str, resolution: int, width, height) -> str:
    """The one-line message for a bad Pathfinder image; the tf.data reader builds the same."""
    return (
        f"Bad Pathfinder image {path}: {reason} (expected a whole {resolution}x{resolution} "
        f"PNG; got width {width}, height {height}). Regenerate or replace it."
    )


def png_problem(data: bytes, resolution: int) -> tuple[str | None, int, int]:
    """(what is wrong or None, width, height) from a PNG's signature, IHDR size and IEND.

    The Python twin of the tf.data reader's `_checked_png`.
    """
    head = data[:24].ljust(24, b"\0")
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return "is not a PNG file", width, height
    if not data.endswith(PNG_END):
        return "is truncated (no IEND chunk at its end)", width, height
    if (width, height) != (resolution, resolution):
        return "has the wrong size", width, height
    return None, width, height


CORRUPT_PNG = "is corrupt (its compressed pixel data cannot be decoded)"


def read_png(path: str, resolution: int) -> np.ndarray:
    """One Pathfinder image as uint8 `[resolution, resolution]`, or a UserError naming it.

    Grey levels are those of `tf.io.decode_png(channels=1)` for 8-bit greyscale PNGs (the
    release and the generator write mode L); other modes are refused, because Pillow's and
    libpng's colour-to-grey conversions differ by one level.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UserError(
            f"Pathfinder image {path} cannot be read ({err.strerror}). Regenerate or replace it."
        ) from err
    problem, width, height = png_problem(data, resolution)
    if problem is None:
        import io

        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                mode = image.mode
                pixels = np.asarray(image)
        # Pillow raises many types for bad data (OSError, SyntaxError, zlib.error, ...).
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            problem = CORRUPT_PNG
        else:
            if mode == "LA":  # grey + alpha: decode_png(channels=1) keeps the grey
                pixels = pixels[..., 0]
            elif mode != "L":
                problem = (
                    f"is a mode {mode} image; the numpy reader takes 8-bit greyscale PNGs "
                    "(mode L, as the release and lra-data write)"
                )
    if problem == CORRUPT_PNG or (problem is not None and problem.startswith("is a mode")):
        raise UserError(f"Bad Pathfinder image {path}: {problem}. Regenerate or replace it.")
    if problem is not None:
        raise UserError(bad_image(path, problem, resolution, width, height))
    return pixels
