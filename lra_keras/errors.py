"""Errors the command-line tools print as one line (exit status 2) instead of a traceback."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable


class UserError(ValueError):
    """Something the user asked for or supplied is wrong: a flag, a file, a data folder.

    The message says what was wrong and what to do. The CLIs print it as one line and exit 2;
    anything else is an internal error and keeps its traceback. It subclasses ValueError so
    that Python callers can catch it as they catch any bad argument.
    """


def _one_line(prog: str, error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{prog}: error: {text}"


def _main_module_help(module) -> None:
    """Makes absl's `--help` describe the command defined in `module`.

    absl's `--help` prints the `__main__` module's docstring and the flags defined in the
    module named `sys.argv[0]`; under a console script (`lra-train`) that is the generated
    wrapper, which has neither, so `--help` listed no flags and no subcommands.
    """
    from absl import flags

    main_module = sys.modules.get("__main__")
    if module is None or module is main_module:
        return  # `python -m lra_keras...`: absl finds them itself
    for flag in flags.FLAGS.get_key_flags_for_module(module.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    if main_module is not None and not main_module.__doc__ and module.__doc__:
        main_module.__doc__ = module.__doc__


def run_cli(main: Callable[[list[str]], None], prog: str) -> None:
    """Runs an absl `main` so that user errors print one line and exit with status 2.

    User errors are `UserError`, absl's `app.UsageError` and flag-parsing errors (an unknown
    flag, a bad value, a missing required flag). `--help` lists the flags defined in
    `main`'s module and that module's docstring (its usage and subcommands).
    """
    from absl import app, flags

    _main_module_help(sys.modules.get(main.__module__))

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            print(_one_line(prog, error), file=sys.stderr)
            sys.exit(2)

    def guarded(argv: list[str]) -> None:
        try:
            main(argv)
        except (UserError, app.UsageError) as error:
            print(_one_line(prog, error), file=sys.stderr)
            sys.exit(2)
        except Exception as error:
            # A malformed line or image is found while tf.data iterates, deep in a
            # TensorFlow error: the reader's own one line is in it.
            from lra_keras.data.lazy_errors import user_error_from

            user_error = user_error_from(error)
            if user_error is None:
                raise
            print(_one_line(prog, user_error), file=sys.stderr)
            sys.exit(2)

    app.run(guarded, flags_parser=parse)


# Failures of the file system that the user can fix (a path, permissions, space).
_USER_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EDQUOT,
        errno.EEXIST,
        errno.EISDIR,
        errno.ENOENT,
        errno.ENOSPC,
        errno.ENOTDIR,
        errno.EPERM,
        errno.EROFS,
    }
)
# TensorFlow's file errors (tf.io.gfile, SavedModel, checkpoints), by class name so that this
# module does not import TensorFlow.
_TF_FILE_ERRORS = ("NotFoundError", "FailedPreconditionError", "PermissionDeniedError")


def file_system_failure(error: BaseException) -> str | None:
    """Why writing or reading failed, when the user can fix it (space, permissions, path).

    An `OSError` with such an errno, or TensorFlow's file errors (a full disk is its
    ResourceExhaustedError "No space left on device"); None for anything else.
    """
    if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or error}{where}"
    name = type(error).__name__
    text = " ".join(str(getattr(error, "message", None) or error).split())
    if name in _TF_FILE_ERRORS or (name == "ResourceExhaustedError" and "No space left" in text):
        return text
    return None
