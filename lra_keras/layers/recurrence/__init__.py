"""Segment-level recurrence: Transformer-XL and Compressive Transformer layers."""
