"""`load_numpy` (numpy + Pillow) against the tf.data path `load`, and without TensorFlow.

Without shuffle every batch must equal tf.data's exactly; with shuffle a pass is a permutation
of the same examples, fixed by (seed, epoch). The fixtures are the session's tiny generated
ListOps and Pathfinder folders and AAN-format pair files (tests/data/conftest.py).
"""

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from lra_keras.data import load, load_numpy
from lra_keras.data.tasks import DataNotFoundError
from lra_keras.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "backends"))
import no_tensorflow  # noqa: E402

# (task, fixture, max_length, extra options): lengths that truncate some examples and pad
# others; Pathfinder at full size and downsampled (16 x 16 and 8 x 8 of 32 x 32).
CASES = [
    ("listops", "listops_dir", 40, {}),
    ("retrieval", "aan_dir", 24, {}),
    ("pathfinder", "pathfinder_dir", None, {}),
    ("pathfinder", "pathfinder_dir", 256, {}),
    ("pathfinder", "pathfinder_dir", 64, {"split_seed": 5}),
]


def tf_batches(task, split, data_dir, batch_size, max_length, **options):
    ds = load(task, split, data_dir, batch_size, max_length=max_length, shuffle=False, **options)
    return list(ds.as_numpy_iterator())


def assert_same_batches(got, want):
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert set(gx) == set(wx)
        for name in wx:
            assert gx[name].dtype == wx[name].dtype == np.int32
            np.testing.assert_array_equal(gx[name], wx[name], err_msg=name)
        assert gy.dtype == wy.dtype == np.int32
        np.testing.assert_array_equal(gy, wy)


@pytest.mark.parametrize("task, fixture, max_length, options", CASES)
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_batches_equal_tf_data(request, task, fixture, max_length, options, split):
    data_dir = request.getfixturevalue(fixture)
    batch_size = 3  # leaves a remainder: dropped for train, kept otherwise
    want = tf_batches(task, split, data_dir, batch_size, max_length, **options)
    got_ds = load_numpy(task, split, data_dir, batch_size, max_length, shuffle=False, **options)
    got = list(got_ds)
    assert_same_batches(got, want)
    assert got_ds.drop_remainder == (split == "train")
    assert got_ds.num_batches == len(want) > 0
    examples = sum(len(y) for _, y in want)
    if split != "train":
        assert got_ds.num_examples == examples
    # The spec describes the batches, as tf.data's element_spec does.
    x, y = got[0]
    assert set(got_ds.element_spec) == {*x, "label"}
    for name, (shape, dtype) in got_ds.element_spec.items():
        array = y if name == "label" else x[name]
        assert array.shape[1:] == shape and array.dtype == dtype


def _rows(dataset, epoch=0, start=0):
    """Every example of a pass as (label, tokens...) tuples, in order."""
    rows = []
    for x, y in dataset.batches(epoch, start):
        names = sorted(x)
        for i in range(len(y)):
            rows.append((int(y[i]), *(tuple(x[n][i]) for n in names)))
    return rows


@pytest.mark.parametrize("task, fixture", [("listops", "listops_dir"), ("retrieval", "aan_dir")])
def test_shuffle_is_a_seeded_permutation_per_epoch(request, task, fixture):
    data_dir = request.getfixturevalue(fixture)
    plain = _rows(load_numpy(task, "validation", data_dir, 2, 24, shuffle=False))
    shuffled = load_numpy(task, "validation", data_dir, 2, 24, shuffle=True, seed=4)
    epoch0, epoch1 = _rows(shuffled, 0), _rows(shuffled, 1)
    assert sorted(epoch0) == sorted(plain) == sorted(epoch1)  # the same examples
    assert epoch0 != plain and epoch1 != epoch0  # in another order each epoch
    again = load_numpy(task, "validation", data_dir, 2, 24, shuffle=True, seed=4)
    assert _rows(again, 1) == epoch1  # fixed by (seed, epoch)
    other = load_numpy(task, "validation", data_dir, 2, 24, shuffle=True, seed=5)
    assert _rows(other, 0) != epoch0


def test_train_shuffles_by_default_and_drops_the_remainder(listops_dir):
    train = load_numpy("listops", "train", listops_dir, 6, 40, seed=1)
    assert train.drop_remainder and train.num_examples == 40 and train.num_batches == 6
    rows = _rows(train, 0)
    assert len(rows) == 36 and len(set(rows)) == 36
    assert rows != _rows(load_numpy("listops", "train", listops_dir, 6, 40, shuffle=False), 0)


