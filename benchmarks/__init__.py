"""Benchmarks: efficiency (LRA Table 2), accuracy (mini-LRA) and focused measurements."""
