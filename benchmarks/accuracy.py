"""Mini-LRA accuracy: every attention trained at one small budget on generated data.

Generates (once, seeded) short-sequence ListOps (10-120 tokens, padded to 128) and
Pathfinder-32 (hard), then trains the zoo's `tiny` model (1 layer, width 32, 2 heads) with each
attention through `lra-train` (the project's `Trainer`; each (task, attention) in its own
subprocess, so one failure does not stop the run), and reports test accuracy at the best
validation step, the test split's majority-class baseline and the wall time.

The default budget is 400 steps of batch 16 on ListOps and 150 on Pathfinder (a Pathfinder
step, 1024 tokens, costs ~20x a ListOps step of 128); `--steps N` sets one budget for every task.
All 21 attentions on both tasks should take ~30 min on 2 idle CPU cores (extrapolated from
measured runs: ~9 s of start-up and evaluation per run, plus per-step times measured at 30
steps, the slowest being compressive and transformer_xl). At this budget Pathfinder-32 stays
near chance for every variant, so that column shows that each variant trains on images, not
which one learns them.

    python -m benchmarks.accuracy [--tasks listops,pathfinder] [--attentions all] [--steps N]

Writes `results/accuracy.json`, `results/accuracy.md` and `results/accuracy.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from lra_keras.onednn import child_environment

LISTOPS_LENGTH = 128
# Per task: the default training budget.
TASK_SETUP = {
    "listops": {"steps": 400},
    "pathfinder": {"steps": 150},
}


def task_overrides(task: str, attention: str) -> dict:
    """Zoo overrides that fit the generated data of `task`."""
    if task != "listops":
        return {}
    from benchmarks.efficiency import text_overrides

    # As in the efficiency benchmark, grid variants (axial) see the sequence as a near-square
    # grid (8 x 16) with mean pooling.
    return text_overrides(attention, LISTOPS_LENGTH)


def task_steps(task: str, args) -> int:
    """The training budget of `task`: `--steps` when given, else the task's default."""
    return args.steps or TASK_SETUP[task]["steps"]


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
            overwrite=True,  # a folder an interrupted run left (no .complete) is replaced
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
            overwrite=True,
        )
    open(done, "w").close()
    return folder


def majority_baseline(task: str, folder: str) -> float:
    import numpy as np

    from lra_keras.data import load

    max_length = LISTOPS_LENGTH if task == "listops" else None
    labels = np.concatenate(
        [y for _, y in load(task, "test", folder, 256, max_length=max_length).as_numpy_iterator()]
    )
    return float(np.bincount(labels).max() / len(labels))


def train_one(task: str, attention: str, folder: str, args) -> dict:
    model_dir = os.path.join(args.out_dir, "accuracy_runs", f"{task}_{attention}")
    steps = task_steps(task, args)
    command = [
        sys.executable,
        "-m",
        "lra_keras.training.cli",
        f"--task={task}",
        f"--attention={attention}",
        "--preset=tiny",
        f"--data_dir={folder}",
        f"--model_dir={model_dir}",
        f"--num_train_steps={steps}",
        f"--eval_every={max(1, steps // 3)}",
        f"--seed={args.seed}",
        "--noexport",
        "--verbose=0",
        "--set=num_eval_steps=null",
    ] + [f"--set={k}={json.dumps(v)}" for k, v in task_overrides(task, attention).items()]
    if os.path.exists(model_dir):
        import shutil

        shutil.rmtree(model_dir)
    start = time.perf_counter()
    env = child_environment(TF_CPP_MIN_LOG_LEVEL="2")
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {
            "task": task,
            "attention": attention,
            "status": "timeout",
            "error": f"over {args.timeout} s",
            "wall_seconds": time.perf_counter() - start,
        }
    seconds = time.perf_counter() - start
    results_path = os.path.join(model_dir, "results.json")
    if done.returncode != 0 or not os.path.exists(results_path):
        text = (done.stderr or "")[-2000:]
        lines = text.strip().splitlines()
        # Killed by the kernel (the out-of-memory killer) or TensorFlow's own OOM error.
        out_of_memory = done.returncode in (-9, 137) or "ResourceExhausted" in text
        return {
            "task": task,
            "attention": attention,
            "status": "out of memory" if out_of_memory else "failed",
            "error": lines[-1] if lines else f"exit {done.returncode}",
            "steps": steps,
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
        "steps": steps,
        "wall_seconds": seconds,
    }


def table(results: list[dict], baselines: dict, args) -> str:
    tasks = [t for t in args.tasks.split(",") if t in baselines]
    names = sorted({r["attention"] for r in results}, key=lambda n: (n != "full", n))
    by = {(r["task"], r["attention"]): r for r in results}
    lines = [
        "# Mini-LRA accuracy",
        "",
        "Preset `tiny` (1 layer, width 32, 2 heads, MLP 64), "
        + ", ".join(f"{task_steps(t, args)} training steps on {t}" for t in tasks)
        + f" (batch 16), seed {args.seed}, trained by `lra-train`; test accuracy at the best "
        "validation step; wall time of the whole run (start-up, training, evaluation). ListOps: "
        f"{args.listops_examples} generated training examples of 10-120 tokens (padded to "
        f"{LISTOPS_LENGTH}; axial on an 8 x 16 grid); Pathfinder-32 hard: "
        f"{args.pathfinder_images} generated images split 80/10/10.",
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
    failures = [r for r in results if r.get("status") != "ok"]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            lines.append(f"- {r['task']} / {r['attention']}: {r['status']}: {r.get('error', '')}")
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
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps for every task (default: 400 on listops, 150 on pathfinder)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--listops_examples", type=int, default=4000)
    parser.add_argument("--pathfinder_images", type=int, default=2000)
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--out_dir", default="results")
    parser.add_argument("--data_dir", default=None, help="default: <out_dir>/accuracy_data")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
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
