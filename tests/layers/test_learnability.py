"""Every registered attention learns to move information between positions.

A tiny model (token embedding + learned positions + one pre-LayerNorm block + readout) is
trained with each registered attention on synthetic tasks that no position-wise model can
solve, and must beat the same model with its attention replaced by `NoMixing` (a Dense of the
query: nothing crosses positions) by a clear margin within a fixed step budget:

- `pointer` (every variant): the first token names a position p in 1..L-1, the others are
  random values; the label, read out at position 0 only, is the value at p. Position 0 alone
  sees only the pointer, so the no-mixing model stays at chance (1 / NUM_VALUES).
- `causal` (variants with `supports_causal`, called with `use_causal_mask=True`): the label at
  every position t >= SHIFT is the value at t - SHIFT (a per-position readout).

Every variant with `supports_rotary` also runs both tasks with `rotary=True` and no position
table, so that rotary positions are the only way to tell positions apart (as the zoo's
`positions="rotary"` does): a rotary form that breaks the attention (Performer with rotated
features in the numerator only, which never left ListOps' majority class) fails here.

`CASES` holds each variant's own arguments and, where the variant cannot reach every position
from position 0 in one layer (or learns slowly), a lower documented threshold; a registered
name with no entry fails `test_every_variant_has_a_case`. `test_no_mixing_fails_the_bar`
checks that the bar is a real one: the no-mixing model stays below every threshold.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from lra_keras.layers import ATTENTIONS, PositionEmbedding, get_attention

LENGTH = 16
NUM_VALUES = 8  # value tokens 1..8; pointer tokens follow them
SHIFT = 2  # the causal task's look-back
DIM = 32
HEADS = 2
BATCH = 32
STEPS = 300
LEARNING_RATE = 3e-3
EVAL_EXAMPLES = 512
# Accuracy a variant must reach, unless its case says otherwise, and the margin by which it
# must beat the no-mixing model on the same task (chance is 1 / NUM_VALUES = 0.125).
DEFAULT_MIN_ACCURACY = 0.85
MIN_MARGIN = 0.2

# Each entry: `kwargs` (the variant's own arguments for a length-16 layer), and only where
# needed, with the reason beside it: `pointer` / `causal` (a lower minimum accuracy than
# DEFAULT_MIN_ACCURACY), `margin` (default MIN_MARGIN), `steps` (default STEPS), `jit_compile`
# (default False: at these sizes XLA's compile costs more than it saves), `rotary` (a dict of
# the above for the `rotary=True` runs, where they differ). Adding a variant is one line here.
# Numbers in comments are accuracies measured at these seeds (no mixing: 0.10 pointer, 0.12
# causal).
CASES: dict[str, dict] = {
    "full": {"kwargs": {}},
    "chunked": {"kwargs": {"query_chunk_size": 4, "key_chunk_size": 4}},
    # One layer of blocks of 8: position 0 reaches only positions 1..7 of the 15 the pointer
    # can name, a ceiling of 7/15 + 8/15 * 1/8 = 0.53 (measured 0.53). Causally, positions 0
    # and 1 of the second block cannot see t - 2: ceiling 12/14 + 2/14 * 1/8 = 0.87 (0.87).
    "local": {"kwargs": {"block_size": 8}, "pointer": 0.45, "causal": 0.8},
    # Query blocks of 2 x 2 with a 2-pixel flange: position 0's memory covers the 4 x 4 image.
    "image_local": {
        "kwargs": {"image_shape": (4, 4), "query_shape": (2, 2), "memory_flange": (2, 2)}
    },
    # Non-causal fixed pattern: position 0 sees its block (1..3) and the last 2 columns of each
    # other block, 9 of the 15 positions the pointer names (0.68).
    "sparse": {
        "kwargs": {"pattern": "fixed", "block_size": 4, "num_summary": 2},
        "pointer": 0.55,
    },
    # Position 0 is a global token (a CLS token, as the paper's classification setting).
    "longformer": {"kwargs": {"window_size": 4, "global_tokens": (0,)}},
    # 8 blocks of 2 (min sparse length 15): position 0 is in the global first block.
    "bigbird": {"kwargs": {"block_size": 2, "num_random_blocks": 1}},
    # One axial layer: position 0 reads its own row directly, but another row reaches it only
    # through that row's first position, whose row query does not know the pointer (it sits
    # at position 0): a row summary, not a lookup (0.51 untied, 0.66 when the stages were
    # tied). Two layers would route any position to any other. (0.39 with rotary positions;
    # measured with rotary too: bigbird and chunked 1.00. The other rotary runs, marked slow,
    # keep their plain bars until measured.)
    "axial": {"kwargs": {"axis_shape": (4, 4)}, "pointer": 0.45, "rotary": {"pointer": 0.3}},
    # The elu + 1 feature map cannot make a sharp pointer over 16 keys (0.83; causal 1.00).
    # With rotary positions only, elu + 1 of the rotated q and k sees position through its
    # nonlinearity alone (0.47, causal 0.56; RoFormer's numerator-only form 0.45 and 0.54).
    "linear": {"kwargs": {}, "pointer": 0.7, "rotary": {"pointer": 0.35, "causal": 0.45}},
    # Keys and values compressed along the length to 8 < 16 mixtures (0.68 to 0.69).
    "linformer": {"kwargs": {"max_length": LENGTH, "projection_dim": 8}, "pointer": 0.55},
    # With rotary positions only: 0.91, causal 1.00 (q and k rotated before the feature map);
    # RoFormer's numerator-only form, which never left ListOps' majority class: 0.41 and 0.74.
    "performer": {"kwargs": {"num_random_features": 32}},
    # The pointer's query and its target's key can hash to different buckets (0.91 to 0.98,
    # causal 0.98 to 0.99, with and without XLA).
    "reformer": {"kwargs": {"bucket_size": 4, "num_hashes": 2}, "pointer": 0.8},
    "synthesizer": {"kwargs": {"max_length": LENGTH, "mode": "random"}},
    "nystrom": {"kwargs": {"num_landmarks": 4, "conv_kernel_size": 3}},
    # A fixed linear mixing: position 0 receives the sum over positions of the LayerNormed
    # inputs, where a value's position survives only through the LayerNorm's nonlinearity, so
    # the pointer is learnt slowly and only partly (0.27 at 300 steps, still 0.27 at 900): a
    # smaller margin over no mixing (0.10), still more than twice its accuracy.
    "fnet": {"kwargs": {}, "pointer": 0.22, "margin": 0.12},
    # Everything passes through 4 inducing points (0.37).
    "set": {"kwargs": {"num_inducing_points": 4}, "pointer": 0.3},
    "memory_compressed": {"kwargs": {"compression_rate": 2}},
    # Position 0's block attends to one sorted block chosen by SortNet from block summaries,
    # with Gumbel noise in training (1.00 with SortNet; 0.78 to 0.99 before it).
    "sinkhorn": {"kwargs": {"block_size": 4}, "pointer": 0.6},
    # One of the two heads is local (blocks of 4 here), the other routed: position 0 finds the
    # pointer's target only when both land in one cluster (0.47; causal 0.79, where the local
    # head covers t - 2 within its block).
    "routing": {"kwargs": {}, "pointer": 0.4, "causal": 0.7},
    # A linear time-invariant mixer, like fnet: position 0 receives a fixed, position-weighted
    # sum of the inputs and cannot select by content (0.27 pointer); a fixed look-back is
    # exactly what its causal kernel learns (1.00).
    "s4d": {"kwargs": {}, "pointer": 0.22, "margin": 0.12},
    # Linear time-invariant recurrences, like s4d: position 0 receives a fixed,
    # position-weighted sum and cannot select by content (pointer 0.24 to 0.25 with S5's
    # half_glu2 gate; with the full_glu / half_glu1 gates 0.20 to 0.23, too close to the bar);
    # a fixed look-back is what a causal scan learns (1.00). S5 with steps up to 1 (dt_max):
    # at S5's default 0.1 its modes decay too slowly to isolate t - 2 (causal 0.80).
    "lru": {
        "kwargs": {"state_dim": 256, "activation": "half_glu2"},
        "pointer": 0.22,
        "margin": 0.12,
    },
    "s5": {
        "kwargs": {
            "state_dim": 32,
            "blocks": 4,
            "dt_min": 0.01,
            "dt_max": 1.0,
            "activation": "half_glu2",
        },
        "pointer": 0.22,
        "margin": 0.12,
    },
    # Single-head gated attention over the EMA's output: a content lookup, learnt slowly from
    # Mega's near-zero query/key scales at init, N(0, 0.02) (0.27 at 300 steps, 1.00 at 600
    # and 900; causal 1.00 at 300).
    "mega": {"kwargs": {"ema_dim": 4, "z_dim": 16}, "steps": 600},
}


# The runs: every registered variant with its positions table, then every variant that takes
# rotary positions with `rotary=True` instead. Kernelised attention (linear, performer) is where
# rotary needs more than rotating a softmax's logits, so its rotary runs are in the fast set; the
# others are marked slow to keep CI's two-core pass short.
PLAIN = [(name, False) for name in sorted(ATTENTIONS)]
ROTARY = [
    (name, True)
    for name in sorted(ATTENTIONS)
    if getattr(ATTENTIONS[name], "supports_rotary", False)
]
ROTARY_FAST = ("linear", "performer")


def case(name: str, rotary: bool = False) -> dict:
    entry = {"pointer": DEFAULT_MIN_ACCURACY, "causal": DEFAULT_MIN_ACCURACY}
    entry.update(margin=MIN_MARGIN, jit_compile=False, steps=STEPS)
    entry.update(CASES[name])
    if rotary:
        entry.update(entry.get("rotary", {}))
    return entry


class NoMixing(keras.layers.Layer):
    """The no-mixing stand-in for attention: a position-wise Dense of the query."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(DIM)

    def call(self, query, value, use_causal_mask=False, training=None):
        return self.dense(query)


