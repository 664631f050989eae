"""Embeddings, the LRA Transformer block and the LRA encoder."""
