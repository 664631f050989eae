"""benchmarks.pathfinder_checks: its images and arguments (the training itself is a benchmark)."""

import numpy as np
import pytest

from benchmarks import pathfinder_checks


def test_images_are_balanced_pixel_tokens_and_the_held_out_set_differs():
    tokens, labels = pathfinder_checks.make_images(4, seed=0, difficulty="easy")
    held, _ = pathfinder_checks.make_images(4, seed=0, difficulty="easy", first=4)
    assert tokens.shape == (4, 1024) and tokens.dtype == np.int32
    assert tokens.min() >= 0 and tokens.max() <= 255 and tokens.max() > 0
    assert labels.tolist() == [0, 1, 0, 1]
    assert not np.array_equal(tokens, held)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        pathfinder_checks.main(["--images", "1"])
    with pytest.raises(SystemExit):
        pathfinder_checks.main(["--learning_rate", "0"])
