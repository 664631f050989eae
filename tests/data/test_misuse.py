"""Misuse and faults of the data pipeline (issue 16): nothing stale, every error named.

Fixtures are written in the release formats (generated TSVs and PNG folders), then damaged.
"""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from lra_keras.data import (
    listops_generator,
    load,
    load_numpy,
    prepare,
    user_error_from,
    write_listops,
    write_pathfinder,
)
from lra_keras.data.output_folder import MARKER
from lra_keras.data.release_files import UTF8_BOM
from lra_keras.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
SMALL = dict(min_length=10, max_length=60)


def lra_data(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "lra_keras.data.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=120,
    )


def assert_one_line_error(done, *fragments):
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("lra-data: error: ")
    for fragment in fragments:
        assert fragment in last, last


def copy_listops(src, dst):
    shutil.copytree(src, dst)
    return dst


def replace_line(path, index, line: bytes):
    lines = Path(path).read_bytes().split(b"\n")
    lines[index] = line
    Path(path).write_bytes(b"\n".join(lines))


def labels(task, split, data_dir, **kwargs):
    max_length = None if task.startswith("path") else 40
    ds = load(task, split, str(data_dir), 4, max_length=max_length, shuffle=False, **kwargs)
    return np.concatenate([y for _, y in ds.as_numpy_iterator()])


# Generated folders: refused when not empty, replaced whole with --overwrite ------------------


