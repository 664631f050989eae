"""Task definitions and the `lra`, `small` and `tiny` presets, as plain data.

Numbers of the `lra` preset come from the LRA repository's configs
(`lra_benchmarks/*/configs/`, see `reference/lra_reference.md` section 1). Model sizes use
LRA's names: `qkv_dim` is the TOTAL query/key width (`key_dim = qkv_dim // num_heads`).

Learning-rate semantics (as LRA's `create_learning_rate_scheduler`):
- `schedule="rsqrt"`: lr(step) = learning_rate * min(1, step / warmup_steps)
  / sqrt(max(step, warmup_steps)); `learning_rate` is NOT the peak (0.05 / sqrt(1000) = 1.6e-3).
- `schedule="cosine"`: lr(step) = learning_rate * min(1, step / warmup_steps)
  * 0.5 * (1 + cos(pi * ((step - warmup_steps) / num_train_steps % 1))).
`weight_decay` is decoupled (AdamW: p -= lr * weight_decay * p), as flax's legacy Adam.
"""

from __future__ import annotations

import math

# What each task is: its inputs, vocabulary and labels. Image tasks are `image_shape` grids of
# pixel ids 0..255 with no padding (pixel 0 is black, not padding).
TASKS: dict[str, dict] = {
    # Fixed ListOps vocabulary: pad 0, 15 symbols, OOV 16, as LRA's TokenTextEncoder.
    "listops": {"kind": "classifier", "vocab_size": 17, "num_classes": 10},
    # Bytes + 1, pad 0.
    "text": {"kind": "classifier", "vocab_size": 257, "num_classes": 2},
    "retrieval": {"kind": "two_tower", "vocab_size": 257, "num_classes": 2},
    "image": {"kind": "classifier", "vocab_size": 256, "num_classes": 10, "grid": True},
    "pathfinder": {"kind": "classifier", "vocab_size": 256, "num_classes": 2, "grid": True},
    "pathfinder64": {"kind": "classifier", "vocab_size": 256, "num_classes": 2, "grid": True},
    "pathx": {"kind": "classifier", "vocab_size": 256, "num_classes": 2, "grid": True},
    "pathfinder256": {"kind": "classifier", "vocab_size": 256, "num_classes": 2, "grid": True},
}
# Segment-recurrent encoders (not registry attentions): Transformer-XL and Compressive blocks
# run over the sequence segment by segment. Their `attention_kwargs` and defaults:
RECURRENT_ATTENTIONS = {
    "transformer_xl": "the segment-recurrent Transformer-XL encoder",
    "compressive": "the segment-recurrent Compressive Transformer encoder",
}
RECURRENT_KWARGS = (
    "segment_length",
    "memory_length",
    "compressed_memory_length",
    "compression_rate",
    "compression",
)


