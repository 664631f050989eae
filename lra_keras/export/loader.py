"""Loading an export as a plain callable."""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from lra_keras.errors import UserError
from lra_keras.export.saved_model import CONFIG_ASSET, LABELS_ASSET


class ExportedModel:
    """A reloaded export: call it on token ids, or `predict_text` on raw strings.

    Attributes:
        config: the zoo config saved with the model.
        label_names: the class names.
        saved_model: the object `tf.saved_model.load` returned.
    """

    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"No export at {path}: write one with `lra-export --model_dir D --out {path}`."
            )
        self.path = path
        self.saved_model = tf.saved_model.load(path)
        assets = os.path.join(path, "assets")
        with open(os.path.join(assets, CONFIG_ASSET)) as f:
            self.config = json.load(f)
        labels = os.path.join(assets, LABELS_ASSET)
        self.label_names = []
        if os.path.exists(labels):
            with open(labels) as f:
                self.label_names = f.read().splitlines()

    def __call__(self, *tokens) -> dict:
        """`serve` on int32 token ids (one array, or two for retrieval) -> logits, probabilities.

        The ids are checked before the model runs: integers (whole-valued floats are
        accepted), in `[0, vocab_size)`, of the export's shape. Anything else raises a
        `lra_keras.errors.UserError` (a ValueError) naming the input, instead of being
        truncated or wrapped into another token by the int32 cast and the embedding lookup.
        """
        specs = self.input_specs
        if len(tokens) != len(specs):
            raise UserError(
                f"The export at {self.path} takes {len(specs)} token array(s) "
                f"({', '.join(specs)}); received {len(tokens)}."
            )
        checked = []
        for (name, spec), t in zip(specs.items(), tokens, strict=True):
            ids = self._checked_ids(name, t)
            if not spec.shape.is_compatible_with(ids.shape):
                raise UserError(
                    f"'{name}' must be int32 token ids of shape [batch, {spec.shape[1]}] (pad "
                    f"with 0 or truncate); received shape {list(ids.shape)}."
                )
            checked.append(tf.constant(ids, tf.int32))
        tokens = checked
        inputs = (
            tokens[0] if len(tokens) == 1 else {f"tokens_{i + 1}": t for i, t in enumerate(tokens)}
        )
        out = self.saved_model.serve(inputs)
        return {k: v.numpy() for k, v in out.items()}

    def _checked_ids(self, name: str, tokens) -> np.ndarray:
        """`tokens` as an integer array of ids in `[0, vocab_size)`, or a one-line UserError."""
        vocab = self.config.get("vocab_size")
        expected = f"integer token ids in [0, {vocab})" if vocab else "integer token ids >= 0"
        if isinstance(tokens, str | bytes):
            raise UserError(
                f"'{name}' must be {expected}, got a string; use `predict_text` for raw text."
            )
        try:
            ids = np.asarray(tokens)
        except ValueError as error:  # ragged nested lists
            raise UserError(
                f"'{name}' must be a rectangular array of {expected}: {error}"
            ) from None
        if ids.dtype.kind not in "iuf":
            what = {"U": "strings", "S": "strings", "b": "booleans"}.get(
                ids.dtype.kind, f"dtype {ids.dtype}"
            )
            raise UserError(
                f"'{name}' must be {expected}, got {what}"
                + ("; use `predict_text` for raw text." if what == "strings" else ".")
            )

        def refuse(bad, problem: str):
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            value = ids[where].item()
            raise UserError(
                f"'{name}' must be {expected}; got {problem} {value!r} at index {list(where)}."
            )

        if ids.dtype.kind == "f":
            fractional = ~np.isfinite(ids) | (ids != np.floor(ids))
            if fractional.any():
                refuse(fractional, "the non-integer id")
        if ids.size and (ids < 0).any():
            refuse(ids < 0, "the negative id")
        if vocab and ids.size and (ids >= vocab).any():
            refuse(ids >= vocab, "the out-of-vocabulary id")
        return ids.astype(np.int64)

    @property
    def input_specs(self) -> dict:
        """The token inputs' `tf.TensorSpec`s (name -> spec, fixed length), in call order."""
        signature = self.saved_model.signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        return {name: specs[name] for name in sorted(specs)}

    def predict_text(self, *texts) -> dict:
        """`serve_text` on raw strings (text and retrieval tasks)."""
        if not hasattr(self.saved_model, "serve_text"):
            raise ValueError(
                f"The export at {self.path} (task {self.config.get('task')!r}) has no "
                "`serve_text` endpoint: only byte-level tasks (text, retrieval) take raw strings."
            )
        texts = [tf.constant(t, tf.string) for t in texts]
        inputs = texts[0] if len(texts) == 1 else {f"text_{i + 1}": t for i, t in enumerate(texts)}
        out = self.saved_model.serve_text(inputs)
        return {k: v.numpy() for k, v in out.items()}


def load(path: str) -> ExportedModel:
    """Loads an export written by `export_saved_model` (or `lra-export`)."""
    return ExportedModel(os.fspath(path))
