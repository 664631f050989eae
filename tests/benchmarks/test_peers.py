"""The Model Garden comparison refuses clearly when its optional peer is missing."""

import importlib.util
import subprocess
import sys

import pytest

from benchmarks import peers


@pytest.mark.skipif(
    importlib.util.find_spec("official") is not None, reason="Model Garden is installed"
)
def test_missing_model_garden_names_the_install_command():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", "--lengths", "1024", "--output", ""],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert peers.INSTALL_HINT in proc.stderr


def test_bad_arguments_are_refused_before_importing_anything():
    with pytest.raises(SystemExit) as info:
        peers.main(["--pairs", "full,nope"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        peers.main(["--lengths", "4k"])
