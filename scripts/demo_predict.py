"""Loads an exported ListOps model in a fresh process and predicts raw expressions.

python scripts/demo_predict.py EXPORT_DIR "[MAX 2 9 [MIN 4 7 ] 0 ]" ...
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf

from lra_keras.data.encoding import listops_ids, listops_tokens, pad_or_truncate
from lra_keras.export import load


def main(path: str, expressions: list[str]) -> None:
    model = load(path)
    length = int(model.config["max_length"])
    ids = tf.stack([pad_or_truncate(listops_ids(listops_tokens(e)), length) for e in expressions])
    out = model(ids.numpy())
    for expression, probs in zip(expressions, out["probabilities"], strict=True):
        label = int(np.argmax(probs))
        print(f"{expression!r} -> {model.label_names[label]} (p={probs[label]:.2f})")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
