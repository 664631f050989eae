"""A stand-in of `lra_keras.data.load_numpy`'s `NumpyDataset`, for the JAX trainer tests.

The same interface (`num_examples`, `batch_size`, `drop_remainder`, `element_spec`,
`batches(epoch=0, start=0)` with a permutation seeded by (seed, epoch) when shuffled), over
arrays given in memory; imports no TensorFlow.
"""

from __future__ import annotations

import numpy as np


class ArrayDataset:
    def __init__(self, features: dict, labels, batch_size: int, shuffle=False, seed=0):
        self.features = {k: np.asarray(v) for k, v in features.items()}
        self.labels = np.asarray(labels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = False
        self.num_examples = len(self.labels)
        self.element_spec = {k: (v.shape[1:], v.dtype) for k, v in self.features.items()}
        self.element_spec["label"] = (self.labels.shape[1:], self.labels.dtype)

    def batches(self, epoch: int = 0, start: int = 0):
        order = np.arange(self.num_examples)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        for index in range(start, -(-self.num_examples // self.batch_size)):
            rows = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield {k: v[rows] for k, v in self.features.items()}, self.labels[rows]


def synthetic(n: int, batch_size: int, seed: int = 0, shuffle: bool = False) -> ArrayDataset:
    """`tests.training.synthetic`'s task as a numpy dataset."""
    from tests.training.synthetic import make_arrays

    tokens, labels = make_arrays(n, seed)
    return ArrayDataset({"tokens": tokens}, labels, batch_size, shuffle=shuffle, seed=seed)
