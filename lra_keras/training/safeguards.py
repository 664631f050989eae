"""What stops a run from failing silently: the run folder's lock, divergence, out of memory.

Backend-neutral (no TensorFlow import): the training loop calls these with the values it has.

- `lock_model_dir(model_dir)`: one live run per folder (`model_dir/.lock`, `fcntl.flock`).
- `LossWatch`: the losses of every step since the last check, checked for NaN/inf only where
  the loop syncs with the host anyway (before logging, validating, checkpointing).
- `check_finite_weights`: no checkpoint and no best is ever taken from non-finite weights.
- `out_of_memory_as_user_error`: the backend's resource-exhausted errors as one line.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading

import numpy as np

from lra_keras.errors import UserError

LOCK_FILE = ".lock"


class NonFiniteLossError(UserError):
    """The training loss (or the weights, or the validation loss) became NaN or infinite."""


# ---------------------------------------------------------------------- the folder's lock

_held: dict[str, list] = {}  # real path -> [file object, count]
_held_guard = threading.Lock()


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            pid = f.read().strip()
    except OSError:
        return ""
    return f" (PID {pid})" if pid.isdigit() else ""


@contextlib.contextmanager
def lock_model_dir(model_dir: str):
    """Holds `model_dir/.lock` for the block; refuses a folder another live process holds.

    The lock is `fcntl.flock` on an open file, so the OS releases it when its process ends,
    even by `kill -9`: a stale `.lock` file never blocks a later run. Re-entrant within one
    process (the CLI holds it for the process's life, the trainer again for `train()`).
    The holder's PID is written into the file, for the message. Remote folders (`gs://...`)
    are not locked. Creates `model_dir`; an unwritable one is a `UserError`.
    """
    if "://" in str(model_dir):
        yield
        return
    import fcntl

    try:
        os.makedirs(model_dir, exist_ok=True)
        path = os.path.join(os.path.realpath(model_dir), LOCK_FILE)
        with _held_guard:
            entry = _held.get(path)
            if entry is None:
                handle = open(path, "a+")  # noqa: SIM115  (held beyond this block)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    raise UserError(
                        f"another run{_holder(path)} is training in {model_dir} (it holds "
                        f"{path}): wait for it to end or stop it, or train in another "
                        "--model_dir."
                    ) from None
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                entry = _held[path] = [handle, 0]
            entry[1] += 1
    except OSError as error:
        raise UserError(
            f"cannot write the run folder --model_dir {model_dir}: "
            f"{error.strerror or error} ({error.filename or model_dir})"
        ) from error
    try:
        yield
    finally:
        with _held_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[path]
                entry[0].close()  # closing the file releases the lock


# ---------------------------------------------------------------------- divergence


class LossWatch:
    """The losses of the steps since the last `check()`, kept where the step left them.

    `add` only keeps a reference (no host sync); `check` fetches them all at once, at a point
    where the loop syncs anyway, and raises `NonFiniteLossError` naming the first bad step.
    """

    def __init__(self):
        self._steps: list[int] = []
        self._losses: list = []
        self.last_saved_step: int | None = None

    def add(self, step: int, loss) -> None:
        self._steps.append(step)
        self._losses.append(loss)

    def check(self) -> None:
        if not self._losses:
            return
        steps, losses = self._steps, self._losses
        self._steps, self._losses = [], []
        values = np.array([np.asarray(x, np.float64) for x in losses]).reshape(len(steps), -1)
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            self.fail(f"the training loss is {_describe(values[first])} at step {steps[first]}")

    def fail(self, what: str) -> None:
        kept = (
            f"the last finite checkpoint (step {self.last_saved_step}) stays the latest and "
            "the best"
            if self.last_saved_step is not None
            else "no checkpoint was saved"
        )
        raise NonFiniteLossError(
            f"{what}: training stopped ({kept}; nothing exported). The run diverged: lower "
            "the learning rate (--set learning_rate=...) or clip gradients (--set "
            "grad_clip_norm=1.0), and train in a new --model_dir."
        )


def _describe(values) -> str:
    values = np.asarray(values, np.float64).ravel()
    if np.isnan(values).any():
        return "NaN"
    return "infinite"


def check_finite_weights(variables, step: int, watch: LossWatch) -> None:
    """Refuses (via `watch.fail`) weights with a NaN or infinity: never checkpointed."""
    for variable in variables:
        if not np.isfinite(np.asarray(variable)).all():
            name = getattr(variable, "path", None) or getattr(variable, "name", "?")
            watch.fail(f"the weights after step {step} are not finite ({name})")


def check_finite_metrics(metrics: dict, step: int, watch: LossWatch) -> None:
    loss = metrics.get("loss")
    if loss is not None and not math.isfinite(float(loss)):
        watch.fail(f"the validation loss is {_describe(loss)} at step {step}")


# ---------------------------------------------------------------------- out of memory


def is_out_of_memory(error: BaseException) -> bool:
    """TensorFlow's ResourceExhaustedError, XLA's RESOURCE_EXHAUSTED (JAX), MemoryError."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ == "ResourceExhaustedError":
        return True
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "OOM when allocating" in text


@contextlib.contextmanager
def out_of_memory_as_user_error(where: str):
    """Turns running out of memory `where` into one line saying which settings to lower."""
    try:
        yield
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        text = " ".join(str(getattr(error, "message", None) or error).split())
        # TensorFlow prefixes the allocation that failed with the graph's traceback.
        found = re.search(
            r"(OOM when allocating tensor with shape\[[^\]]*\]( and type \w+)?)", text
        )
        detail = found.group(1) if found else text[:160] + ("..." if len(text) > 160 else "")
        raise UserError(
            f"out of memory {where}: the configuration does not fit ({detail}). Lower the "
            "batch size (--batch_size), the sequence length (--set max_length=...) or the "
            "model size (--preset, --set embed_dim=...), or pick a memory-efficient "
            "--attention."
        ) from error
