"""Mini-LRA accuracy: every attention trained at one small budget on generated data.

Generates (once, seeded) short-sequence ListOps (10-120 tokens, padded to 128) and
Pathfinder-32 (hard), then trains the zoo's `tiny` model (1 layer, width 32, 2 heads) with each
attention for `--steps` steps through `lra-train` (each (task, attention) in its own
subprocess, so one failure does not stop the run), and reports test accuracy at the best
validation step, the test split's majority-class baseline and the wall time.

    python -m benchmarks.accuracy [--tasks listops,pathfinder] [--attentions all] [--steps 300]

Writes `results/accuracy.json`, `results/accuracy.md` and `results/accuracy.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# Per task: how to generate it and the overrides that fit its generated data.
TASK_SETUP = {
    "listops": {"overrides": ["max_length=128"]},
    "pathfinder": {"overrides": []},
}


def generate(task: str, data_dir: str, args) -> str:
    """Generates the task's data under `data_dir` once; returns the task's data folder."""
    folder = os.path.join(data_dir, task)
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    if task == "listops":
        from lra_keras.data import write_listops

        write_listops(
            folder,
            num_train=args.listops_examples,
            num_val=500,
            num_test=500,
            seed=args.seed,
            min_length=10,
            max_length=120,
        )
    else:
        from lra_keras.data import write_pathfinder

        write_pathfinder(
            folder,
            resolution=32,
            difficulty="hard",
            num_images=args.pathfinder_images,
            seed=args.seed,
            workers=2,
        )
    open(done, "w").close()
    return folder


def majority_baseline(task: str, folder: str) -> float:
    import numpy as np

    from lra_keras.data import load

    max_length = 128 if task == "listops" else None
    labels = np.concatenate(
        [y for _, y in load(task, "test", folder, 256, max_length=max_length).as_numpy_iterator()]
    )
    return float(np.bincount(labels).max() / len(labels))


def train_one(task: str, attention: str, folder: str, args) -> dict:
    model_dir = os.path.join(args.out_dir, "accuracy_runs", f"{task}_{attention}")
    command = [
        sys.executable,
        "-m",
        "lra_keras.training.cli",
        f"--task={task}",
        f"--attention={attention}",
        "--preset=tiny",
        f"--data_dir={folder}",
        f"--model_dir={model_dir}",
        f"--num_train_steps={args.steps}",
        f"--eval_every={max(1, args.steps // 3)}",
        f"--seed={args.seed}",
        "--noexport",
        "--verbose=0",
        "--set=num_eval_steps=null",
    ] + [f"--set={o}" for o in TASK_SETUP[task]["overrides"]]
    if os.path.exists(model_dir):
        import shutil

        shutil.rmtree(model_dir)
    start = time.perf_counter()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"task": task, "attention": attention, "status": "timeout"}
    seconds = time.perf_counter() - start
    results_path = os.path.join(model_dir, "results.json")
    if done.returncode != 0 or not os.path.exists(results_path):
        lines = done.stderr.strip().splitlines()
        return {
            "task": task,
            "attention": attention,
            "status": "failed",
            "error": lines[-1] if lines else f"exit {done.returncode}",
            "wall_seconds": seconds,
        }
    with open(results_path) as f:
        results = json.load(f)
    best = results["best"]
    return {
        "task": task,
        "attention": attention,
        "status": "ok",
        "test_accuracy": best["test"]["accuracy"],
        "validation_accuracy": best["validation"]["accuracy"],
        "best_step": best["step"],
        "wall_seconds": seconds,
    }


def table(results: list[dict], baselines: dict, args) -> str:
    tasks = [t for t in args.tasks.split(",") if t in baselines]
    names = sorted({r["attention"] for r in results}, key=lambda n: (n != "full", n))
    by = {(r["task"], r["attention"]): r for r in results}
    lines = [
        "# Mini-LRA accuracy",
        "",
        f"Preset `tiny` (1 layer, width 32, 2 heads, MLP 64), {args.steps} training steps of "
        f"batch 16, seed {args.seed}; test accuracy at the best validation step. ListOps: "
        f"{args.listops_examples} generated training examples of 10-120 tokens (padded to "
        f"128); Pathfinder-32 hard: {args.pathfinder_images} generated images split "
        "80/10/10.",
        "",
        "| attention | " + " | ".join(f"{t} accuracy | {t} wall s" for t in tasks) + " |",
        "|" + "---|" * (1 + 2 * len(tasks)),
        "| majority class | " + " | ".join(f"{baselines[t]:.3f} | -" for t in tasks) + " |",
    ]
    for name in names:
        cells = []
        for t in tasks:
            r = by.get((t, name), {})
            if r.get("status") == "ok":
                cells += [f"{r['test_accuracy']:.3f}", f"{r['wall_seconds']:.0f}"]
            else:
                cells += [r.get("status", "-"), "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], baselines: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(baselines)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = sorted(
            (r for r in results if r["task"] == task and r.get("status") == "ok"),
            key=lambda r: r["attention"],
        )
        ax.barh([r["attention"] for r in rows], [r["test_accuracy"] for r in rows])
        ax.axvline(baselines[task], color="k", linestyle="--", label="majority class")
        ax.set_title(f"{task}: test accuracy")
        ax.set_xlim(0, 1)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="listops,pathfinder")
    parser.add_argument("--attentions", default="all")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--listops_examples", type=int, default=4000)
    parser.add_argument("--pathfinder_images", type=int, default=2000)
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--out_dir", default="results")
    parser.add_argument("--data_dir", default=None, help="default: <out_dir>/accuracy_data")
    args = parser.parse_args(argv)
    from lra_keras.layers import ATTENTIONS
    from lra_keras.zoo import RECURRENT_ATTENTIONS

    known = sorted(ATTENTIONS) + sorted(RECURRENT_ATTENTIONS)
    names = known if args.attentions == "all" else args.attentions.split(",")
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown attention(s) {unknown}; known: {known}")
    tasks = args.tasks.split(",")
    bad = sorted(set(tasks) - set(TASK_SETUP))
    if bad:
        parser.error(f"unknown task(s) {bad}; this benchmark runs {sorted(TASK_SETUP)}")
    os.makedirs(args.out_dir, exist_ok=True)
    data_dir = args.data_dir or os.path.join(args.out_dir, "accuracy_data")
    results, baselines = [], {}
    for task in tasks:
        folder = generate(task, data_dir, args)
        baselines[task] = majority_baseline(task, folder)
        for name in names:
            result = train_one(task, name, folder, args)
            results.append(result)
            print(json.dumps(result), flush=True)
    report = {"config": vars(args), "majority_baseline": baselines, "results": results}
    with open(os.path.join(args.out_dir, "accuracy.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out_dir, "accuracy.md"), "w") as f:
        f.write(table(results, baselines, args))
    plot(results, baselines, os.path.join(args.out_dir, "accuracy.png"))
    return report


if __name__ == "__main__":
    main()
