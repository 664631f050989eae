"""Attention variants; each module registers its class in `registry.ATTENTIONS`."""