def recurrent_defaults(attention: str, max_length: int) -> dict:
    """Four or more segments of at most 256 tokens, as much memory, compressed memory half."""
    segment = min(256, max(1, max_length // 4))
    defaults = {"segment_length": segment, "memory_length": segment}
    if attention == "compressive":
        defaults.update(
            compressed_memory_length=max(1, segment // 2), compression_rate=3, compression="conv"
        )
    return defaults


# The byte-level language model (task `lm`): model sizes per preset and its training settings.
LM_MODEL = {
    "lra": {
        "embed_dim": 256,
        "num_layers": 4,
        "num_heads": 4,
        "qkv_dim": 256,
        "mlp_dim": 1024,
        "max_length": 1024,
    },
    "small": {
        "embed_dim": 128,
        "num_layers": 2,
        "num_heads": 4,
        "qkv_dim": 128,
        "mlp_dim": 256,
        "max_length": 256,
    },
    "tiny": {
        "embed_dim": 32,
        "num_layers": 1,
        "num_heads": 2,
        "qkv_dim": 32,
        "mlp_dim": 64,
        "max_length": 64,
    },
}
LM_TRAINING = {
    "batch_size": 16,
    "learning_rate": 1e-3,
    "weight_decay": 0.01,
    "warmup_steps": 100,
    "schedule": "cosine",
    "num_train_steps": 2000,
    "grad_clip_norm": 1.0,
    "eval_every": 200,
    "num_eval_steps": 20,
}
PRESETS = ("lra", "small", "tiny")


def _model(layers, heads, emb, qkv, mlp, dropout=0.1, attention_dropout=0.1, **extra) -> dict:
    out = {
        "num_layers": layers,
        "num_heads": heads,
        "embed_dim": emb,
        "qkv_dim": qkv,
        "mlp_dim": mlp,
        "dropout": dropout,
        "attention_dropout": attention_dropout,
    }
    out.update(extra)
    return out


def _train(batch, lr, wd, warmup, schedule, steps, eval_every, clip=None, eval_steps=None):
    return {
        "batch_size": batch,
        "learning_rate": lr,
        "weight_decay": wd,
        "warmup_steps": warmup,
        "schedule": schedule,
        "num_train_steps": steps,
        "grad_clip_norm": clip,
        "eval_every": eval_every,
        "num_eval_steps": eval_steps,
    }


# LRA's attention hyperparameters as the LRA code sets them (reference section 6): block 50 on
# the byte/ListOps tasks; train_utils.get_model forces the sparse pattern's 50/10 on every task;
# Linformer k=16 (the text config's 32 is never plumbed); Reformer one hash round; Synthesizer
# "random" mixed with dot-product logits (the encoder's override of the module default).
_LRA_SEQUENCE_ATTENTION = {
    "local": {"block_size": 50},
    "sparse": {"block_size": 50, "num_summary": 10},
    "sinkhorn": {"block_size": 50},
    "bigbird": {"block_size": 64, "num_random_blocks": 3},
    "longformer": {"window_size": 512},
    "linformer": {"projection_dim": 16},
    "reformer": {"num_hashes": 1},
    "synthesizer": {"mode": "random", "mix_dot_product": True},
}
# The CIFAR-10 and Pathfinder configs set block 64 for local, sinkhorn and bigbird.
_LRA_IMAGE_ATTENTION = {
    **_LRA_SEQUENCE_ATTENTION,
    "local": {"block_size": 64},
    "sinkhorn": {"block_size": 64},
}

# LRA model names -> registry names, for the per-model config tables.
_LRA_MODEL_NAMES = {
    "transformer": "full",
    "local": "local",
    "sparse_transformer": "sparse",
    "longformer": "longformer",
    "bigbird": "bigbird",
    "linformer": "linformer",
    "reformer": "reformer",
    "sinkhorn": "sinkhorn",
    "synthesizer": "synthesizer",
    "linear_transformer": "linear",
    "performer": "performer",
}


def _per_model(keys: tuple, table: dict) -> dict:
    """{registry name: config keys} from {LRA model name: (values of keys[, extra dict])}."""
    out = {}
    for lra_name, values in table.items():
        entry = dict(zip(keys, values[: len(keys)], strict=True))
        entry.update(values[len(keys)] if len(values) > len(keys) else {})
        out[_LRA_MODEL_NAMES[lra_name]] = entry
    return out


# ---------------------------------------------------------------------------- the `lra` preset
# Each entry: `model` (the task's base model), `training`, `data` (lengths, pooling, positions),
# `attention_kwargs` (per registry name) and `per_model` (per registry name: model keys that
# replace the base, as LRA's per-model config files do). Variants without an LRA per-model file
# use `default_model` when given (the image tasks: the Transformer's file, since the bare base
# config is not the baseline LRA reports), else the task's base model.
LRA: dict[str, dict] = {
    "listops": {
        "data": {"max_length": 2000, "pooling": "cls", "learned_positions": False},
        "model": _model(4, 8, 512, 512, 1024),
        "training": _train(32, 0.05, 0.1, 1000, "rsqrt", 5000, 50),
        "attention_kwargs": {
            **_LRA_SEQUENCE_ATTENTION,
            # listops/configs/performer_base.py: softmax FAVOR+ with nb_features=2 (sic) and
            # feature redraws; every other task uses the layer's defaults (paper B.1: FAVOR+).
            "performer": {"kernel": "softmax", "num_random_features": 2, "redraw": True},
        },
        "per_model": {},
    },
    "text": {
        # 4K tokens as the paper and Table 2 (the released base config says 1000).
        "data": {"max_length": 4000, "pooling": "cls", "learned_positions": False},
        "model": _model(4, 4, 256, 256, 1024),
        "training": _train(32, 0.05, 0.1, 8000, "rsqrt", 20000, 100),
        "attention_kwargs": dict(_LRA_SEQUENCE_ATTENTION),
        "per_model": {},
    },
    "retrieval": {
        # max_length is per document.
        "data": {"max_length": 4000, "pooling": "cls", "learned_positions": False},
        "model": _model(4, 4, 128, 128, 512),
        "training": _train(32, 0.05, 0.1, 8000, "rsqrt", 5000, 100),
        "attention_kwargs": dict(_LRA_SEQUENCE_ATTENTION),
        "per_model": {},
    },
    "image": {
        # cifar10/base_cifar10_config.py; 45000 / 256 = 175 steps per epoch, 200 epochs.
        "data": {"image_shape": [32, 32], "pooling": "cls", "learned_positions": True},
        "model": _model(1, 1, 32, 32, 64, dropout=0.3, attention_dropout=0.2),
        "training": _train(256, 5e-4, 0.0, 175, "cosine", 35000, 175, eval_steps=39),
        "attention_kwargs": dict(_LRA_IMAGE_ATTENTION),
        "default_model": "full",
        # (layers, heads, emb, qkv, mlp) of each per-model file, and its other settings.
        "per_model": _per_model(
            ("num_layers", "num_heads", "embed_dim", "qkv_dim", "mlp_dim"),
            {
                # transformer_base.py (8 heads: issue #33, 1 head gives 36%).
                "transformer": (1, 8, 128, 64, 128),
                # bigbird_base.py sets `num_head=4` (a typo), so the base's 1 head ran.
                "bigbird": (1, 1, 128, 64, 128),
                "linear_transformer": (1, 8, 128, 64, 128),
                "linformer": (1, 8, 128, 64, 128),
                "local": (1, 2, 128, 64, 128, {"pooling": "mean"}),
                "longformer": (4, 4, 128, 64, 128, {"pooling": "mean"}),
                "performer": (1, 8, 128, 64, 128),
                "reformer": (4, 8, 64, 32, 64),
                # sinkhorn_base.py: the bare base model (emb 32, 1 head), weight decay 0.7.
                "sinkhorn": (1, 1, 32, 32, 64, {"weight_decay": 0.7, "dropout": 0.1}),
                "sparse_transformer": (1, 8, 128, 64, 128),
                "synthesizer": (1, 8, 128, 64, 128),
            },
        ),
    },
    "pathfinder": {
        # pathfinder32/base_pathfinder32_config.py; 160000 / 512 = 312 steps per epoch.
        "data": {"image_shape": [32, 32], "pooling": "mean", "learned_positions": False},
        "model": _model(1, 2, 32, 16, 32),
        "training": _train(512, 1e-3, 0.0, 312, "cosine", 62400, 312, eval_steps=39),
        "attention_kwargs": dict(_LRA_IMAGE_ATTENTION),
        "default_model": "full",
        # (layers, heads, emb, dropout, qkv, mlp) of each per-model file.
        "per_model": _per_model(
            ("num_layers", "num_heads", "embed_dim", "dropout", "qkv_dim", "mlp_dim"),
            {
                "transformer": (4, 4, 32, 0.2, 16, 32),
                "bigbird": (4, 2, 64, 0.2, 32, 64),
                "linear_transformer": (1, 2, 128, 0.2, 64, 128),
                "linformer": (1, 2, 32, 0.2, 16, 32),
                "local": (2, 4, 64, 0.1, 32, 64),
                "longformer": (2, 2, 32, 0.1, 16, 32),
                "performer": (4, 8, 32, 0.2, 16, 32),
                "reformer": (2, 8, 64, 0.2, 32, 64),
                "sinkhorn": (2, 4, 32, 0.2, 16, 64),
                "sparse_transformer": (1, 8, 32, 0.2, 16, 32),
                "synthesizer": (2, 4, 64, 0.2, 32, 64),
            },
        ),
    },
    "pathfinder64": {
        # Not in the LRA table: batch 256, 200 epochs of 160000 (625 steps per epoch); the
        # optimiser settings are the Pathfinder family's (lr 1e-3, cosine, no weight decay).
        "data": {"image_shape": [64, 64], "pooling": "cls", "learned_positions": True},
        "model": _model(2, 4, 32, 32, 32),
        "training": _train(256, 1e-3, 0.0, 625, "cosine", 125000, 625),
        "attention_kwargs": dict(_LRA_IMAGE_ATTENTION),
        "per_model": {},
    },
    "pathx": {
        # pathfinder128/base_pathfinder128_config.py (only a Transformer config exists).
        "data": {"image_shape": [128, 128], "pooling": "mean", "learned_positions": True},
        "model": _model(1, 2, 32, 16, 32),
        "training": _train(64, 1e-3, 0.0, 2500, "cosine", 500000, 2500, clip=1.0, eval_steps=312),
        "attention_kwargs": dict(_LRA_IMAGE_ATTENTION),
        "per_model": {},
    },
    "pathfinder256": {
        # Not in the LRA table: the pathfinder64 model, batch 32, 100 epochs (5000 steps each).
        "data": {"image_shape": [256, 256], "pooling": "cls", "learned_positions": True},
        "model": _model(2, 4, 32, 32, 32),
        "training": _train(32, 1e-3, 0.0, 5000, "cosine", 500000, 5000),
        "attention_kwargs": dict(_LRA_IMAGE_ATTENTION),
        "per_model": {},
    },
}

# --------------------------------------------------------------------------- the `small` preset
# LRA's tasks (lengths, pooling, positions, training, attention hyperparameters) on the model
# most reproductions train on one GPU. Per-model LRA overrides do not apply.
SMALL_MODEL = _model(2, 2, 64, 64, 128)

# ---------------------------------------------------------------------------- the `tiny` preset
# Tests and CPU demos: the task's structure (inputs, pooling, positions, padding, classes, two
# towers) at short lengths. Image tasks run on a 32x32 grid, the native size of CIFAR-10 and
# Pathfinder32 (a full-attention step at 1024 tokens takes ~0.3 s on a CPU at batch 16). The
# larger Pathfinder tasks keep their structure on that 32x32 grid too, for tests and smoke
# runs: `lra_keras.data` serves them at their native size, so training them on real data
# needs `image_shape` set back to it (or images resized to 32x32).
TINY_MODEL = _model(1, 2, 32, 32, 64)
TINY_LENGTHS = {
    "listops": {"max_length": 128},
    "text": {"max_length": 256},
    "retrieval": {"max_length": 128},
    "image": {"image_shape": [32, 32]},
    "pathfinder": {"image_shape": [32, 32]},
    "pathfinder64": {"image_shape": [32, 32]},
    "pathx": {"image_shape": [32, 32]},
    "pathfinder256": {"image_shape": [32, 32]},
}
TINY_TRAINING = _train(16, 1e-3, 0.0, 20, "cosine", 300, 50, clip=1.0, eval_steps=10)
# Small enough that the sparse structure is exercised at tiny lengths.
TINY_ATTENTION = {
    "chunked": {"query_chunk_size": 64, "key_chunk_size": 64},
    "local": {"block_size": 16},
    "sparse": {"block_size": 16, "num_summary": 4},
    "sinkhorn": {"block_size": 16},
    "bigbird": {"block_size": 8, "num_random_blocks": 2},
    "longformer": {"window_size": 16},
    "linformer": {"projection_dim": 8},
    "reformer": {"num_hashes": 1, "bucket_size": 16},
    "synthesizer": {"mode": "random"},
    "performer": {"num_random_features": 16},
    "set": {"num_inducing_points": 8},
    "nystrom": {"num_landmarks": 8},
}

# ----------------------------------------------------------------- S4D (the `s4d` mixer)
# The state-spaces repository's LRA configurations (github.com/state-spaces/s4, commit 62a14bb,
# configs/experiment/lra/s4-{listops,imdb,aan,cifar,pathfinder,pathx}.yaml), the settings of
# the S4/S4D papers' LRA tables (Gu, Goel and Re, ICLR 2022, appendix D.2; Gu, Gupta, Goel and
# Re, "On the Parameterization and Initialization of Diagonal State Space Models", NeurIPS
# 2022, appendix C) as last revised. Columns: depth, width H, normalisation, pre-norm,
# dropout, learning rate, batch, training steps, epochs, state size N, dt range. Every task:
# AdamW, weight decay 0.05, cosine decay after a 10% linear warmup, bidirectional, mean
# pooling, the state-space parameters at learning rate 0.001 without weight decay.
# Carried over: the normalisation (`norm`, BatchNorm on every task) and, on the image tasks,
# normalised pixel values through a linear encoder (`input_encoding="linear"`).
# Not carried over: the zoo's block has an MLP after the mixer (S4's block is the S4 layer
# alone), and is always pre-norm (the table's pre-norm column is recorded, not applied);
# its A and B are per channel (the repo shares one copy, `n_ssm: 1`, on listops/imdb/aan/
# cifar) with S4D-Lin initialisation (the repo: `init: legs`); on listops/imdb/aan the repo
# trains dt at the base learning rate (`lr.dt: null`), here at 0.001 with A and B.
S4D_LRA_TABLE = {
    "listops": (6, 256, "batch", False, 0.0, 0.01, 32, 120000, 40, 4, (0.001, 0.1)),
    "text": (6, 256, "batch", True, 0.0, 0.01, 16, 50000, 32, 4, (0.001, 0.1)),
    "retrieval": (6, 256, "batch", True, 0.0, 0.01, 64, 50000, 20, 4, (0.001, 0.1)),
    "image": (6, 512, "batch", False, 0.1, 0.01, 50, 180000, 200, 64, (0.001, 0.1)),
    "pathfinder": (6, 256, "batch", True, 0.0, 0.004, 64, 500000, 200, 64, (0.001, 0.1)),
    "pathx": (6, 256, "batch", True, 0.0, 0.002, 16, 500000, 50, 64, (0.0001, 0.1)),
}
# Not in the repository: Pathfinder-64 as Pathfinder-32, Pathfinder-256 as Path-X.
S4D_LRA_TABLE["pathfinder64"] = S4D_LRA_TABLE["pathfinder"]
S4D_LRA_TABLE["pathfinder256"] = S4D_LRA_TABLE["pathx"]
S4D_SSM_LEARNING_RATE = 0.001


def s4d_preset(task: str, preset: str) -> tuple[dict, dict]:
    """(config keys, attention_kwargs) of the `s4d` mixer on `task` for `lra` or `small`.

    `lra`: the table above. `small`: the same optimiser at a quarter of the steps, on half
    the depth (at least 2) and a quarter of the width (at least 64).
    """
    depth, width, norm, _, dropout, lr, batch, steps, epochs, state, dt = S4D_LRA_TABLE[task]
    row = {
        "depth": depth,
        "width": width,
        "state_dim": state,
        "learning_rate": lr,
        "ssm_learning_rate": S4D_SSM_LEARNING_RATE,
        "weight_decay": 0.05,
        "batch_size": batch,
        "num_train_steps": steps,
        "warmup_steps": steps // 10,
        "steps_per_epoch": steps // epochs,
        "norm": norm,
        "pooling": "mean",
        "dropout": dropout,
        "attention_kwargs": {"dt_min": dt[0], "dt_max": dt[1]},
    }
    return _state_space_config(row, task, preset)


# The pixel normalisation of `input_encoding="linear"`, (mean, std) on the [0, 1] scale.
# CIFAR-10 grayscale: S4's (state-spaces/s4 example.py and its CIFAR loader:
# `Normalize(mean=122.6 / 255.0, std=61.0 / 255.0)`; S5 copies it). Pathfinder and Path-X:
# (0.5, 0.5), i.e. x * 2 - 1, as Mega's LRA commands (`--pixel-normalization 0.5 0.5`).
PIXEL_STATS = {
    "image": (122.6 / 255.0, 61.0 / 255.0),
    "pathfinder": (0.5, 0.5),
    "pathfinder64": (0.5, 0.5),
    "pathx": (0.5, 0.5),
    "pathfinder256": (0.5, 0.5),
}
_GRID_TASKS = tuple(PIXEL_STATS)
# Training examples per epoch, as the S4 table's steps * batch / epochs imply (LRA's splits).
_TRAIN_EXAMPLES = {
    "listops": 96000,
    "text": 25000,
    "retrieval": 160000,
    "image": 45000,
    "pathfinder": 160000,
    "pathx": 160000,
}


def _state_space_config(row: dict, task: str, preset: str) -> tuple[dict, dict]:
    """(config keys, attention_kwargs) from one row of a state-space model's LRA table."""
    depth, width, steps = row["depth"], row["width"], row["num_train_steps"]
    warmup = row["warmup_steps"]
    if preset == "small":
        depth, width = max(2, depth // 2), max(64, width // 4)
        steps, warmup = steps // 4, warmup // 4
    dropout = row["dropout"]
    config = _model(depth, 1, width, width, 2 * width, dropout=dropout, attention_dropout=dropout)
    config.update(
        _train(
            row["batch_size"],
            row["learning_rate"],
            row["weight_decay"],
            warmup,
            "cosine",
            steps,
            row["steps_per_epoch"],
            clip=row.get("grad_clip_norm"),
        ),
        pooling=row["pooling"],
        norm=row["norm"],
        input_encoding="linear" if task in _GRID_TASKS else "embedding",
        no_weight_decay=list(row.get("no_weight_decay", [])),
    )
    kwargs = {"state_dim": row["state_dim"], "ssm_learning_rate": row["ssm_learning_rate"]}
    kwargs.update(row.get("attention_kwargs", {}))
    return config, kwargs


# ----------------------------------------------------------------- LRU (the `lru` mixer)
# Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu and De, "Resurrecting Recurrent Neural
# Networks for Long Sequences", ICML 2023 (arXiv 2303.06349, read as rendered at
# https://ar5iv.labs.arxiv.org/html/2303.06349). Columns:
# - depth, width H, state size N, iterations, batch, LR factor, weight decay, dropout: appendix
#   D.2, Table 9 ("List of all the hyper-parameters used for each task for the LRU model");
# - r_min, r_max: appendix C.3, Table 8, the ring under the "+gamma Normalization (LRU)" row;
# - max phase: Table 8's caption and section 3.4 ("[0, pi/10]" on PathX, "[0, 2 pi]" elsewhere);
# - bidirectional: appendix D.1 (bidirectional on PathFinder and PathX, unidirectional on the
#   rest);
# - activation: appendix D.1, the mixing layer is a GLU with dropout (`full_glu`), on PathX "a
#   GLU activation function without one additional linear transform; the same as used by [S5]"
#   (read here as S5's Path-X `half_glu1`, the S5 table below).
# Every task (appendix D.1, D.2): batch norm in every block (pre-norm), AdamW, linear warmup over
# the first 10% of the iterations then cosine decay, A, B and gamma at the base learning rate
# times the LR factor and without weight decay.
# Not in the paper, so kept at the S4D preset's (the table above): the base learning rate
# (appendix D.3 tunes it "on a logarithmic grid of 2" and does not list the values) and the
# pooling (mean). Steps per epoch (the evaluation interval): LRA's training split / batch.
# Not carried over: the paper's sCIFAR uses colour images (the zoo's `image` is LRA's
# grayscale); its warmup starts from, and its cosine ends at, 1e-7 (the zoo's at 0); the
# zoo's LRU trains B at the base learning rate with weight decay (its `state_space_variables`
# are nu, theta and gamma); the zoo's block adds an MLP after the mixer, as for S4D.
_TWO_PI, _PI_OVER_10 = 2.0 * math.pi, math.pi / 10.0
# fmt: off
LRU_PAPER_TABLE = {
    #             depth, H, N, iterations, batch, LR factor, wd, dropout, r_min, r_max,
    #             max phase, bidirectional, activation
    "image": (6, 512, 384, 180000, 50, 0.25, 0.05, 0.1, 0.9, 0.999, _TWO_PI, False, "full_glu"),
    "listops": (6, 128, 256, 80000, 32, 0.5, 0.05, 0.0, 0.0, 0.99, _TWO_PI, False, "full_glu"),
    "text": (6, 256, 192, 50000, 32, 0.1, 0.05, 0.1, 0.5, 0.9, _TWO_PI, False, "full_glu"),
    "retrieval": (6, 128, 256, 100000, 64, 0.5, 0.05, 0.1, 0.5, 0.9, _TWO_PI, False, "full_glu"),
    "pathfinder": (6, 192, 256, 500000, 64, 0.25, 0.05, 0.0, 0.9, 0.999, _TWO_PI, True,
                   "full_glu"),
    "pathx": (6, 128, 256, 250000, 32, 0.25, 0.05, 0.0, 0.999, 0.9999, _PI_OVER_10, True,
              "half_glu1"),
}
# fmt: on


def _lru_row(task: str) -> dict:
    depth, width, state, steps, batch, lr_factor, wd, dropout = LRU_PAPER_TABLE[task][:8]
    r_min, r_max, max_phase, bidirectional, activation = LRU_PAPER_TABLE[task][8:]
    # The S4D table's learning rate and pooling stand in for the paper's unlisted ones.
    learning_rate = S4D_LRA_TABLE[task][5]
    return {
        "depth": depth,
        "width": width,
        "state_dim": state,
        "dropout": dropout,
        "learning_rate": learning_rate,
        "ssm_learning_rate": learning_rate * lr_factor,
        "batch_size": batch,
        "num_train_steps": steps,
        "warmup_steps": steps // 10,
        "steps_per_epoch": _TRAIN_EXAMPLES[task] // batch,
        "weight_decay": wd,
        "norm": "batch",
        "pooling": "mean",
        "attention_kwargs": {
            "r_min": r_min,
            "r_max": r_max,
            "max_phase": max_phase,
            "bidirectional": bidirectional,
            "activation": activation,
        },
    }


LRU_LRA_TABLE = {task: _lru_row(task) for task in LRU_PAPER_TABLE}
# Not in the paper: Pathfinder-64 as Pathfinder-32, Pathfinder-256 as Path-X.
LRU_LRA_TABLE["pathfinder64"] = LRU_LRA_TABLE["pathfinder"]
LRU_LRA_TABLE["pathfinder256"] = LRU_LRA_TABLE["pathx"]

TINY_ATTENTION["s4d"] = {"state_dim": 16}

# ----------------------------------------------------------------- S5 (the `s5` mixer)
# S5's LRA runs as its repository gives them (github.com/lindermanlab/S5, commit d133f4d,
# bin/run_experiments/run_lra_{listops,imdb,aan,cifar,pathfinder,pathx}.sh), the runs behind
# the LRA results of Smith, Warrington and Linderman, ICLR 2023. Columns: depth, width H,
# state size P, blocks J, C_init, activation (hg1/hg2: half_glu1/2), batch, epochs,
# lr_factor (learning rate = lr_factor * ssm_lr), ssm_lr, dropout, weight decay, warmup
# epochs, clip_eigs, dt_min. Every task: bidirectional, batch norm (`norm="batch"`), mean
# pooling, AdamW with cosine decay after a linear warmup, dt_max 0.1.
# Not carried over: the optimiser groups of `opt_config` (the zoo trains Lambda, log_step
# and B at ssm_lr without weight decay, S5's `standard`; listops and cifar use
# `BfastandCdecay`, B at the base rate with decay; pathx `BandCdecay`, B decayed at ssm_lr;
# `dt_global` puts log_step at the base rate on imdb and aan).
_LECUN, _TRUNC, _CPLX = "lecun_normal", "trunc_standard_normal", "complex_normal"
# fmt: off
S5_LRA_TABLE = {
    "listops": (8, 128, 16, 8, _LECUN, "hg2", 50, 40, 3, 0.001, 0.0, 0.04, 1, False, 1e-3),
    "text": (6, 256, 192, 12, _LECUN, "hg2", 50, 35, 4, 0.001, 0.1, 0.07, 0, False, 1e-3),
    "retrieval": (6, 128, 256, 16, _TRUNC, "hg1", 32, 20, 2, 0.001, 0.0, 0.05, 1, False, 1e-3),
    "image": (6, 512, 384, 3, _LECUN, "hg1", 50, 250, 4.5, 0.001, 0.1, 0.07, 1, True, 1e-3),
    "pathfinder": (6, 192, 256, 8, _TRUNC, "hg1", 64, 200, 5, 0.0009, 0.05, 0.03, 1, False, 1e-3),
    "pathx": (6, 128, 256, 16, _CPLX, "hg1", 32, 75, 3, 0.0006, 0.0, 0.06, 1, False, 1e-4),
}
# fmt: on
# Not in the repository: Pathfinder-64 as Pathfinder-32, Pathfinder-256 as Path-X.
S5_LRA_TABLE["pathfinder64"] = S5_LRA_TABLE["pathfinder"]
S5_LRA_TABLE["pathfinder256"] = S5_LRA_TABLE["pathx"]
# Training examples per epoch (LRA's splits; reference section 1): steps = epochs * this / batch.
S5_TRAIN_EXAMPLES = {
    "listops": 96000,
    "text": 25000,
    "retrieval": 147086,
    "image": 45000,
    "pathfinder": 160000,
    "pathx": 160000,
    "pathfinder64": 160000,
    "pathfinder256": 160000,
}


def s5_preset(task: str, preset: str) -> tuple[dict, dict]:
    """(config keys, attention_kwargs) of the `s5` mixer on `task` for `lra` or `small`.

    `lra`: the table above. `small`: the same optimiser at a quarter of the steps, on half
    the depth (at least 2) and a quarter of the width (at least 64).
    """
    row = S5_LRA_TABLE[task]
    depth, width, state, blocks, c_init, activation, batch, epochs = row[:8]
    lr_factor, ssm_lr, dropout, wd, warmup_epochs, clip_eigs, dt_min = row[8:]
    steps_per_epoch = S5_TRAIN_EXAMPLES[task] // batch
    steps = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch
    if preset == "small":
        depth, width = max(2, depth // 2), max(64, width // 4)
        steps, warmup = steps // 4, warmup // 4
    config = _model(depth, 1, width, width, 2 * width, dropout=dropout, attention_dropout=dropout)
    config.update(
        _train(batch, lr_factor * ssm_lr, wd, warmup, "cosine", steps, steps_per_epoch),
        pooling="mean",
    )
    kwargs = {
        "state_dim": state,
        "blocks": blocks,
        "C_init": c_init,
        "activation": {"hg1": "half_glu1", "hg2": "half_glu2"}[activation],
        "clip_eigs": clip_eigs,
        "dt_min": dt_min,
        "dt_max": 0.1,
        "ssm_learning_rate": ssm_lr,
    }
    return config, kwargs


# ----------------------------------------------------------------- Mega (the `mega` mixer)
# Mega's LRA runs (Ma et al., ICLR 2023) as its repository sets them (facebookresearch/mega,
# commit 09f1a87: examples/mega/README.lra.md for depth, norm, attention function, dropout,
# learning rate, weight decay, batch x update-freq, steps, warmup; fairseq/models/lra/model.py
# `mega_lra_{listop,imdb,aan,cifar10,pf32,pf128}` for the widths: embed d, z, hidden (= the
# FFN width), truncation). Every task: EMA dimension 16, bidirectional EMA, the "simple"
# relative position bias, unchunked attention (the architectures' chunk is -1 or the whole
# image), mean pooling, Adam (0.9, 0.98) with decoupled weight decay, gradient clip 1.0, one
# learning rate for every weight (no separate EMA group). Mega-chunk: add `chunk_size` to
# `attention_kwargs`. Not carried over: linear decay to 0 (the zoo's cosine stands in); the
# zoo's block (pre-LayerNorm, attention residual, MLP) around the Mega layer (Mega's layer
# carries its own gated residual, then a normalised FFN; its norm is recorded here, not
# applied); Adam's beta_2 0.98. Path-X: batch 2 on 8 GPUs x update-freq 8; its warmup is a
# free variable in the README (`${WARMUP}`), here Pathfinder's 20%.
# Model columns: depth, d, z_dim, hidden_dim, attention function, norm, pre-norm, truncation.
MEGA_LRA_MODEL = {
    "listops": (6, 80, 64, 160, "softmax", "layer", False, 1024),
    "text": (4, 128, 64, 256, "softmax", "scale", False, 1024),
    "retrieval": (6, 128, 64, 256, "softmax", "scale", False, 1024),
    "image": (8, 160, 96, 320, "laplace", "batch", True, 1024),
    "pathfinder": (6, 128, 64, 256, "laplace", "batch", True, 1024),
    "pathx": (4, 64, 32, 128, "laplace", "batch", True, 4096),
}
# Training columns: dropout, learning rate, weight decay, batch (x update-freq), steps, warmup.
MEGA_LRA_TRAINING = {
    "listops": (0.1, 0.001, 0.01, 64, 90000, 3000),
    "text": (0.1, 0.004, 0.01, 50, 25000, 10000),
    "retrieval": (0.1, 0.003, 0.04, 64, 91960, 10000),
    "image": (0.0, 0.01, 0.02, 50, 180000, 9000),
    "pathfinder": (0.0, 0.01, 0.01, 128, 250000, 50000),
    "pathx": (0.0, 0.01, 0.01, 128, 125000, 25000),
}
# Not in the repository: Pathfinder-64 as Pathfinder-32, Pathfinder-256 as Path-X.
for _table in (MEGA_LRA_MODEL, MEGA_LRA_TRAINING):
    _table["pathfinder64"] = _table["pathfinder"]
    _table["pathfinder256"] = _table["pathx"]


def mega_preset(task: str, preset: str) -> tuple[dict, dict]:
    """(config keys, attention_kwargs) of the `mega` mixer on `task` for `lra` or `small`.

    `lra`: the tables above, the bias table covering the task's length. `small`: the same
    optimiser at a quarter of the steps, on half the depth (at least 2) and half the widths.
    """
    depth, width, z_dim, hidden, function, _, _, truncation = MEGA_LRA_MODEL[task]
    dropout, lr, weight_decay, batch, steps, warmup = MEGA_LRA_TRAINING[task]
    data = LRA[task]["data"]
    length = data.get("max_length") or data["image_shape"][0] * data["image_shape"][1]
    if preset == "small":
        depth, width, z_dim, hidden = max(2, depth // 2), width // 2, z_dim // 2, hidden // 2
        steps, warmup = steps // 4, warmup // 4
    config = _model(depth, 1, width, width, hidden, dropout=dropout, attention_dropout=0.0)
    eval_every = LRA[task]["training"]["eval_every"]
    config.update(
        _train(batch, lr, weight_decay, warmup, "cosine", steps, eval_every, clip=1.0),
        pooling="mean",
    )
    kwargs = {
        "ema_dim": 16,
        "z_dim": z_dim,
        "hidden_dim": hidden,
        "attention_activation": function,
        "max_positions": length,
        "truncation": truncation,
    }
    return config, kwargs


TINY_ATTENTION["mega"] = {"ema_dim": 4, "z_dim": 16, "chunk_size": 32}
TINY_ATTENTION["s5"] = {"state_dim": 16, "blocks": 2}
TINY_ATTENTION["lru"] = {"state_dim": 16}


# Model name -> its LRA table. A model with a preset function of its own (s4d, s5, mega) is
# routed to it by `state_space_preset`.
STATE_SPACE_TABLES = {"lru": LRU_LRA_TABLE}
STATE_SPACE_PRESETS = ("s4d", "s5", "mega") + tuple(STATE_SPACE_TABLES)


def state_space_preset(name: str, task: str, preset: str) -> tuple[dict, dict]:
    """(config keys, attention_kwargs) of the state-space model `name` on `task`.

    `lra`: the model's table above; `small`: the same optimiser at a quarter of the steps, on
    half the depth (at least 2) and a quarter of the width (at least 64). The kwargs hold
    `state_dim` and `ssm_learning_rate` (and s4d's dt range, lru's ring, phase, direction and
    gate); the zoo passes those the mixer's constructor takes.
    """
    if name == "s4d":
        return s4d_preset(task, preset)
    if name == "s5":
        config, kwargs = s5_preset(task, preset)
        # S5's run scripts set batchnorm=True on every task and feed pixels as values.
        config.update(norm="batch", input_encoding="linear" if task in _GRID_TASKS else "embedding")
        return config, kwargs
    if name == "mega":
        config, kwargs = mega_preset(task, preset)
        # The recipe keys of Mega's README.lra.md: --norm-type batchnorm/syncbatchnorm on the
        # image tasks ("batch"; layernorm and scalenorm elsewhere stay "layer"), and
        # --input-type image: pixel values, not tokens (S4's CIFAR statistics here; the
        # README's 0.48/0.24 is not carried over).
        norm = MEGA_LRA_MODEL[task][5]
        config.update(
            norm="batch" if norm == "batch" else "layer",
            input_encoding="linear" if task in _GRID_TASKS else "embedding",
        )
        return config, kwargs
    return _state_space_config(STATE_SPACE_TABLES[name][task], task, preset)
