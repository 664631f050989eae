"""`lra-data`: generate ListOps / Pathfinder in the LRA release format, prepare TFRecords.

lra-data listops --out DIR [--num_train 96000 --num_val 2000 --num_test 2000 --seed 0
                            --min_length 500 --max_length 2000] [--overwrite]
lra-data pathfinder --out DIR --resolution {32,64,128,256} --difficulty {easy,intermediate,hard}
                    --num_images N [--seed 0 --workers 1] [--overwrite]
lra-data prepare --task T --data_dir D [--difficulty hard]

A user error (a bad flag, a bad or missing file) prints one line and exits with status 2.
"""

from __future__ import annotations

import errno
import time

from absl import app, flags

from lra_keras.data.tasks import DIFFICULTY_DIRS, TASKS, check_preparable
from lra_keras.errors import UserError, run_cli

COMMANDS = ("listops", "pathfinder", "prepare")

flags.DEFINE_string("out", None, "Output folder (listops, pathfinder).")
flags.DEFINE_integer("seed", 0, "Random seed; the same seed writes the same files.")
flags.DEFINE_integer("num_train", 96000, "ListOps training examples.")
flags.DEFINE_integer("num_val", 2000, "ListOps validation examples.")
flags.DEFINE_integer("num_test", 2000, "ListOps test examples.")
flags.DEFINE_integer("min_length", 500, "ListOps: length must be > min_length.")
flags.DEFINE_integer("max_length", 2000, "ListOps: length must be < max_length.")
flags.DEFINE_integer("max_depth", 10, "ListOps: maximum tree depth.")
flags.DEFINE_integer("max_args", 10, "ListOps: maximum operator arguments.")
flags.DEFINE_enum("resolution", "32", ["32", "64", "128", "256"], "Pathfinder image size.")
flags.DEFINE_enum("difficulty", "hard", list(DIFFICULTY_DIRS), "Pathfinder contour length.")
flags.DEFINE_integer("num_images", 1000, "Pathfinder images.")
flags.DEFINE_integer("workers", 1, "Pathfinder worker processes (output does not depend on it).")
flags.DEFINE_integer("images_per_folder", 1000, "Pathfinder images per imgs/<k> folder.")
flags.DEFINE_enum("task", None, list(TASKS), "prepare: the task.")
flags.DEFINE_string("data_dir", None, "prepare: folder with the release files.")
flags.DEFINE_bool(
    "overwrite",
    False,
    "listops, pathfinder: replace a non-empty output folder that lra-data generated before "
    "(never another folder).",
)

FLAGS = flags.FLAGS


# Failures of the file system that the user can fix (a path, permissions, space).
_USER_ERRNOS = {
    errno.EACCES,
    errno.EEXIST,
    errno.ENOENT,
    errno.ENOSPC,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EROFS,
    errno.EPERM,
}


def main(argv: list[str]) -> None:
    try:
        _main(argv)
    except OSError as err:
        if err.errno not in _USER_ERRNOS:
            raise
        where = f": {err.filename}" if err.filename else ""
        raise UserError(f"{err.strerror}{where}") from err


def _main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"Expected one command, one of {', '.join(COMMANDS)}; got {argv[1:]}.")
    command = argv[1]
    start = time.perf_counter()
    if command == "listops":
        from lra_keras.data.listops_generator import write_listops

        _need("out")
        paths = write_listops(
            FLAGS.out,
            num_train=FLAGS.num_train,
            num_val=FLAGS.num_val,
            num_test=FLAGS.num_test,
            seed=FLAGS.seed,
            min_length=FLAGS.min_length,
            max_length=FLAGS.max_length,
            max_depth=FLAGS.max_depth,
            max_args=FLAGS.max_args,
            overwrite=FLAGS.overwrite,
        )
        print(f"Wrote {', '.join(paths.values())} in {time.perf_counter() - start:.1f}s")
    elif command == "pathfinder":
        from lra_keras.data.pathfinder_generator import write_pathfinder

        _need("out")
        root = write_pathfinder(
            FLAGS.out,
            resolution=int(FLAGS.resolution),
            difficulty=FLAGS.difficulty,
            num_images=FLAGS.num_images,
            seed=FLAGS.seed,
            workers=FLAGS.workers,
            images_per_folder=FLAGS.images_per_folder,
            overwrite=FLAGS.overwrite,
        )
        elapsed = time.perf_counter() - start
        print(
            f"Wrote {FLAGS.num_images} images to {root} in {elapsed:.1f}s "
            f"({FLAGS.num_images / elapsed:.1f} images/s)"
        )
    else:
        _need("task")
        _need("data_dir")
        check_preparable(FLAGS.task)  # before TensorFlow loads
        from lra_keras.data.builders import prepare

        options = {"difficulty": FLAGS.difficulty} if FLAGS.task.startswith("path") else {}
        path = prepare(FLAGS.task, FLAGS.data_dir, **options)
        print(f"Prepared {FLAGS.task} records in {path} in {time.perf_counter() - start:.1f}s")


def _need(name: str) -> None:
    if getattr(FLAGS, name) is None:
        raise app.UsageError(f"--{name} is required for this command.")


def run() -> None:
    run_cli(main, "lra-data")


if __name__ == "__main__":
    run()