def pointer_data(num, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, NUM_VALUES + 1, size=(num, LENGTH))
    target = rng.integers(1, LENGTH, size=num)
    labels = tokens[np.arange(num), target] - 1
    tokens[:, 0] = NUM_VALUES + target  # pointer tokens NUM_VALUES+1 .. NUM_VALUES+LENGTH-1
    return tokens.astype("int32"), labels.astype("int32"), None


def causal_data(num, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, NUM_VALUES + 1, size=(num, LENGTH))
    labels = np.zeros_like(tokens)
    labels[:, SHIFT:] = tokens[:, :-SHIFT] - 1
    weights = np.zeros(tokens.shape, "float32")
    weights[:, SHIFT:] = 1.0  # the first SHIFT positions have nothing to look back at
    return tokens.astype("int32"), labels.astype("int32"), weights


TASKS = {"pointer": pointer_data, "causal": causal_data}


def build_model(mixer, task, positions=True):
    """Embedding + positions, one pre-LayerNorm block (mixer, MLP), readout; no dropout.

    `positions=False` leaves out the position table (for mixers with rotary positions).
    """
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(NUM_VALUES + LENGTH, DIM)(tokens)
    if positions:
        x = PositionEmbedding(max_length=LENGTH)(x)
    h = keras.layers.LayerNormalization()(x)
    x = x + mixer(h, h, use_causal_mask=task == "causal")
    h = keras.layers.LayerNormalization()(x)
    x = x + keras.layers.Dense(DIM)(keras.layers.Dense(2 * DIM, activation="gelu")(h))
    x = keras.layers.LayerNormalization()(x)
    if task == "pointer":
        x = x[:, 0]
    return keras.Model(tokens, keras.layers.Dense(NUM_VALUES)(x))


