"""Pathfinder: ground-truth geometry of generated images, the release layout, the reader."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lra_keras.data import generate_pathfinder, load, pathfinder_params, prepare


def segment_distance(a, b, samples=41):
    """Distance between two segments [x0, y0, x1, y1], by dense sampling (independent of the
    generator's distance field)."""
    t = np.linspace(0, 1, samples)[:, None]
    pa = np.asarray(a[:2]) + t * (np.asarray(a[2:]) - np.asarray(a[:2]))
    pb = np.asarray(b[:2]) + t * (np.asarray(b[2:]) - np.asarray(b[:2]))
    return np.min(np.linalg.norm(pa[:, None] - pb[None], axis=-1))


@pytest.mark.parametrize("label", [0, 1])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_markers_on_snake_ends(label, index):
    image, truth = generate_pathfinder(32, "hard", seed=11, index=index, label=label)
    params = pathfinder_params(32, "hard")
    assert image.shape == (32, 32) and image.dtype == np.uint8
    snakes = truth["snakes"]
    assert truth["label"] == label
    assert [len(s) for s in snakes[:2]] == [params["contour_length"]] * 2
    assert all(1 <= len(s) <= params["distractor_length"] for s in snakes[2:])
    first, second = truth["marker_snakes"]
    assert first in (0, 1) and second in (0, 1) and (first == second) == (label == 1)
    # Marker 1 at the origin end of one target snake, marker 2 at the far end of the same snake
    # (label 1) or of the other target snake (label 0).
    np.testing.assert_allclose(truth["markers"][0], snakes[first][0][:2])
    np.testing.assert_allclose(truth["markers"][1], snakes[second][-1][2:])
    for x, y in truth["markers"]:
        assert image[int(round(y)), int(round(x))] >= 200
    # Dashes of different snakes never touch, so the label is not ambiguous.
    width = 2 * truth["half_width"]
    for i, si in enumerate(snakes):
        for sj in snakes[i + 1 :]:
            d = min(segment_distance(a, b) for a in si for b in sj)
            assert d > width + 0.5 * truth["margin"], d
    # Consecutive dashes of one snake are chained: each starts near the previous one's end.
    for snake in snakes:
        for a, b in zip(snake[:-1], snake[1:], strict=True):
            gap = np.hypot(b[0] - a[2], b[1] - a[3])
            assert gap == pytest.approx(2 * truth["margin"], abs=1e-6)
    # The drawing shows every dash: its midpoint pixel is lit.
    for snake in snakes:
        for x0, y0, x1, y1 in snake:
            r, c = int(round((y0 + y1) / 2)), int(round((x0 + x1) / 2))
            assert image[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].max() > 60


def test_other_resolutions_and_difficulty():
    for res, difficulty in ((64, "easy"), (128, "intermediate")):
        image, truth = generate_pathfinder(res, difficulty, seed=0, index=5, label=1)
        assert image.shape == (res, res)
        assert len(truth["snakes"][0]) == {"easy": 6, "intermediate": 9}[difficulty]
    with pytest.raises(ValueError, match="resolution"):
        generate_pathfinder(48)
    with pytest.raises(ValueError, match="difficulty"):
        generate_pathfinder(32, "extreme")


def test_release_layout_and_balance(pathfinder_dir):
    root = os.path.join(pathfinder_dir, "curv_contour_length_14")
    assert sorted(os.listdir(os.path.join(root, "metadata"))) == ["0.npy", "1.npy", "2.npy"]
    rows = []
    for k in range(3):
        with open(os.path.join(root, "metadata", f"{k}.npy")) as f:
            rows += [line.split() for line in f]
    assert len(rows) == 20 and sum(int(r[3]) for r in rows) == 10
    truths = sum((json.loads(Path(root, "truth", f"{k}.json").read_text()) for k in range(3)), [])
    for row, truth in zip(rows, truths, strict=True):
        path = os.path.join(root, row[0], row[1])
        assert truth["file"] == f"{row[0]}/{row[1]}" and int(row[3]) == truth["label"]
        image, again = generate_pathfinder(
            32, "hard", seed=3, index=rows.index(row), label=truth["label"]
        )
        np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
        assert again["markers"] == truth["markers"]


def test_workers_do_not_change_output(tmp_path):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        cmd = [
            sys.executable,
            "-m",
            "lra_keras.data.cli",
            "pathfinder",
            "--out",
            str(out),
            "--resolution",
            "32",
            "--difficulty",
            "easy",
            "--num_images",
            "6",
            "--seed",
            "9",
            "--workers",
            str(workers),
            "--images_per_folder",
            "4",
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        files = {}
        for dirpath, _, names in os.walk(out):
            for name in names:
                full = os.path.join(dirpath, name)
                files[os.path.relpath(full, out)] = Path(full).read_bytes()
        outs.append(files)
    # Images, metadata, truth and the generator's marker (which does not record `workers`).
    assert len(outs[0]) == 6 + 2 + 2 + 1 and outs[0] == outs[1]


def test_reader_splits_and_pixels(pathfinder_dir):
    root = os.path.join(pathfinder_dir, "curv_contour_length_14")
    pngs = {}
    for k in range(3):
        for line in Path(root, "metadata", f"{k}.npy").read_text().splitlines():
            f = line.split()
            pixels = np.asarray(Image.open(os.path.join(root, f[0], f[1]))).reshape(-1)
            pngs[pixels.astype(np.int32).tobytes()] = int(f[3])
    seen = []
    for split, count in (("train", 16), ("validation", 2), ("test", 2)):
        ds = load("pathfinder", split, pathfinder_dir, 3, shuffle=False)
        batches = list(ds.as_numpy_iterator())
        tokens = np.concatenate([b[0]["tokens"] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        assert tokens.shape[1] == 1024 and tokens.dtype == np.int32
        assert len(tokens) == (count // 3) * 3 if split == "train" else len(tokens) == count
        for row, label in zip(tokens, labels, strict=True):
            assert pngs[row.tobytes()] == label
            seen.append(row.tobytes())
    assert len(set(seen)) == len(seen)  # the three splits are disjoint
    other = load("pathfinder", "test", pathfinder_dir, 2, shuffle=False, split_seed=1)
    other_rows = {r.tobytes() for b in other.as_numpy_iterator() for r in b[0]["tokens"]}
    assert other_rows != set(seen[-2:])


def test_downsampling_averages_pixel_blocks(pathfinder_dir):
    full = next(load("pathfinder", "test", pathfinder_dir, 2, shuffle=False).as_numpy_iterator())
    small = load("pathfinder", "test", pathfinder_dir, 2, max_length=256, shuffle=False)
    small = next(small.as_numpy_iterator())
    blocks = full[0]["tokens"].reshape(2, 16, 2, 16, 2).mean(axis=(2, 4)).reshape(2, 256)
    np.testing.assert_array_equal(small[0]["tokens"], np.round(blocks).astype(np.int32))
    np.testing.assert_array_equal(small[1], full[1])
    with pytest.raises(ValueError, match="s\\*s with s dividing 32"):
        load("pathfinder", "test", pathfinder_dir, 2, max_length=100)


def test_missing_folder_says_how_to_generate(tmp_path):
    expected = "lra-data pathfinder --out DATA_DIR --resolution 128"
    with pytest.raises(FileNotFoundError, match=expected):
        load("pathx", "train", str(tmp_path), 2)


def test_prepared_records_match_release(tmp_path, pathfinder_dir):
    import shutil

    data_dir = tmp_path / "pf"
    shutil.copytree(pathfinder_dir, data_dir)
    release = list(load("pathfinder", "train", str(data_dir), 4, shuffle=False).as_numpy_iterator())
    prepare("pathfinder", str(data_dir))
    shutil.rmtree(data_dir / "curv_contour_length_14" / "imgs")  # the records alone suffice
    ds = load("pathfinder", "train", str(data_dir), 4, shuffle=False)
    prepared = list(ds.as_numpy_iterator())
    assert len(prepared) == len(release) == 4
    for (fa, ya), (fb, yb) in zip(release, prepared, strict=True):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(fa["tokens"], fb["tokens"])


def test_reader_iterator_checkpoints_and_restores(tmp_path, pathfinder_dir):
    # The trainer checkpoints its data iterator: the image decoding (positions, a sentinel,
    # dropped decodes named by the next record) must save and restore mid-pass.
    import tensorflow as tf

    for skip in (1, 4):  # mid-pass, and in the pass's last batch (16 images, 5 batches)
        iterator = iter(load("pathfinder", "train", pathfinder_dir, 3, seed=4).repeat())
        for _ in range(skip):
            next(iterator)
        checkpoint = tf.train.Checkpoint(iterator=iterator)
        path = checkpoint.write(str(tmp_path / f"ckpt{skip}"))
        want = [next(iterator) for _ in range(7)]  # crosses into the next passes
        checkpoint.read(path).assert_consumed()
        got = [next(iterator) for _ in range(7)]
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            np.testing.assert_array_equal(gx["tokens"].numpy(), wx["tokens"].numpy())
            np.testing.assert_array_equal(gy.numpy(), wy.numpy())
