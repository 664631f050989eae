"""Self-pretraining inputs made from a task's training batches: denoising and next token."""

from __future__ import annotations

import tensorflow as tf

from lra_keras.data.encoding import LISTOPS_OOV_ID
from lra_keras.zoo.pretraining import IGNORE_LABEL, PRETRAIN_OBJECTIVES

# The [MASK] id of each task that has an id its data never holds: ListOps's out-of-vocabulary
# id (every token of the ListOps language is in its vocabulary). Byte and pixel tasks use all
# of their ids.
MASK_TOKENS = {"listops": LISTOPS_OOV_ID}

# BERT's corruption of the selected positions: 80% get the [MASK] id, 10% a random token and
# 10% keep theirs. A task whose vocabulary has no id free for [MASK] (bytes and pixels use all
# of theirs, and adding one would change the fine-tuned model's embedding) gets a random token
# at 90% instead.
MASK_TOKEN_SHARE = 0.8
RANDOM_TOKEN_SHARE = 0.1
RANDOM_TOKEN_SHARE_WITHOUT_MASK = 0.9


def _token_batches(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Batches of `tokens [B, L]` from a task's `(features, label)` batches (labels dropped).

    Two-tower (retrieval) batches give their two token tensors as two batches in turn.
    """
    spec = dataset.element_spec[0]
    if "tokens" in spec:
        return dataset.map(lambda features, label: features["tokens"])
    if {"tokens_1", "tokens_2"} <= set(spec):
        return dataset.flat_map(
            lambda f, label: tf.data.Dataset.from_tensors(f["tokens_1"]).concatenate(
                tf.data.Dataset.from_tensors(f["tokens_2"])
            )
        )
    raise ValueError(f"Pretraining needs token features, got feature keys {sorted(spec)}.")


def masked_denoising(
    tokens, seed, *, vocab_size: int, mask_padding: bool, rate: float, mask_token: int | None = None
):
    """Corrupts a `rate` share of real tokens; the targets are the originals there, else -1.

    With `mask_token`, BERT's 80/10/10 split ([MASK] / random / kept); without, 90/10.
    """
    seed_select, seed_replace, seed_token = (seed + i for i in range(3))
    shape = tf.shape(tokens)
    real = tf.not_equal(tokens, 0) if mask_padding else tf.ones(shape, tf.bool)
    selected = real & (tf.random.stateless_uniform(shape, seed_select) < rate)
    draw = tf.random.stateless_uniform(shape, seed_replace)
    low = 1 if mask_padding else 0
    random_tokens = tf.random.stateless_uniform(
        shape, seed_token, minval=low, maxval=vocab_size, dtype=tokens.dtype
    )
    if mask_token is None:
        corrupted = tf.where(
            selected & (draw < RANDOM_TOKEN_SHARE_WITHOUT_MASK), random_tokens, tokens
        )
    else:
        masked = selected & (draw < MASK_TOKEN_SHARE)
        replace = selected & ~masked & (draw < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
        corrupted = tf.where(replace, random_tokens, tokens)
        corrupted = tf.where(masked, tf.cast(mask_token, tokens.dtype), corrupted)
    targets = tf.where(selected, tokens, tf.fill(shape, tf.cast(IGNORE_LABEL, tokens.dtype)))
    return corrupted, targets


def next_token_targets(tokens, *, mask_padding: bool):
    """Target at t = the token at t + 1 where that token is real, else -1 (the last too)."""
    following = tf.concat([tokens[:, 1:], tf.zeros_like(tokens[:, :1])], axis=1)
    length = tf.shape(tokens)[1]
    has_next = tf.range(length) < length - 1
    real_next = tf.not_equal(following, 0) if mask_padding else tf.ones_like(following, tf.bool)
    scored = real_next & has_next[None, :]
    return tf.where(
        scored, following, tf.fill(tf.shape(tokens), tf.cast(IGNORE_LABEL, tokens.dtype))
    )


def pretraining_dataset(
    train: tf.data.Dataset,
    objective: str,
    *,
    vocab_size: int,
    mask_padding: bool,
    seed: int = 0,
    rate: float = 0.15,
    mask_token: int | None = None,
) -> tf.data.Dataset:
    """`({"tokens": inputs}, targets)` batches for self-pretraining from TRAINING batches only.

    Args:
        train: the task's training dataset (`lra_keras.data.load(..., "train", ...)`); never
            pass another split: pretraining must not see validation or test inputs.
        objective: `masked` (denoising: a `rate` share of the real tokens is selected; of
            those, 80% become `mask_token`, 10% a random token and 10% stay, or without a
            `mask_token` 90% a random token; targets are the originals at the selected
            positions) or `causal` (targets are the next tokens).
        vocab_size: the task's vocabulary size (random tokens are drawn below it).
        mask_padding: id 0 is padding (never selected, never a target).
        seed: seed of the corruption; the stream is deterministic and checkpointable.
        rate: share of real tokens selected (`masked`).
        mask_token: the [MASK] id: an id of the vocabulary that never occurs in the data
            (`MASK_TOKENS`), or None where there is none.

    Returns:
        A dataset of `({"tokens": int32 [B, L]}, int32 targets [B, L])`, -1 = not scored.
    """
    if objective not in PRETRAIN_OBJECTIVES:
        raise ValueError(
            f"`objective` must be one of {list(PRETRAIN_OBJECTIVES)}, got {objective!r}."
        )
    if not 0.0 < rate < 1.0:
        raise ValueError(f"`rate` must be in (0, 1), got {rate!r}.")
    low = 1 if mask_padding else 0
    if mask_token is not None and not low <= mask_token < vocab_size:
        raise ValueError(
            f"`mask_token` must be an id in [{low}, {vocab_size}) that the data never holds, "
            f"got {mask_token!r}."
        )
    tokens = _token_batches(train)
    if objective == "causal":
        return tokens.map(
            lambda t: ({"tokens": t}, next_token_targets(t, mask_padding=mask_padding))
        )
    # A seeded stream of per-batch seeds: Dataset.random's state is part of the iterator's
    # checkpoint, so a resumed run corrupts the same way.
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def corrupt(t, pair):
        inputs, targets = masked_denoising(
            t,
            tf.cast(pair, tf.int32),
            vocab_size=vocab_size,
            mask_padding=mask_padding,
            rate=rate,
            mask_token=mask_token,
        )
        return {"tokens": inputs}, targets

    return tf.data.Dataset.zip((tokens, seeds)).map(corrupt)