def train_and_score(mixer, task, steps=STEPS, jit_compile=False, positions=True) -> float:
    """Trains on fresh examples every step (no repeats); accuracy on held-out examples."""
    keras.utils.set_random_seed(0)
    model = build_model(mixer, task, positions)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    x, y, w = TASKS[task](steps * BATCH, seed=1)
    model.fit(x, y, sample_weight=w, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    x, y, w = TASKS[task](EVAL_EXAMPLES, seed=2)
    predicted = np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1)
    correct = predicted == y
    return float(correct.mean() if w is None else (correct * w).sum() / w.sum())


def variant_layer(name, rotary=False):
    kwargs = dict(case(name, rotary)["kwargs"])
    if rotary:
        kwargs["rotary"] = True
    return get_attention(name, num_heads=HEADS, key_dim=DIM // HEADS, dropout=0.0, **kwargs)


@functools.cache
def no_mixing_accuracy(task: str) -> float:
    return train_and_score(NoMixing(), task)


def test_every_variant_has_a_case():
    missing = sorted(set(ATTENTIONS) - set(CASES))
    assert not missing, f"add a learnability case to CASES for: {missing}"


def assert_learned(name: str, task: str, accuracy: float, rotary: bool = False) -> None:
    """The bar a variant's trained accuracy must clear on `task`."""
    baseline = no_mixing_accuracy(task)
    entry = case(name, rotary)
    label = name + (" (rotary)" if rotary else "")
    assert accuracy >= entry[task], f"{label} reached {accuracy:.3f} on {task}"
    assert accuracy >= baseline + entry["margin"], (
        f"{label} {accuracy:.3f} vs no mixing {baseline:.3f}"
    )


@pytest.mark.parametrize("task", sorted(TASKS))
def test_no_mixing_fails_the_bar(task):
    """The suite fails for any variant whose attention is replaced by one that moves nothing
    between positions: the no-mixing model is exactly that replacement (a Dense of the query,
    which can also learn the identity)."""
    accuracy = no_mixing_accuracy(task)
    for name, rotary in PLAIN + ROTARY:
        with pytest.raises(AssertionError):
            assert_learned(name, task, accuracy, rotary)
    # And by a margin: a slightly luckier no-mixing run would fail too.
    lowest = min(case(name, rotary)[task] for name, rotary in PLAIN + ROTARY)
    assert accuracy < lowest - MIN_MARGIN / 2


def check_learns(name, task, rotary=False):
    entry = case(name, rotary)
    accuracy = train_and_score(
        variant_layer(name, rotary),
        task,
        steps=entry["steps"],
        jit_compile=entry["jit_compile"],
        positions=not rotary,  # rotary positions are the only positions
    )
    baseline = no_mixing_accuracy(task)
    label = name + (" rotary" if rotary else "")
    print(f"learnability {task} {label}: {accuracy:.3f} (no mixing {baseline:.3f})")
    assert_learned(name, task, accuracy, rotary)


def runs(task: str) -> list:
    """The `(name, rotary)` runs of `task` as pytest parameters; slow ones marked."""
    params = []
    for name, rotary in PLAIN + ROTARY:
        if task == "causal" and not ATTENTIONS[name].supports_causal:
            continue
        slow = rotary and name not in ROTARY_FAST
        params.append(
            pytest.param(
                name,
                rotary,
                id=name + ("-rotary" if rotary else ""),
                marks=[pytest.mark.slow] if slow else [],
            )
        )
    return params


@pytest.mark.parametrize(("name", "rotary"), runs("pointer"))
def test_variant_learns_the_pointer_task(name, rotary):
    check_learns(name, "pointer", rotary)


@pytest.mark.parametrize(("name", "rotary"), runs("causal"))
def test_causal_variant_learns_to_look_back(name, rotary):
    check_learns(name, "causal", rotary)
