"""Backend-specific hot loops, each beside the keras.ops reference that other backends use."""
