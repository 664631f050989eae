"""Every `>>>` example in the package's docstrings runs and prints what it says."""

import doctest
import importlib
import pathlib

import pytest

import lra_keras

ROOT = pathlib.Path(lra_keras.__file__).parent
# Only modules that carry examples are imported: the CLI modules define absl flags at import.
MODULES = sorted(
    ".".join(("lra_keras",) + path.relative_to(ROOT).with_suffix("").parts)
    for path in ROOT.rglob("*.py")
    if ">>> " in path.read_text()
)


def test_examples_were_found():
    assert len(MODULES) > 20


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False, report=True)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (see above)"
