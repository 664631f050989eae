"""Self-pretraining inputs from a numpy dataset (the JAX backend; no TensorFlow).

The same objectives as `pretraining_data.py` (its constants and rules): masked denoising with
BERT's 80/10/10 corruption (90% random tokens without a [MASK] id) and next-token targets.
Each batch's corruption is drawn from a generator seeded by (seed, epoch, batch), so a run
resumed at a batch corrupts it as the uninterrupted run did.
"""

from __future__ import annotations

import numpy as np

from lra_keras.zoo.pretraining import IGNORE_LABEL, PRETRAIN_OBJECTIVES

# pretraining_data.py's shares, repeated here: that module imports TensorFlow.
MASK_TOKEN_SHARE = 0.8
RANDOM_TOKEN_SHARE = 0.1
RANDOM_TOKEN_SHARE_WITHOUT_MASK = 0.9


def masked_denoising(
    tokens: np.ndarray,
    rng: np.random.Generator,
    *,
    vocab_size: int,
    mask_padding: bool,
    rate: float,
    mask_token: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`pretraining_data.masked_denoising` on numpy arrays, drawing from `rng`."""
    real = tokens != 0 if mask_padding else np.ones(tokens.shape, bool)
    selected = real & (rng.random(tokens.shape) < rate)
    draw = rng.random(tokens.shape)
    low = 1 if mask_padding else 0
    random_tokens = rng.integers(low, vocab_size, size=tokens.shape).astype(tokens.dtype)
    if mask_token is None:
        corrupted = np.where(
            selected & (draw < RANDOM_TOKEN_SHARE_WITHOUT_MASK), random_tokens, tokens
        )
    else:
        masked = selected & (draw < MASK_TOKEN_SHARE)
        replace = selected & ~masked & (draw < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
        corrupted = np.where(replace, random_tokens, tokens)
        corrupted = np.where(masked, np.asarray(mask_token, tokens.dtype), corrupted)
    targets = np.where(selected, tokens, np.asarray(IGNORE_LABEL, tokens.dtype))
    return corrupted.astype(tokens.dtype), targets.astype(tokens.dtype)


def next_token_targets(tokens: np.ndarray, *, mask_padding: bool) -> np.ndarray:
    """Target at t = the token at t + 1 where that token is real, else -1 (the last too)."""
    following = np.concatenate([tokens[:, 1:], np.zeros_like(tokens[:, :1])], axis=1)
    has_next = np.arange(tokens.shape[1]) < tokens.shape[1] - 1
    real_next = following != 0 if mask_padding else np.ones(following.shape, bool)
    return np.where(real_next & has_next[None, :], following, IGNORE_LABEL).astype(tokens.dtype)


class PretrainingBatches:
    """`({"tokens": inputs}, targets)` batches from a task's numpy TRAINING dataset.

    Two-tower (retrieval) batches give their two token arrays as two batches in turn. Has the
    numpy dataset interface the JAX trainer reads (`batches(epoch, start)`, `element_spec`).
    """

    def __init__(
        self,
        train,
        objective: str,
        *,
        vocab_size: int,
        mask_padding: bool,
        seed: int = 0,
        rate: float = 0.15,
        mask_token: int | None = None,
    ):
        if objective not in PRETRAIN_OBJECTIVES:
            raise ValueError(
                f"`objective` must be one of {list(PRETRAIN_OBJECTIVES)}, got {objective!r}."
            )
        spec = dict(train.element_spec)
        if "tokens" in spec:
            self.towers = ["tokens"]
        elif {"tokens_1", "tokens_2"} <= set(spec):
            self.towers = ["tokens_1", "tokens_2"]
        else:
            raise ValueError(f"Pretraining needs token features, got feature keys {sorted(spec)}.")
        self.train = train
        self.objective = objective
        self.vocab_size = vocab_size
        self.mask_padding = mask_padding
        self.seed = seed
        self.rate = rate
        self.mask_token = mask_token
        shape, dtype = spec[self.towers[0]]
        self.element_spec = {"tokens": (shape, dtype), "label": (shape, dtype)}
        self.batch_size = train.batch_size
        self.num_examples = train.num_examples * len(self.towers)

    def batches(self, epoch: int = 0, start: int = 0):
        towers = len(self.towers)
        index = start - start % towers
        for features, _ in self.train.batches(epoch=epoch, start=start // towers):
            for name in self.towers:
                if index >= start:
                    yield self._example(np.asarray(features[name]), epoch, index)
                index += 1

    def _example(self, tokens, epoch, index):
        if self.objective == "causal":
            return {"tokens": tokens}, next_token_targets(tokens, mask_padding=self.mask_padding)
        rng = np.random.default_rng([self.seed, epoch, index])
        inputs, targets = masked_denoising(
            tokens,
            rng,
            vocab_size=self.vocab_size,
            mask_padding=self.mask_padding,
            rate=self.rate,
            mask_token=self.mask_token,
        )
        return {"tokens": inputs}, targets
