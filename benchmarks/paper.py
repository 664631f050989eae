"""The LRA paper's efficiency figures (Tay et al. 2021, Table 2), shared by the benchmarks."""

PAPER_TABLE2 = {  # steps/s at 1K, 2K, 3K, 4K (byte-level text, TPU v3, batch 32).
    "full": (8.1, 4.9, 2.3, 1.4),
    "local": (9.2, 8.4, 7.4, 7.4),
    "linformer": (9.3, 9.1, 8.5, 7.7),
    "reformer": (4.4, 2.2, 1.5, 1.1),
    "sinkhorn": (9.1, 7.9, 6.6, 5.3),
    "synthesizer": (8.7, 5.7, 6.6, 1.9),
    "bigbird": (7.4, 3.9, 2.7, 1.5),
    "linear": (9.1, 9.3, 8.6, 7.8),
    "performer": (9.5, 9.4, 8.7, 8.0),
}
PAPER_LENGTHS = (1024, 2048, 3072, 4096)


def paper_speedup(name: str, length: int) -> float | None:
    """The paper's steps/s of `name` over the Transformer's at `length` (None if not in it)."""
    if name not in PAPER_TABLE2 or length not in PAPER_LENGTHS:
        return None
    index = PAPER_LENGTHS.index(length)
    return PAPER_TABLE2[name][index] / PAPER_TABLE2["full"][index]
