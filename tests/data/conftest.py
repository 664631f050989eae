"""Tiny fixtures in the real release formats, built once per test session."""

import pytest

from lra_keras.data.listops_generator import write_listops
from lra_keras.data.pathfinder_generator import write_pathfinder


@pytest.fixture(scope="session")
def listops_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("listops")
    write_listops(
        str(out), num_train=40, num_val=12, num_test=12, seed=7, min_length=10, max_length=80
    )
    return str(out)


@pytest.fixture(scope="session")
def pathfinder_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pathfinder")
    write_pathfinder(
        str(out), resolution=32, difficulty="hard", num_images=20, seed=3, images_per_folder=8
    )
    return str(out)


@pytest.fixture(scope="session")
def aan_dir(tmp_path_factory):
    """AAN pair files: label, id1, id2, text1, text2 (texts with non-ASCII bytes)."""
    out = tmp_path_factory.mktemp("aan")
    for split in ("train", "eval", "test"):
        rows = []
        for i in range(10):
            label = "1.0" if i % 3 == 0 else "0.0"
            text1 = f"paper {split} {i} " + "über " * (i % 4)
            text2 = f"other document {i * 7} é"
            rows.append("\t".join([label, f"a{i}", f"b{i}", text1, text2]))
        (out / f"new_aan_pairs.{split}.tsv").write_text("\n".join(rows) + "\n", "utf-8")
    return str(out)
