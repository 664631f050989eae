"""The data errors tf.data raises while iterating, as the one-line `UserError` they describe.

A malformed line or image is found when tf.data reads it, so `load` cannot raise the
`UserError` itself: the iterator raises `tf.errors.InvalidArgumentError` whose message wraps
the one-line description (`assertion failed: [Malformed line in FILE, line N: ...]`) in
TensorFlow's node names. `user_error_from` takes it back out, so a training loop can re-raise
it as the `UserError` the CLIs print as one line. This module imports no TensorFlow.
"""

from __future__ import annotations

import re

from lra_keras.errors import UserError

# The starts of the readers' messages (readers.py and release_files.py).
DATA_ERROR_PREFIXES = ("Malformed line in ", "Bad Pathfinder image ")
_ASSERTION = "assertion failed: ["


def user_error_from(error: BaseException) -> UserError | None:
    """The `UserError` for a data error raised while iterating a `load` dataset, else None.

    Args:
        error: any exception; a `UserError` is returned as it is, and a TensorFlow error
            whose message holds one of the readers' assertions is turned into one.

    Returns:
        A `UserError` whose message is the reader's one line (file, line, what was expected,
        what was found), or None for any other error (keep its traceback).

    Example:

    >>> from lra_keras.data import user_error_from
    >>> text = "{{node IteratorGetNext}} assertion failed: [Bad Pathfinder image /d/x.png: is "
    >>> text += "not a PNG file]\\n\\t [[{{node Assert}}]]"
    >>> print(user_error_from(RuntimeError(text)))
    Bad Pathfinder image /d/x.png: is not a PNG file
    >>> user_error_from(RuntimeError("out of memory")) is None
    True
    """
    if isinstance(error, UserError):
        return error
    message = getattr(error, "message", None) or str(error)
    start = message.find(_ASSERTION)
    if start < 0:
        return None
    start += len(_ASSERTION)
    if not message.startswith(DATA_ERROR_PREFIXES, start):
        return None
    # The description is one line; TensorFlow appends "]\n\t [[{{node ...}}]]".
    stop = message.find("\n", start)
    text = message[start:] if stop < 0 else message[start:stop]
    text = text.rstrip()
    if text.endswith("]"):
        text = text[:-1]
    converted = UserError(_unescape(text))
    converted.__cause__ = error
    return converted


_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"'": b"'", b'"': b'"', b"\\": b"\\"}


def _unescape(text: str) -> str:
    """Undoes the C escapes TensorFlow adds when it prints a string tensor (\\t, \\', \\ooo).

    TensorFlow leaves valid UTF-8 as it is and escapes quotes, control and invalid bytes, so
    the escapes are undone on the UTF-8 bytes.
    """

    def one(match: re.Match) -> bytes:
        code = match.group(1)
        if code in _SIMPLE:
            return _SIMPLE[code]
        if code[:1] == b"x":
            return bytes([int(code[1:], 16)])
        if code[:1].isdigit() and code[:1] not in (b"8", b"9"):
            return bytes([int(code, 8) & 0xFF])
        return match.group(0)

    return _ESCAPE.sub(one, text.encode("utf-8")).decode("utf-8", errors="replace")
