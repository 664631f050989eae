"""One table of every registered attention's test arguments, read by the contract suite.

Each entry: `kwargs` (the variant's own hyperparameters for a tiny layer), `length` (the
sequence length its contract tests use; prime or odd lengths check internal padding) and
`quadratic` (True where the analytic FLOP count grows with the square of the length) or
`flops_growth` (its growth per doubling of the length, where neither 2x nor 4x). A variant
added to the registry without an entry here fails `test_every_variant_has_a_case`.
"""

DEFAULT_LENGTH = 13

CASES = {
    "full": {"kwargs": {}, "quadratic": True},
    "local": {"kwargs": {"block_size": 4}},
    "image_local": {
        "kwargs": {"image_shape": (3, 5), "query_shape": (2, 2), "memory_flange": (1, 1)},
        "length": 15,
    },
    # At a fixed block size the summary columns grow with L: L^2 c / b FLOPs.
    "sparse": {
        "kwargs": {"pattern": "fixed", "block_size": 4, "num_summary": 2},
        "quadratic": True,
    },
    "longformer": {"kwargs": {"window_size": 4, "dilation": 2, "global_tokens": (0, 5)}},
    "bigbird": {"kwargs": {"block_size": 2, "num_random_blocks": 1}, "length": 21},
    "axial": {"kwargs": {"axis_shape": (3, 4)}, "length": 12},
    "chunked": {"kwargs": {"query_chunk_size": 4, "key_chunk_size": 5}, "quadratic": True},
    "linear": {"kwargs": {"chunk_size": 4}},
    "linformer": {"kwargs": {"max_length": 13, "projection_dim": 4}},
    "performer": {"kwargs": {"num_random_features": 16, "chunk_size": 4}},
    # The hashing matmul costs L * key_dim * L / bucket_size per round (num_buckets grows with
    # L): at bucket_size 4 it dominates and the count grows ~3.9x per doubling (at the
    # default 64 and L = 4K, ~2.4x).
    "reformer": {"kwargs": {"bucket_size": 4, "num_hashes": 2}, "quadratic": True},
    "synthesizer": {
        "kwargs": {"max_length": 13, "mode": "dense", "factor_rank": 3},
        "quadratic": True,
    },
    "nystrom": {"kwargs": {"num_landmarks": 4, "conv_kernel_size": 3}},
    "fnet": {"kwargs": {}},
    # A small state; FFTs of 2L and a Vandermonde kernel: L log L, about 2.2x per doubling.
    "s4d": {"kwargs": {"state_dim": 8}},
    # Diagonal linear recurrences by parallel scan: an O(L) FLOP count, 2x per doubling.
    "lru": {"kwargs": {"state_dim": 8}},
    "s5": {"kwargs": {"state_dim": 8, "blocks": 2}},
    # Chunks of 4 (13 = 3 chunks + 1 token, padded internally): attention linear in L, the EMA's
    # FFTs L log L.
    "mega": {"kwargs": {"ema_dim": 4, "z_dim": 6, "hidden_dim": 10, "chunk_size": 4}},
    "set": {"kwargs": {"num_inducing_points": 4}},
    # L^2 / c pairs: quadratic at a fixed rate.
    "memory_compressed": {"kwargs": {"compression_rate": 3}, "quadratic": True},
    # The sorted-block mixing P . K_blocks costs nb^2 * b * d = L^2 d / b: quadratic at a
    # fixed block size (at b = 4 it dominates; at the default 64 and L = 4K, a third).
    "sinkhorn": {"kwargs": {"block_size": 4}, "quadratic": True},
    # A set cluster count, so that the layer also builds on an unknown length: C clusters (and
    # local blocks) of w = L / C tokens, L^2 / C pairs. The default C = round(sqrt(L)) grows
    # as L^1.5 (checked in test_routing_attention.py).
    "routing": {"kwargs": {"num_clusters": 3}, "quadratic": True},
}


def case(name: str) -> dict:
    entry = dict(CASES[name])
    entry.setdefault("length", DEFAULT_LENGTH)
    entry.setdefault("kwargs", {})
    return entry
