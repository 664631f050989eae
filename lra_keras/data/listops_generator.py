"""A seeded generator of the LRA ListOps task, writing the LRA release format.

The distribution is the reference's (lra_benchmarks/data/listops.py): operators MIN, MAX, MED
(median truncated to int) and SM (sum mod 10) over digits 0-9; a node below the maximum depth is
an operator with probability 0.25 (2 to `max_args` arguments), else a digit; the length counts
digits plus two per operator (the operator token and its closing bracket) and is accepted when
`min_length < length < max_length` (strict, as the reference); trees are de-duplicated. Unlike
the reference, a seed fixes the output (Python's `random.Random`, and de-duplication keeps the
first occurrence in generation order instead of iterating a hash-ordered set).
"""

from __future__ import annotations

import csv
import os
import random
import statistics

from lra_keras.data.output_folder import check_output, claim_output, finish_output, writing
from lra_keras.errors import UserError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"


class _TooLong(Exception):
    pass


def _apply(op: str, values: list[int]) -> int:
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        # np.median then int(): the mean of the two middle values, truncated.
        return int(statistics.median(values))
    return sum(values) % 10


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an int >= {minimum}, got {value!r}.")


def _check_generator_arguments(seed, min_length, max_length, max_depth, max_args) -> None:
    _check_int("seed", seed, 0)
    _check_int("min_length", min_length, 0)
    _check_int("max_length", max_length, 2)
    _check_int("max_depth", max_depth, 1)
    _check_int("max_args", max_args, 2)
    if min_length >= max_length - 1:
        # Lengths are strictly between the bounds, so some integer must fit.
        raise UserError(
            f"Expected min_length < max_length - 1 (lengths lie strictly between them), got "
            f"min_length={min_length}, max_length={max_length}."
        )


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int, budget: list[int]):
    """Returns (string, value) of one random subtree; raises _TooLong past the budget."""
    if depth < max_depth and rng.random() <= 0.25:
        num_args = rng.randint(2, max_args)
        budget[0] -= 2
        strings, values = [], []
        for _ in range(num_args):
            s, v = _tree(rng, depth + 1, max_depth, max_args, budget)
            strings.append(s)
            values.append(v)
        op = rng.choice(OPERATORS)
        # The reference's string of its binary tuple encoding ((((op, a), b), c), END).
        text = "( " * (num_args + 1) + op + " " + strings[0] + " )"
        text += "".join(" " + s + " )" for s in strings[1:]) + " " + END + " )"
        if budget[0] < 0:
            raise _TooLong
        return text, _apply(op, values)
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLong
    digit = rng.randrange(10)
    return str(digit), digit


def generate_listops(
    num_examples: int,
    seed: int = 0,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    max_attempts: int | None = None,
) -> list[tuple[str, int]]:
    """Generates `num_examples` distinct ListOps examples as `(source, target)` pairs.

    Args:
        num_examples: number of distinct examples.
        seed: the random seed; the same seed gives the same examples in the same order.
        min_length, max_length: exclusive bounds on the length (digits + 2 per operator).
        max_depth: nodes at this depth are digits (the root has depth 1).
        max_args: the most arguments of an operator (at least 2).
        max_attempts: give up after this many random trees (default: 10000 per example).

    Returns:
        A list of `(source, target)`; `source` is the release's string form, e.g.
        `"( ( ( [MAX 2 ) 9 ) ] )"`, and `target` the value in 0-9.
    """
    _check_int("num_examples", num_examples, 0)
    _check_generator_arguments(seed, min_length, max_length, max_depth, max_args)
    rng = random.Random(seed)
    seen: dict[str, int] = {}
    attempts = 0
    limit = max_attempts if max_attempts is not None else 10000 * max(num_examples, 1)
    while len(seen) < num_examples:
        attempts += 1
        if attempts > limit:
            raise UserError(
                f"Generated only {len(seen)} of {num_examples} distinct examples with "
                f"min_length={min_length}, max_length={max_length} after {limit} trees; "
                "widen the length bounds."
            )
        # Trees reaching max_length are abandoned early: they would be rejected anyway.
        budget = [max_length - 1]
        try:
            text, value = _tree(rng, 1, max_depth, max_args, budget)
        except _TooLong:
            continue
        length = max_length - 1 - budget[0]
        if length <= min_length:
            continue
        seen.setdefault(text, value)
    return list(seen.items())


def _write_tsv(path: str, examples: list[tuple[str, int]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["Source", "Target"])
        writer.writerows(examples)


def write_listops(
    out_dir: str,
    num_train: int = 96000,
    num_val: int = 2000,
    num_test: int = 2000,
    seed: int = 0,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    task_name: str = "basic",
    overwrite: bool = False,
) -> dict[str, str]:
    """Writes `<out_dir>/<task_name>_{train,val,test}.tsv` in the LRA release format.

    The files are tab separated with the header `Source\\tTarget`; the first `num_train`
    examples go to train, the next `num_val` to val and the last `num_test` to test, so no
    expression appears in two splits. `out_dir` must be empty or new; with `overwrite`, a
    folder an earlier `write_listops` generated (it carries the `.lra_data.json` marker) is
    replaced whole, and any other non-empty folder is refused. Returns the paths by file split
    name.
    """
    for name, count in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        _check_int(name, count, 1)
    _check_generator_arguments(seed, min_length, max_length, max_depth, max_args)
    check_output(out_dir, overwrite)
    examples = generate_listops(
        num_train + num_val + num_test,
        seed=seed,
        min_length=min_length,
        max_length=max_length,
        max_depth=max_depth,
        max_args=max_args,
    )
    arguments = dict(
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        seed=seed,
        min_length=min_length,
        max_length=max_length,
        max_depth=max_depth,
        max_args=max_args,
        task_name=task_name,
    )
    # Generated before the folder is claimed: a failure leaves the old data in place.
    claim_output(out_dir, overwrite, "lra-data listops", arguments)
    bounds = {
        "train": (0, num_train),
        "val": (num_train, num_train + num_val),
        "test": (num_train + num_val, num_train + num_val + num_test),
    }
    paths = {}
    for name, (lo, hi) in bounds.items():
        path = os.path.join(out_dir, f"{task_name}_{name}.tsv")
        with writing(path, out_dir, "lra-data listops"):
            _write_tsv(path, examples[lo:hi])
        paths[name] = path
    finish_output(out_dir)
    return paths
