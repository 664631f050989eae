"""Retrieval, text and image readers, TFDS offline errors, prepared TFRecords, bad input."""

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from lra_keras.data import TASKS, load, prepare, user_error_from


def byte_ids(text, max_length):
    ids = [b + 1 for b in text.encode("utf-8")][:max_length]
    return ids + [0] * (max_length - len(ids))


def test_retrieval_reader(aan_dir):
    lines = Path(aan_dir, "new_aan_pairs.eval.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in lines.splitlines()]
    batches = list(load("retrieval", "validation", aan_dir, 4, max_length=16).as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    feats = {k: np.concatenate([b[0][k] for b in batches]) for k in ("tokens_1", "tokens_2")}
    labels = np.concatenate([b[1] for b in batches])
    assert set(batches[0][0]) == {"tokens_1", "tokens_2"} and labels.dtype == np.int32
    for i, row in enumerate(rows):
        assert labels[i] == int(float(row[0]))
        np.testing.assert_array_equal(feats["tokens_1"][i], byte_ids(row[3], 16))
        np.testing.assert_array_equal(feats["tokens_2"][i], byte_ids(row[4], 16))


def test_retrieval_malformed_line(tmp_path, aan_dir):
    lines = Path(aan_dir, "new_aan_pairs.test.tsv").read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:4])  # line 3 has 4 fields
    (tmp_path / "new_aan_pairs.test.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        list(load("retrieval", "test", str(tmp_path), 2, max_length=8))
    message = str(user_error_from(err.value))
    assert "new_aan_pairs.test.tsv, line 3: expected 5" in message and "got 4 fields" in message


def test_unknown_task_split_option_length():
    with pytest.raises(ValueError, match="valid tasks are listops, text, retrieval"):
        load("cifar", "train", "/nowhere", 2)
    with pytest.raises(ValueError, match="valid splits are train, validation, test"):
        load("listops", "dev", "/nowhere", 2)
    with pytest.raises(ValueError, match="Unknown options"):
        load("listops", "train", "/nowhere", 2, difficulty="hard")
    with pytest.raises(ValueError, match="fixed by the image size"):
        load("pathfinder", "train", "/nowhere", 2, max_length=100)
    with pytest.raises(ValueError, match="batch_size"):
        load("listops", "train", "/nowhere", 0)
    assert TASKS == (
        "listops",
        "text",
        "retrieval",
        "image",
        "pathfinder",
        "pathfinder64",
        "pathx",
        "pathfinder256",
    )


def test_tfds_missing_explains_preparation(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load("text", "train", str(tmp_path), 2)
    message = str(err.value)
    assert "imdb_reviews" in message and str(tmp_path) in message
    assert "download_and_prepare" in message and "manual_dir" in message


TEXTS = [f"review {i} " + "é" * (i % 3) + "!" * i for i in range(40)]


def _fake_tfds(self, split, **kwargs):
    name = self.name
    if name == "imdb_reviews":
        offset = 0 if str(split).startswith("train") else 1000
        texts = [f"{offset + i}|" + t for i, t in enumerate(TEXTS)]
        return tf.data.Dataset.from_tensor_slices(
            {"text": texts, "label": np.arange(40, dtype=np.int64) % 2}
        )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(20) % 10})


def _all(ds):
    batches = list(ds.as_numpy_iterator())
    tokens = np.concatenate([b[0]["tokens"] for b in batches])
    return tokens, np.concatenate([b[1] for b in batches])


def test_text_split_and_encoding(tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=_fake_tfds):
        train, ytrain = _all(load("text", "train", str(tmp_path), 4, 24, shuffle=False))
        val, yval = _all(load("text", "validation", str(tmp_path), 4, 24))
        val2, _ = _all(load("text", "validation", str(tmp_path), 4, 24))
        other, _ = _all(load("text", "validation", str(tmp_path), 4, 24, split_seed=1))
        test, _ = _all(load("text", "test", str(tmp_path), 4, 24))
    assert len(train) % 4 == 0 and len(val) + len(train) >= 37 and len(test) == 40
    np.testing.assert_array_equal(val, val2)
    assert 1 <= len(val) <= 12 and not np.array_equal(val, other)

    # Every validation review comes from train, and none is also in the train split.
    def ids(rows):
        texts = [bytes((r[r > 0] - 1).astype(np.uint8)).decode(errors="replace") for r in rows]
        return {t.split("|")[0] for t in texts}

    assert not ids(train) & ids(val) and all(int(i) < 1000 for i in ids(val))
    texts = {f"{i}|" + t: i % 2 for i, t in enumerate(TEXTS)}
    for row, label in zip(val, yval, strict=True):
        match = [t for t in texts if byte_ids(t, 24) == list(row)]
        assert len(match) == 1 and texts[match[0]] == label


def test_image_grayscale_ids(tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=_fake_tfds):
        tokens, labels = _all(load("image", "test", str(tmp_path), 8))
    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    # ITU-R 601 weights on [0, 1] values, back to uint8 as tf.image.convert_image_dtype does.
    gray = (images / 255.0) @ np.array([0.2989, 0.587, 0.114])
    want = np.floor(gray * 255.5).astype(np.int32).reshape(20, 1024)
    assert tokens.shape == (20, 1024) and tokens.dtype == np.int32
    assert np.abs(tokens - want).max() <= 1 and np.mean(tokens == want) > 0.99
    np.testing.assert_array_equal(labels, np.arange(20) % 10)


def test_prepared_records_match_release(tmp_path, listops_dir, aan_dir):
    for task, src in (("listops", listops_dir), ("retrieval", aan_dir)):
        data_dir = tmp_path / task
        data_dir.mkdir()
        for name in os.listdir(src):
            if name.endswith(".tsv"):
                (data_dir / name).write_bytes(Path(src, name).read_bytes())
        release = list(load(task, "test", str(data_dir), 4, 20).as_numpy_iterator())
        prepare(task, str(data_dir))
        assert os.path.isdir(data_dir / "tfds")
        os.remove(data_dir / [n for n in os.listdir(src) if "test" in n][0])  # now unused
        prepared = list(load(task, "test", str(data_dir), 4, 20).as_numpy_iterator())
        assert len(prepared) == len(release)
        for (fa, ya), (fb, yb) in zip(release, prepared, strict=True):
            np.testing.assert_array_equal(ya, yb)
            for key in fa:
                np.testing.assert_array_equal(fa[key], fb[key])


@pytest.mark.parametrize("task", ["listops", "retrieval", "pathfinder"])
def test_iterator_checkpoint_restores_position(task, tmp_path, request):
    data_dir = request.getfixturevalue(
        {"listops": "listops_dir", "retrieval": "aan_dir", "pathfinder": "pathfinder_dir"}[task]
    )
    length = None if task == "pathfinder" else 24

    def batches():
        return iter(load(task, "train", data_dir, 2, length, seed=3).repeat())

    it = batches()
    for _ in range(3):
        next(it)
    path = tf.train.Checkpoint(iterator=it).save(str(tmp_path / "it"))
    expected = [next(it) for _ in range(12)]
    restored = batches()
    tf.train.Checkpoint(iterator=restored).restore(path)
    for want in expected:
        got = next(restored)
        for key in want[0]:
            np.testing.assert_array_equal(got[0][key], want[0][key])
        np.testing.assert_array_equal(got[1], want[1])