def test_generators_refuse_non_empty_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty.*--overwrite"):
        write_listops(str(out), 4, 2, 2, **SMALL)
    # --overwrite deletes only what lra-data generated (the marker), never another folder.
    with pytest.raises(UserError, match="did not generate"):
        write_listops(str(out), 4, 2, 2, overwrite=True, **SMALL)
    theirs = tmp_path / "pf" / "curv_contour_length_14"
    theirs.mkdir(parents=True)
    (theirs / "image.png").write_text("theirs")
    with pytest.raises(UserError, match="did not generate"):
        write_pathfinder(str(tmp_path / "pf"), num_images=2, overwrite=True)
    assert (theirs / "image.png").read_text() == "theirs"
    assert (out / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        write_listops(str(tmp_path / "file"), 4, 2, 2, **SMALL)


def test_overwrite_replaces_generated_folder_whole(tmp_path, monkeypatch):
    out = tmp_path / "listops"
    write_listops(str(out), 6, 2, 2, seed=1, **SMALL)
    (out / "tfds").mkdir()  # e.g. records prepared from the old files
    write_listops(str(out), 5, 2, 2, seed=2, overwrite=True, **SMALL)
    assert sorted(os.listdir(out)) == [MARKER, "basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    assert len(Path(out, "basic_train.tsv").read_text().splitlines()) == 6
    # Never the folder one works in.
    monkeypatch.chdir(out)
    with pytest.raises(UserError, match="working directory"):
        write_listops(".", 5, 2, 2, overwrite=True, **SMALL)


def test_pathfinder_regenerated_with_fewer_images_leaves_no_old_metadata(tmp_path):
    write_pathfinder(str(tmp_path), num_images=6, seed=1, images_per_folder=2)
    root = tmp_path / "curv_contour_length_14"
    with pytest.raises(UserError, match="not empty"):
        write_pathfinder(str(tmp_path), num_images=2, seed=2, images_per_folder=2)
    write_pathfinder(str(tmp_path), num_images=2, seed=2, images_per_folder=2, overwrite=True)
    assert sorted(os.listdir(root / "metadata")) == ["0.npy"]
    assert sorted(os.listdir(root / "imgs")) == ["0"]
    rows = (root / "metadata" / "0.npy").read_text().splitlines()
    assert [r.split()[:2] for r in rows] == [["imgs/0", "sample_0.png"], ["imgs/0", "sample_1.png"]]


# A full disk: the file named, the folder left marked incomplete and refused by every reader --


def no_space(*args, **kwargs):
    """What `write()` raises on a full disk: ENOSPC without a file name."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_names_the_file_and_readers_refuse_the_folder(tmp_path, monkeypatch):
    out = tmp_path / "listops"
    real = listops_generator._write_tsv

    def fill_up(path, examples):
        if path.endswith("_val.tsv"):
            Path(path).write_text("Source\tTarget\n( [MAX 2")  # the truncated file it leaves
            no_space()
        real(path, examples)

    monkeypatch.setattr(listops_generator, "_write_tsv", fill_up)
    with pytest.raises(UserError) as err:
        write_listops(str(out), 6, 3, 3, **SMALL)
    message = str(err.value)
    assert f"No space left on device while writing {out / 'basic_val.tsv'}" in message
    assert "--overwrite" in message and "None" not in message
    for split in ("train", "validation"):  # train was written whole: the folder is refused
        with pytest.raises(UserError, match=f"data folder {out} is incomplete.*Regenerate"):
            load("listops", split, str(out), 2)
        with pytest.raises(UserError, match=f"data folder {out} is incomplete.*Regenerate"):
            load_numpy("listops", split, str(out), 2)
    with pytest.raises(UserError, match="incomplete"):
        prepare("listops", str(out))
    monkeypatch.setattr(listops_generator, "_write_tsv", real)
    write_listops(str(out), 6, 3, 3, overwrite=True, **SMALL)  # what the message says to do
    assert len(labels("listops", "validation", out)) == 3


def test_full_disk_in_pathfinder_names_the_image(tmp_path, monkeypatch):
    from lra_keras.data import pathfinder_generator

    real, saved = pathfinder_generator._save_png, []

    def fill_up(image, path):
        if len(saved) == 3:
            no_space()
        saved.append(path)
        real(image, path)

    monkeypatch.setattr(pathfinder_generator, "_save_png", fill_up)
    with pytest.raises(UserError) as err:
        write_pathfinder(str(tmp_path), num_images=6, seed=1, images_per_folder=4)
    root = tmp_path / "curv_contour_length_14"
    assert f"while writing {root / 'imgs' / '0' / 'sample_3.png'}: the output folder {root}" in (
        str(err.value)
    )
    for reader in (load, load_numpy):
        with pytest.raises(UserError, match=f"data folder {root} is incomplete"):
            reader("pathfinder", "test", str(tmp_path), 1)


def test_unreadable_marker_counts_as_incomplete(tmp_path, listops_dir):
    data = copy_listops(listops_dir, tmp_path / "d")
    (data / MARKER).write_text('{"generator": "lra-data listops", "argu')  # cut short
    for reader in (load, load_numpy):
        with pytest.raises(UserError, match="incomplete.*cannot be read.*--overwrite"):
            reader("listops", "test", str(data), 2)


def test_cli_full_disk_is_one_line(tmp_path):
    # Without TensorFlow (the generators need none), so the subprocess starts fast.
    code = (
        "import errno, os, sys\n"
        "from lra_keras.data import listops_generator\n"
        "def full(path, examples):\n"
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "listops_generator._write_tsv = full\n"
        "from lra_keras.data.cli import run\n"
        "sys.argv = ['lra-data', 'listops', '--out', 'out', '--num_train', '4', "
        "'--num_val', '2', '--num_test', '2', '--min_length', '5', '--max_length', '40']\n"
        "run()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=tmp_path
    )
    assert_one_line_error(done, f"while writing {Path('out', 'basic_train.tsv')}", "--overwrite")
    assert "None" not in done.stderr


# A UTF-8 byte order mark and CRLF line ends (Notepad) read as the plain file -----------------


@pytest.mark.parametrize("bom", [b"", UTF8_BOM])
@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
@pytest.mark.parametrize("task", ["listops", "retrieval"])
def test_bom_and_crlf_read_as_the_plain_file(tmp_path, listops_dir, aan_dir, task, bom, end):
    source, name = (
        (listops_dir, "basic_test.tsv")
        if task == "listops"
        else (aan_dir, "new_aan_pairs.test.tsv")
    )
    data = tmp_path / "d"
    shutil.copytree(source, data)
    path = data / name
    path.write_bytes(bom + path.read_bytes().replace(b"\n", end))
    for reader in (load, load_numpy):
        want = reader(task, "test", source, 4, max_length=40, shuffle=False)
        got = reader(task, "test", str(data), 4, max_length=40, shuffle=False)
        if reader is load:
            want, got = list(want.as_numpy_iterator()), list(got.as_numpy_iterator())
        else:
            want, got = list(want), list(got)
        assert len(got) == len(want) == 3
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            np.testing.assert_array_equal(gy, wy)
            for key in wx:
                np.testing.assert_array_equal(gx[key], wx[key])
    if task == "listops":  # prepare reads it as the readers do
        prepare("listops", str(data))
        assert len(labels("listops", "test", data)) == 12


# Prepared records: rebuilt or refused when their sources changed ------------------------------


def test_prepared_records_follow_their_sources(tmp_path):
    data = tmp_path / "listops"
    write_listops(str(data), 8, 4, 4, seed=1, **SMALL)
    prepare("listops", str(data))
    write_listops(str(data), 8, 4, 4, seed=5, overwrite=True, **SMALL)
    assert not (data / "tfds").exists()  # the old records went with the folder
    prepare("listops", str(data))
    # Regenerated files beside old records: refused, then rebuilt by prepare.
    for name in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
        replace_line(data / name, 1, b"( [MAX 1 2 ] )\t2")
    with pytest.raises(UserError, match=r"stale: .*basic_test.tsv.*lra-data prepare --task"):
        load("listops", "test", str(data), 4)
    records = prepare("listops", str(data))
    assert labels("listops", "test", data)[0] == 2
    # A copy (new times, same bytes) is still fresh; prepare then keeps the records.
    copy = Path(shutil.copytree(data, tmp_path / "copy"))
    for name in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
        os.utime(copy / name, ns=(1, 1))
    assert labels("listops", "test", copy)[0] == 2
    manifest = Path(copy / os.path.relpath(records, data) / "lra_sources.json").read_text()
    assert '"mtime_ns": 1' in manifest  # matched by content once, by time from then on
    stamp = os.stat(os.path.join(records, "lra_sources.json")).st_mtime_ns
    assert prepare("listops", str(data)) == records
    assert os.stat(os.path.join(records, "lra_sources.json")).st_mtime_ns == stamp


def test_prepared_pathfinder_follows_regenerated_folder(tmp_path):
    write_pathfinder(str(tmp_path), num_images=10, seed=1, images_per_folder=5)
    prepare("pathfinder", str(tmp_path))
    write_pathfinder(str(tmp_path), num_images=10, seed=2, images_per_folder=5, overwrite=True)
    with pytest.raises(UserError, match="stale"):
        load("pathfinder", "train", str(tmp_path), 2)
    prepare("pathfinder", str(tmp_path))
    reference = tmp_path / "reference"
    write_pathfinder(str(reference), num_images=10, seed=2, images_per_folder=5)
    np.testing.assert_array_equal(
        labels("pathfinder", "train", tmp_path), labels("pathfinder", "train", reference)
    )


# Counts and bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num_train", "-5"], "num_train must be an int >= 1, got -5"),
        (["--num_val", "0"], "num_val must be an int >= 1, got 0"),
        (["--min_length", "50", "--max_length", "40"], "min_length < max_length - 1"),
        (["--max_depth", "0"], "max_depth must be an int >= 1"),
        (["--seed", "-1"], "seed must be an int >= 0"),
    ],
)
def test_cli_listops_refuses_nonsense(tmp_path, args, message):
    done = lra_data("listops", "--out", tmp_path / "out", "--min_length", "10", *args)
    assert_one_line_error(done, message)
    assert not (tmp_path / "out").exists()


def test_cli_pathfinder_and_prepare_refuse_nonsense(tmp_path):
    for args, message in (
        (["--num_images", "0"], "num_images must be an int >= 1, got 0"),
        (["--workers", "0"], "workers must be an int >= 1"),
        (["--seed", "-3"], "seed must be an int >= 0"),
    ):
        assert_one_line_error(lra_data("pathfinder", "--out", tmp_path / "pf", *args), message)
    assert not (tmp_path / "pf").exists()
    assert_one_line_error(
        lra_data("prepare", "--task", "text", "--data_dir", tmp_path), "TFDS data sets already"
    )
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    assert_one_line_error(lra_data("listops", "--out", tmp_path / "taken"), "--overwrite")
    assert_one_line_error(lra_data("listops", "extra"), "Expected one command")
    assert_one_line_error(lra_data("listops", "--num_train", "abc"), "num_train")


@pytest.mark.slow  # a subprocess that imports TensorFlow
def test_cli_prepare_names_file_and_line(tmp_path, listops_dir):
    data = copy_listops(listops_dir, tmp_path / "d")
    replace_line(data / "basic_val.tsv", 3, b"( [MAX 2 3 ] )\t3.5")
    done = lra_data("prepare", "--task", "listops", "--data_dir", data)
    assert_one_line_error(done, "basic_val.tsv, line 4", "3.5")


# ListOps lines: the header is optional; prepare and the reader agree, naming file and line ----


def test_file_without_header_keeps_its_first_example(tmp_path, listops_dir):
    data = copy_listops(listops_dir, tmp_path / "d")
    path = data / "basic_test.tsv"
    path.write_bytes(path.read_bytes().split(b"\n", 1)[1])  # no `Source\tTarget` line
    want = labels("listops", "test", listops_dir)
    assert len(want) == 12
    np.testing.assert_array_equal(labels("listops", "test", data), want)
    prepare("listops", str(data))
    np.testing.assert_array_equal(labels("listops", "test", data), want)


@pytest.mark.parametrize(
    "line, lineno",
    [
        (b"\xff\xfe no tab here", 4),  # non-UTF-8 bytes in a malformed line
        (b"a" * 199 + "é".encode() + b" no tab", 4),  # a character across the quoted prefix
        (b"( [MAX \xff 3 ] )\t3", 4),  # non-UTF-8 source
        (b"( [MAX 2 3 ] )\t3.5", 4),
        (b"( [MAX 2 3 ] )\t10", 4),
        (b"( [MAX 2 3 ] )\t12", 2),
        (b"( [MAX 2 3 ] )\tx", 3),
    ],
)
def test_reader_and_prepare_refuse_the_same_lines(tmp_path, listops_dir, line, lineno):
    data = copy_listops(listops_dir, tmp_path / "d")
    replace_line(data / "basic_test.tsv", lineno - 1, line)
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        labels("listops", "test", data)
    message = str(user_error_from(err.value))
    where = f"Malformed line in {data / 'basic_test.tsv'}, line {lineno}: expected 2"
    assert message.startswith(where) and "\n" not in message
    with pytest.raises(UserError) as numpy_err:
        load_numpy("listops", "test", str(data), 4, max_length=40)
    assert str(numpy_err.value) == message  # the numpy reader's message is the same line
    with pytest.raises(UserError, match=f"basic_test.tsv, line {lineno}: expected 2"):
        prepare("listops", str(data))


def test_aan_labels_agree(tmp_path, aan_dir):
    shutil.copytree(aan_dir, tmp_path / "d")
    replace_line(tmp_path / "d" / "new_aan_pairs.test.tsv", 1, b"3.5\ta\tb\tt1\tt2")
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        labels("retrieval", "test", tmp_path / "d")
    assert "new_aan_pairs.test.tsv, line 2: expected 5" in str(user_error_from(err.value))
    with pytest.raises(UserError, match="new_aan_pairs.test.tsv, line 2: expected 5"):
        load_numpy("retrieval", "test", str(tmp_path / "d"), 4)
    with pytest.raises(UserError, match="new_aan_pairs.test.tsv, line 2"):
        prepare("retrieval", str(tmp_path / "d"))


# Empty or too small splits --------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"Source\tTarget\n", b"Source\tTarget\r\n\n  \n"])
def test_empty_split_is_named(tmp_path, listops_dir, content):
    data = copy_listops(listops_dir, tmp_path / "d")
    (data / "basic_val.tsv").write_bytes(content)
    with pytest.raises(UserError, match=r"validation split of listops is empty: .*basic_val.tsv"):
        load("listops", "validation", str(data), 4)
    with pytest.raises(UserError, match=r"validation split .*basic_val.tsv"):
        prepare("listops", str(data))


def test_batch_larger_than_split_is_named(tmp_path, listops_dir, aan_dir, pathfinder_dir):
    with pytest.raises(UserError, match=r"train split of listops has only 40 .*batch size 64"):
        load("listops", "train", listops_dir, 64)
    with pytest.raises(UserError, match=r"train split of retrieval has only 10 .*train.tsv"):
        load("retrieval", "train", aan_dir, 11)
    with pytest.raises(UserError, match=r"train split of pathfinder 32px hard has only 16"):
        load("pathfinder", "train", pathfinder_dir, 17)
    assert len(labels("listops", "test", listops_dir)) == 12  # evaluation keeps a short batch
    data = copy_listops(listops_dir, tmp_path / "d")
    prepare("listops", str(data))
    with pytest.raises(UserError, match=r"train split of listops has only 40 .*prepared records"):
        load("listops", "train", str(data), 41)


# Pathfinder files --------------------------------------------------------------------------


def damage(root, kind):
    image = sorted((root / "imgs" / "0").glob("*.png"))[0]
    data = image.read_bytes()
    if kind == "truncated":
        image.write_bytes(data[: len(data) // 2])
    elif kind == "not png":
        image.write_bytes(b"GIF89a" + data[6:])
    elif kind == "wrong size":
        from PIL import Image

        Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    else:  # corrupt compressed data, the file's structure intact
        image.write_bytes(data[:41] + bytes(b ^ 0x5A for b in data[41:-16]) + data[-16:])
    return image


@pytest.mark.parametrize("kind", ["truncated", "not png", "wrong size", "corrupt"])
def test_bad_image_names_file(tmp_path, pathfinder_dir, kind):
    shutil.copytree(pathfinder_dir, tmp_path / "d")
    image = damage(tmp_path / "d" / "curv_contour_length_14", kind)
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        for split in ("train", "validation", "test"):
            labels("pathfinder", split, tmp_path / "d")
    message = str(user_error_from(err.value))
    assert message.startswith(f"Bad Pathfinder image {image}: ") and "\n" not in message
    with pytest.raises(UserError, match=f"Bad Pathfinder image {image}: "):
        for split in ("train", "validation", "test"):
            list(load_numpy("pathfinder", split, str(tmp_path / "d"), 1))
    with pytest.raises(UserError, match=f"Bad Pathfinder image {image}"):
        prepare("pathfinder", str(tmp_path / "d"))


def test_lazy_error_message_is_one_line_and_unescaped():
    text = (
        "{{function_node __wrapped__IteratorGetNext}} assertion failed: [Malformed line in "
        "/d/it\\'s.tsv, line 7: expected 2 tab-separated fields; field 2 is \\'x\\': "
        "\\'( [MAX \\303\\251 ] )\\\\tx\\'.]\n\t [[{{node Assert/Assert}}]] [Op:IteratorGetNext]"
    )
    error = user_error_from(tf.errors.InvalidArgumentError(None, None, text))
    assert isinstance(error, UserError)
    assert str(error) == (
        "Malformed line in /d/it's.tsv, line 7: expected 2 tab-separated fields; field 2 is "
        "'x': '( [MAX \u00e9 ] )\\tx'."
    )
    assert (
        user_error_from(tf.errors.InvalidArgumentError(None, None, "assertion failed: [x]")) is None
    )
    assert user_error_from(ValueError("Malformed line in f, line 1")) is None


@pytest.mark.parametrize("where", ["../../elsewhere/imgs/0", "/tmp/imgs/0"])
def test_metadata_paths_stay_inside_the_folder(tmp_path, pathfinder_dir, where):
    shutil.copytree(pathfinder_dir, tmp_path / "d")
    meta = tmp_path / "d" / "curv_contour_length_14" / "metadata" / "1.npy"
    rows = meta.read_text().splitlines()
    rows[1] = " ".join([where, *rows[1].split()[1:]])
    meta.write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"1.npy, line 2 names an image outside the data folder"):
        load("pathfinder", "train", str(tmp_path / "d"), 2)


# Missing data sets say what is expected where and how to make it -----------------------------


@pytest.mark.parametrize(
    "task, expected, how",
    [
        ("listops", "basic_train.tsv", "lra-data listops"),
        ("retrieval", "new_aan_pairs.train.tsv", "lra_release.gz"),
        ("text", "imdb_reviews", "download_and_prepare"),
        ("image", "cifar10", "download_and_prepare"),
        ("pathfinder", "curv_contour_length_14", "lra-data pathfinder"),
        ("pathfinder64", "pathfinder64", "--resolution 64"),
        ("pathx", "pathfinder128", "--resolution 128"),
        ("pathfinder256", "pathfinder256", "--resolution 256"),
    ],
)
def test_missing_data_set_says_what_where_how(tmp_path, task, expected, how):
    with pytest.raises(FileNotFoundError) as err:
        load(task, "train", str(tmp_path), 2)
    assert isinstance(err.value, UserError)
    message = str(err.value)
    assert expected in message and str(tmp_path) in message and how in message


def test_missing_metadata_and_images_say_how(tmp_path, pathfinder_dir):
    shutil.copytree(pathfinder_dir, tmp_path / "d")
    root = tmp_path / "d" / "curv_contour_length_14"
    shutil.rmtree(root / "imgs" / "1")
    with pytest.raises(FileNotFoundError, match=r"sample_.*cannot be read.*lra-data pathfinder"):
        for split in ("train", "validation", "test"):
            load("pathfinder", split, str(tmp_path / "d"), 1)
    shutil.rmtree(root / "metadata")
    with pytest.raises(FileNotFoundError, match=r"metadata .*lra-data pathfinder"):
        load("pathfinder", "train", str(tmp_path / "d"), 2)
