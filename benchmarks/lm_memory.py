"""Does Transformer-XL memory help? Bits per byte with and without memory, and generation speed.

Trains the byte-level `ByteLanguageModel` twice with the same segment length, data order and
step budget, once with `memory_length=segment_length` and once with `memory_length=0`, on the
Python standard library's source files (a real text corpus found on every machine), and
reports held-out bits per byte and generation bytes per second (`generate`'s eager step and
`lra_keras.training.compiled_lm_step`). Writes `results/lm_memory.json`.

    python -m benchmarks.lm_memory [--steps 300] [--corpus_bytes 4000000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sysconfig
import time

import keras
import numpy as np

from lra_keras.training import compiled_lm_step
from lra_keras.zoo.byte_corpus import (
    consecutive_windows,
    random_windows,
    read_byte_corpus,
    split_corpus,
)
from lra_keras.zoo.byte_language_model import ByteLanguageModel, lm_loss


def train_and_evaluate(args, memory_length: int, train, held) -> dict:
    keras.utils.set_random_seed(args.seed)
    model = ByteLanguageModel(
        block=args.block,
        embed_dim=args.embed_dim,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        key_dim=args.embed_dim // args.num_heads,
        mlp_dim=2 * args.embed_dim,
        segment_length=args.segment_length,
        memory_length=memory_length,
        compressed_memory_length=memory_length // 2 if args.block == "compressive" else 0,
        dropout=0.0,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=0.01),
        loss=lm_loss,
        jit_compile=False,
    )
    batches = random_windows(train, args.batch_size, args.sequence_length, seed=args.seed)
    x = np.concatenate([next(batches) for _ in range(args.steps)])
    start = time.perf_counter()
    model.fit(x, x, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    train_seconds = time.perf_counter() - start
    windows = consecutive_windows(held, args.sequence_length)[: args.eval_windows]
    nats = []
    for i in range(0, len(windows), args.batch_size):
        batch = windows[i : i + args.batch_size]
        nats.append(float(lm_loss(batch, model(batch))) * len(batch))
    bits_per_byte = sum(nats) / len(windows) / math.log(2)
    prompt = bytes(held[: args.sequence_length])
    speeds = {}
    for mode, step_fn in (("eager", None), ("compiled", compiled_lm_step(model))):
        model.generate(prompt, num_bytes=4, seed=0, step_fn=step_fn)  # warm-up (and trace)
        start = time.perf_counter()
        model.generate(prompt, num_bytes=args.generate_bytes, seed=0, step_fn=step_fn)
        speeds[mode] = round(args.generate_bytes / (time.perf_counter() - start), 1)
    return {
        "memory_length": memory_length,
        "heldout_bits_per_byte": round(bits_per_byte, 4),
        "train_seconds": round(train_seconds, 1),
        "generation_bytes_per_second": speeds["eager"],
        "compiled_generation_bytes_per_second": speeds["compiled"],
        "parameters": int(model.count_params()),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=sysconfig.get_paths()["stdlib"])
    parser.add_argument("--corpus_bytes", type=int, default=4_000_000)
    parser.add_argument("--block", default="transformer_xl")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--sequence_length", type=int, default=256)
    parser.add_argument("--segment_length", type=int, default=32)
    parser.add_argument("--embed_dim", type=int, default=128)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--eval_windows", type=int, default=128)
    parser.add_argument("--generate_bytes", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/lm_memory.json")
    args = parser.parse_args(argv)
    corpus = read_byte_corpus(args.corpus, max_bytes=args.corpus_bytes)
    train, held = split_corpus(corpus, 0.1)
    runs = [train_and_evaluate(args, m, train, held) for m in (args.segment_length, 0)]
    report = {"config": vars(args), "corpus_bytes": int(len(corpus)), "runs": runs}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    for run in runs:
        print(json.dumps(run))
    return report


if __name__ == "__main__":
    main()
