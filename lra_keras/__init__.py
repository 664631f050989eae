"""lra-keras: efficient Transformers and the Long Range Arena on TensorFlow / Keras 3."""

__version__ = "0.1.0"