@pytest.mark.parametrize("shuffle", [False, True])
def test_start_resumes_exactly(listops_dir, shuffle):
    ds = load_numpy("listops", "train", listops_dir, 4, 40, shuffle=shuffle, seed=2)
    whole = list(ds.batches(3))
    resumed = list(ds.batches(3, start=4))
    assert_same_batches(resumed, whole[4:])
    assert list(ds.batches(3, start=ds.num_batches)) == []
    with pytest.raises(ValueError, match="start=11 is past the 10 batches"):
        ds.batches(3, start=11)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        ds.batches(-1)


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (("cifar", "train"), {}),
        (("listops", "dev"), {}),
        (("listops", "train"), {"difficulty": "hard"}),
        (("pathfinder", "train"), {"max_length": 1000}),
        (("pathfinder", "train"), {"difficulty": "medium"}),
        (("listops", "train"), {"max_length": 0}),
    ],
)
def test_refuses_what_load_refuses(tmp_path, args, kwargs):
    with pytest.raises(UserError) as want:
        load(*args, str(tmp_path), 2, **kwargs)
    with pytest.raises(UserError) as got:
        load_numpy(*args, str(tmp_path), 2, **kwargs)
    assert str(got.value) == str(want.value)


def test_missing_and_small_splits_as_load(tmp_path, listops_dir):
    with pytest.raises(DataNotFoundError, match="(?s)basic_train.tsv.*lra-data listops"):
        load_numpy("listops", "train", str(tmp_path), 2)
    with pytest.raises(UserError, match=r"train split of listops has only 40 .*batch size 64"):
        load_numpy("listops", "train", listops_dir, 64)


@pytest.mark.parametrize("task", ["text", "image"])
def test_tfds_tasks_need_tensorflow(tmp_path, task):
    with pytest.raises(UserError, match="TensorFlow Datasets .* needs TensorFlow"):
        load_numpy(task, "train", str(tmp_path), 2)


def test_prepared_records_alone_are_named(tmp_path, listops_dir):
    from lra_keras.data import prepare

    data = tmp_path / "d"
    shutil.copytree(listops_dir, data)
    prepare("listops", str(data))
    for name in os.listdir(data):
        if name.endswith(".tsv"):
            os.remove(data / name)
    assert len(list(load("listops", "test", str(data), 4, max_length=40))) == 3  # tf reads them
    with pytest.raises(DataNotFoundError, match=r"Only prepared TFRecords .*lra-data prepare"):
        load_numpy("listops", "test", str(data), 4, max_length=40)


def test_generators_cli_and_reader_work_without_tensorflow(tmp_path):
    """`lra-data listops`, `lra-data pathfinder` and `load_numpy` where TensorFlow is absent."""
    blocker = no_tensorflow.blocker_dir(tmp_path / "blocker")
    blocked = no_tensorflow.run_python(["-c", "import tensorflow"], blocker, cwd=tmp_path)
    assert blocked.returncode != 0 and "ModuleNotFoundError" in blocked.stderr
    cli = ["-m", "lra_keras.data.cli"]
    listops = ["listops", "--out", "lo", "--num_train", "6", "--num_val", "3", "--num_test", "3"]
    done = no_tensorflow.run_python([*cli, *listops, "--min_length", "5", "--max_length", "30"],
                                    blocker, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    pathfinder = ["pathfinder", "--out", "pf", "--num_images", "10", "--images_per_folder", "5"]
    done = no_tensorflow.run_python([*cli, *pathfinder], blocker, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    script = """
import sys
from lra_keras.data import load_numpy
lo = load_numpy("listops", "train", "lo", 2, max_length=30)
pf = load_numpy("pathfinder", "validation", "pf", 1)
x, y = next(iter(lo))
assert x["tokens"].shape == (2, 30) and y.shape == (2,)
x, y = next(iter(pf))
assert x["tokens"].shape == (1, 1024), x["tokens"].shape
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {blocked})
assert not loaded, loaded
print("read without tensorflow")
""".replace("{blocked}", repr(set(no_tensorflow.BLOCKED)))
    done = no_tensorflow.run_python(["-c", script], blocker, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "read without tensorflow" in done.stdout
