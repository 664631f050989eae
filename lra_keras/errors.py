"""Errors the command-line tools print as one line (exit status 2) instead of a traceback."""

from __future__ import annotations

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


def run_cli(main: Callable[[list[str]], None], prog: str) -> None:
    """Runs an absl `main` so that user errors print one line and exit with status 2.

    User errors are `UserError`, absl's `app.UsageError` and flag-parsing errors (an unknown
    flag, a bad value, a missing required flag).
    """
    from absl import app, flags

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

    app.run(guarded, flags_parser=parse)
