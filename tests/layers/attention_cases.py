"""One table of every registered attention's test arguments, read by the contract suite.

Each entry: `kwargs` (the variant's own hyperparameters for a tiny layer) and `length` (the
sequence length its contract tests use; prime or odd lengths check internal padding). A variant
added to the registry without an entry here fails `test_every_variant_has_a_case`.
"""

DEFAULT_LENGTH = 13

CASES = {
    "full": {"kwargs": {}},
    "chunked": {"kwargs": {"query_chunk_size": 4, "key_chunk_size": 5}},
}


def case(name: str) -> dict:
    entry = dict(CASES[name])
    entry.setdefault("length", DEFAULT_LENGTH)
    entry.setdefault("kwargs", {})
    return entry
