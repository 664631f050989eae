"""ListOps: the generator's distribution (against an independent evaluator) and the reader."""

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lra_keras.data import generate_listops, load, user_error_from, write_listops

VOCAB = ["[MIN", "[MAX", "[MED", "[SM", "X"] + [str(d) for d in range(10)]


def evaluate(source):
    """Independent evaluator of the release string: returns (value, length, depth, max_args)."""
    tokens = source.replace("(", " ").replace(")", " ").split()
    stack, length, depth, max_depth, arg_counts = [], 0, 1, 1, []
    for tok in tokens:
        if tok.startswith("["):
            stack.append((tok, []))
            length += 2
            depth += 1
            max_depth = max(max_depth, depth)
        elif tok == "]":
            op, args = stack.pop()
            depth -= 1
            arg_counts.append(len(args))
            value = {
                "[MIN": min(args),
                "[MAX": max(args),
                "[MED": int(np.median(args)),
                "[SM": sum(args) % 10,
            }[op]
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        else:
            length += 1
            if stack:
                stack[-1][1].append(int(tok))
            else:
                result = int(tok)
    assert not stack
    return result, length, max_depth, arg_counts


def test_generator_distribution():
    examples = generate_listops(60, seed=3, min_length=20, max_length=120)
    assert len({s for s, _ in examples}) == 60
    for source, target in examples:
        value, length, depth, arg_counts = evaluate(source)
        assert value == target
        assert 20 < length < 120
        assert depth <= 10
        assert all(2 <= n <= 10 for n in arg_counts)
        assert source.startswith("( ")  # the release's nested-tuple string form


def test_generator_reference_string_form():
    # One fixed operator node in the reference's ((((op, a), b), c), END) string form.
    source, target = next(
        (s, t)
        for s, t in generate_listops(200, seed=0, min_length=3, max_length=6)
        if s.count("[") == 1
    )
    tokens = source.split()
    n = len(tokens) - tokens.count("(") - tokens.count(")") - 2
    assert source.startswith("( " * (n + 1) + tokens[n + 1])
    assert source.endswith(" ] )")


def test_same_seed_same_files(tmp_path):
    a = write_listops(str(tmp_path / "a"), 10, 3, 3, seed=5, min_length=10, max_length=60)
    b = write_listops(str(tmp_path / "b"), 10, 3, 3, seed=5, min_length=10, max_length=60)
    c = write_listops(str(tmp_path / "c"), 10, 3, 3, seed=6, min_length=10, max_length=60)
    for split in a:
        assert Path(a[split]).read_text() == Path(b[split]).read_text()
    assert Path(a["train"]).read_text() != Path(c["train"]).read_text()
    with open(a["train"]) as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["Source", "Target"] and len(rows) == 11
    sources = [Path(p).read_text().splitlines()[1:] for p in a.values()]
    assert len(set(sum(sources, []))) == 16  # no expression in two splits


def test_cli_listops(tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "lra_keras.data.cli",
        "listops",
        "--out",
        str(out),
        "--num_train",
        "8",
        "--num_val",
        "2",
        "--num_test",
        "2",
        "--seed",
        "4",
        "--min_length",
        "10",
        "--max_length",
        "40",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    expected = write_listops(str(tmp_path / "api"), 8, 2, 2, seed=4, min_length=10, max_length=40)
    for split, path in expected.items():
        assert (out / f"basic_{split}.tsv").read_text() == Path(path).read_text()


def _rows(path):
    with open(path) as f:
        return list(csv.reader(f, delimiter="\t"))[1:]


def test_reader_ids_and_labels(listops_dir):
    rows = _rows(os.path.join(listops_dir, "basic_val.tsv"))
    batches = list(load("listops", "validation", listops_dir, 5, max_length=30).as_numpy_iterator())
    tokens = np.concatenate([b[0]["tokens"] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert [len(b[1]) for b in batches] == [5, 5, 2]  # eval keeps the remainder
    assert tokens.dtype == np.int32 and labels.dtype == np.int32
    for (source, target), ids, label in zip(rows, tokens, labels, strict=True):
        words = source.replace("(", " ").replace(")", " ").replace("]", "X").split()
        expected = [VOCAB.index(w) + 1 for w in words][:30]
        np.testing.assert_array_equal(ids, expected + [0] * (30 - len(expected)))
        assert label == int(target)


def test_train_shuffles_examples_seeded(listops_dir):
    def batches(seed, shuffle=None):
        ds = load("listops", "train", listops_dir, 8, max_length=64, shuffle=shuffle, seed=seed)
        return [(x["tokens"], y) for x, y in ds.as_numpy_iterator()]

    plain = batches(0, shuffle=False)
    a, b, c = batches(1), batches(1), batches(2)
    assert len(a) == 5 and all(x.shape == (8, 64) for x, _ in a)  # 40 examples, drop remainder
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(a, c, strict=True))
    # By example, not by batch: shuffled batches are not the unshuffled ones reordered.
    plain_rows = {r.tobytes() for x, _ in plain for r in x}
    shuffled_rows = {r.tobytes() for x, _ in a for r in x}
    assert shuffled_rows == plain_rows
    plain_batches = {x.tobytes() for x, _ in plain}
    assert sum(x.tobytes() in plain_batches for x, _ in a) == 0


def test_release_layout_and_crlf(tmp_path, listops_dir):
    # The LRA tarball keeps the files in listops-1000/; lines may end in CRLF.
    sub = tmp_path / "listops-1000"
    sub.mkdir()
    for name in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
        text = Path(listops_dir, name).read_text().replace("\n", "\r\n")
        (sub / name).write_bytes(text.encode())
    got = next(load("listops", "test", str(tmp_path), 12, max_length=40).as_numpy_iterator())
    want = next(load("listops", "test", listops_dir, 12, max_length=40).as_numpy_iterator())
    np.testing.assert_array_equal(got[0]["tokens"], want[0]["tokens"])
    np.testing.assert_array_equal(got[1], want[1])


def test_malformed_line_names_file_and_line(tmp_path, listops_dir):
    import tensorflow as tf

    lines = Path(listops_dir, "basic_test.tsv").read_text().splitlines()
    lines[4] = lines[4].replace("\t", " ")  # file line 5 loses its Target column
    (tmp_path / "basic_test.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        list(load("listops", "test", str(tmp_path), 4, max_length=40))
    message = str(user_error_from(err.value))
    path = tmp_path / "basic_test.tsv"
    assert message.startswith(f"Malformed line in {path}, line 5: expected 2 tab-separated")
    assert "got 1 fields" in message and "\n" not in message


def test_missing_file_says_how_to_generate(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load("listops", "train", str(tmp_path), 4)
    assert str(tmp_path / "basic_train.tsv") in str(err.value)
    assert "lra-data listops" in str(err.value)


def test_bad_target_names_file_and_line(tmp_path, listops_dir):
    import tensorflow as tf

    lines = Path(listops_dir, "basic_test.tsv").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t12"  # file line 3: a target outside 0-9
    (tmp_path / "basic_test.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        list(load("listops", "test", str(tmp_path), 4, max_length=40))
    message = str(user_error_from(err.value))
    assert re.match(
        r"Malformed line in .*basic_test.tsv, line 3: expected .*field 2 is '12'", message
    )
