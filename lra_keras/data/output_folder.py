"""The folders the generators write: claimed empty, or replaced whole when they made them before.

A generator marks its folder with `MARKER` (a JSON file with the generator and its arguments)
before writing anything, so an interrupted run can be replaced too. `--overwrite` deletes only a
folder that carries the marker: never an arbitrary folder, a link, or one holding the working
directory. Replacing the folder whole means no file of an earlier run (a metadata file of a
larger Pathfinder run, prepared records) survives to mix with the new one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator

from lra_keras.errors import UserError

MARKER = ".lra_data.json"
# A full disk or quota: the user frees space (or picks another folder) and regenerates.
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def claim_output(path: str, overwrite: bool, generator: str, arguments: dict) -> None:
    """Makes `path` an empty folder marked as written by `generator`, or raises a UserError.

    Args:
        path: the folder the generator writes.
        overwrite: replace a non-empty folder that an earlier `lra-data` run generated.
        generator: the command, e.g. "lra-data listops", recorded in the marker.
        arguments: the generator's arguments, recorded in the marker.
    """
    if check_output(path, overwrite):
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    with writing(os.path.join(path, MARKER), path, generator):
        _write_marker(path, {"generator": generator, "arguments": arguments, "complete": False})


def check_output(path: str, overwrite: bool) -> bool:
    """Raises a UserError unless `path` may be written; returns whether it must be replaced.

    Generators call it before their slow work, so a refusal comes at once.
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UserError(f"The output path {path} exists and is not a folder; choose a folder.")
    if not os.path.isdir(path) or not os.listdir(path):
        return False
    if not overwrite:
        raise UserError(
            f"The output folder {path} is not empty; choose an empty or new folder, or pass "
            "--overwrite (overwrite=True) to replace a folder that lra-data generated."
        )
    _check_replaceable(path)
    return True


def finish_output(path: str) -> None:
    """Marks the folder complete (an interrupted run leaves `complete: false`)."""
    with open(os.path.join(path, MARKER)) as f:
        marker = json.load(f)
    with writing(os.path.join(path, MARKER), path, marker.get("generator", "lra-data")):
        _write_marker(path, {**marker, "complete": True})


@contextlib.contextmanager
def writing(file: str, folder: str, generator: str) -> Iterator[None]:
    """Names `file` in a failed write, and says what to do when the disk is full.

    `write()` and `close()` raise OSErrors without a file name ("No space left on device:
    None"); this adds it. The folder stays marked incomplete, so the readers refuse it.
    """
    try:
        yield
    except OSError as err:
        if isinstance(err, UserError):
            raise
        if err.errno in _NO_SPACE:
            raise UserError(
                f"{err.strerror or 'No space left on device'} while writing {file}: the "
                f"output folder {folder} is incomplete (readers refuse it). Free some space or "
                f"choose a folder on another disk, then rerun `{generator}` with --overwrite."
            ) from err
        if err.filename is None:
            raise OSError(err.errno, err.strerror, file) from err
        raise


def check_complete(folder: str) -> None:
    """Raises a UserError if `folder` is a generated folder that its generator left unfinished.

    Folders without the marker (the LRA release, copies made by hand) are not checked. A
    marker that cannot be read (a disk that filled up while it was written) counts as
    unfinished.
    """
    marker_path = os.path.join(folder, MARKER)
    if not os.path.isfile(marker_path):
        return
    try:
        with open(marker_path) as f:
            marker = json.load(f)
        complete = marker.get("complete", True) is True  # markers before the flag: complete
        generator = str(marker.get("generator", "lra-data"))
        why = f"its {MARKER} says complete: false"
    except (OSError, ValueError, AttributeError):
        complete, generator = False, "lra-data listops` or `lra-data pathfinder"
        why = f"its {MARKER} cannot be read, cut short"
    if not complete:
        raise UserError(
            f"The data folder {folder} is incomplete: the `{generator}` run that wrote it "
            f"stopped before it finished ({why}). Regenerate it: "
            f"rerun `{generator}` with the same arguments and --overwrite."
        )


def _check_replaceable(path: str) -> None:
    if os.path.islink(path):
        raise UserError(
            f"The output folder {path} is a link; refusing to replace it. Choose another folder."
        )
    if not os.path.isfile(os.path.join(path, MARKER)):
        raise UserError(
            f"The output folder {path} holds files that lra-data did not generate (no {MARKER} "
            "marker); refusing to delete it. Choose another folder, or remove it yourself."
        )
    here = os.path.realpath(os.getcwd())
    target = os.path.realpath(path)
    if os.path.commonpath([here, target]) == target:
        raise UserError(
            f"The output folder {path} holds the working directory; refusing to delete it. Run "
            "from elsewhere or choose another folder."
        )


def _write_marker(path: str, content: dict) -> None:
    # Written aside and renamed: a full disk leaves the old marker, never half a new one.
    temporary = os.path.join(path, f"{MARKER}.{os.getpid()}")
    try:
        with open(temporary, "w") as f:
            json.dump(content, f, indent=1)
        os.replace(temporary, os.path.join(path, MARKER))
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)
