"""Mini-LRA accuracy: attentions trained at one small budget on generated data, on 2 CPU cores.

The default run is the `small` preset (2 layers, width 64, 2 heads, MLP 128) on generated
ListOps capped at 256 tokens (expressions of 50-255 tokens instead of LRA's 500-2000), with the
nine attentions of LRA Table 2, each trained through `lra-train` (the project's `Trainer`; each
run in its own subprocess, so one failure does not stop the run) for 1200 steps of batch 32 with
a short warmup (100 steps) and a cosine decay from a peak learning rate of 2e-3, and no weight
decay. It reports test accuracy at the best validation step beside the test split's
majority class and LRA Table 1's ListOps column.

Why these defaults: at LRA's lengths the `small` model runs 0.25-0.4 steps/s on 2 CPU cores and
after 600 steps, inside LRA's 1000-step warmup, still predicted the majority class. At 256
tokens `full` ran ~4 steps/s on 2 lightly loaded cores and its validation accuracy left the
majority class (0.17) after ~450 steps of this schedule, reaching 0.33 at step 600, so 1200
steps should take ~5-10 minutes per model on 2 idle cores (on the shared machine, at a load
average of 8-16, the nine runs took 8-20 minutes each, two at a time). BigBird's LRA block of
64 needs 705 tokens before its sparse path starts (it would run dense at 256), so the benchmark
gives it blocks of 16.

Pathfinder-32 (`--tasks pathfinder`) trains the `tiny` preset for 150 steps: at that budget it
stays near chance for every variant, so it shows that each variant trains on images, not which
one learns them. Longer runs stayed at chance too (`full`, `tiny`, 10000 generated images, batch
32): 1500 steps on the hard set (LRA's) and 2000 steps on the easy one (`--pathfinder_difficulty
easy`, contour length 6), validation accuracy 0.47-0.51 and training loss 0.69 throughout. So
did a model with no attention (`benchmarks.pathfinder_control`: eleven residual dilated 3x3
convolutions seeing the whole image) for 2500 steps of batch 32 on 100000 easy images: the
budget, not the attention, is what keeps Pathfinder at chance on 2 CPU cores (LRA trains 62400
steps of batch 512 on 160000 images).

    python -m benchmarks.accuracy [--tasks listops,pathfinder] [--attentions table2|all|a,b]
        [--num_train_steps N] [--max_length N] [--batch_size N] [--learning_rate X]

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

# The nine attentions of LRA Table 2 (the efficiency table), by registry name.
TABLE2 = (
    "full",
    "local",
    "linformer",
    "reformer",
    "sinkhorn",
    "synthesizer",
    "bigbird",
    "linear",
    "performer",
)
# LRA paper (Tay et al. 2021) Table 1, ListOps column, by registry name.
PAPER_LISTOPS = {
    "full": 36.37,
    "local": 15.82,
    "sparse": 17.07,
    "longformer": 35.63,
    "linformer": 35.70,
    "reformer": 37.27,
    "sinkhorn": 33.67,
    "synthesizer": 36.99,
    "bigbird": 36.05,
    "linear": 16.13,
    "performer": 18.01,
}
# Per task: the preset and the defaults of the training budget and schedule. A command-line
# flag given explicitly replaces the value for every task.
TASK_SETUP = {
    "listops": {
        "preset": "small",
        "max_length": 256,
        "min_length": 50,
        "num_train_steps": 1200,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "warmup_steps": 100,
        "schedule": "cosine",
        "weight_decay": 0.0,
        "eval_every": 200,
    },
    "pathfinder": {
        "preset": "tiny",
        "max_length": None,
        "num_train_steps": 150,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "warmup_steps": 20,
        "schedule": "cosine",
        "weight_decay": 0.0,
        "eval_every": 50,
    },
}
SETTINGS = (
    "preset",
    "num_train_steps",
    "max_length",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "eval_every",
)
# Training recipes, compared at equal total steps: `rotary` swaps the preset's additive
# positions for rotary ones; `+pretrain` spends `--pretrain_steps` of the budget on masked
# self-pretraining on the training inputs (`lra-train --pretrain masked`), the rest on
# fine-tuning.
RECIPES = ("plain", "rotary", "pretrain", "rotary+pretrain")


def recipe_spec(recipe: str, args) -> dict:
    """`{"positions": str | None, "pretrain_steps": int}` of a recipe name."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    positions = "rotary" if "rotary" in recipe else getattr(args, "positions", None)
    pretrain = getattr(args, "pretrain_steps", 0) or 0
    if "pretrain" in recipe and not pretrain:
        raise ValueError(f"recipe {recipe!r} needs --pretrain_steps > 0")
    return {"positions": positions, "pretrain_steps": pretrain if "pretrain" in recipe else 0}


# Attention arguments the short ListOps needs beside the preset's (see the docstring).
LISTOPS_ATTENTION = {"bigbird": {"block_size": 16, "num_random_blocks": 3}}


def setting(task: str, key: str, args):
    """`key` for `task`: the flag when given, else the task's default."""
    value = getattr(args, key, None)
    return TASK_SETUP[task][key] if value is None else value


def task_steps(task: str, args) -> int:
    """The training budget of `task`."""
    return setting(task, "num_train_steps", args)


def task_overrides(task: str, attention: str, args=None) -> dict:
    """Zoo overrides that fit the generated data of `task` and the run's schedule."""
    args = args or argparse.Namespace()
    overrides = {
        key: setting(task, key, args)
        for key in ("learning_rate", "warmup_steps", "schedule", "weight_decay")
    }
    overrides["num_eval_steps"] = None
    if task != "listops":
        return overrides
    from benchmarks.efficiency import text_overrides

    # As in the efficiency benchmark, grid variants (axial) see the sequence as a near-square
    # grid (16 x 16 at 256) with mean pooling.
    overrides.update(text_overrides(attention, setting(task, "max_length", args)))
    if attention in LISTOPS_ATTENTION:
        overrides.setdefault("attention_kwargs", {}).update(LISTOPS_ATTENTION[attention])
    return overrides


def generate(task: str, data_dir: str, args) -> str:
    """Generates the task's data under `data_dir` once; returns the task's data folder."""
    folder = os.path.join(data_dir, task)
    if task == "pathfinder":
        # One folder per difficulty and size, so another setting never reuses other data.
        difficulty = getattr(args, "pathfinder_difficulty", "hard")
        folder = os.path.join(data_dir, f"pathfinder_{difficulty}_{args.pathfinder_images}")
    if task == "listops":
        # One folder per length range, so a different cap never reuses other data.
        low, high = TASK_SETUP["listops"]["min_length"], setting(task, "max_length", args)
        low = min(low, high // 2)
        folder = os.path.join(data_dir, f"listops_{low}_{high}")
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    if task == "listops":
        from lra_keras.data import write_listops

        # Lengths strictly below the cap: no expression is truncated.
        write_listops(
            folder,
            num_train=args.listops_examples,
            num_val=args.listops_eval_examples,
            num_test=args.listops_eval_examples,
            seed=args.seed,
            min_length=low,
            max_length=high,
            overwrite=True,  # a folder an interrupted run left (no .complete) is replaced
        )
    else:
        from lra_keras.data import write_pathfinder

        write_pathfinder(
            folder,
            resolution=32,
            difficulty=getattr(args, "pathfinder_difficulty", "hard"),
            num_images=args.pathfinder_images,
            seed=args.seed,
            workers=2,
            overwrite=True,
        )
    open(done, "w").close()
    return folder


def majority_baseline(task: str, folder: str, args=None) -> float:
    import numpy as np

    from lra_keras.data import load

    max_length = setting(task, "max_length", args or argparse.Namespace())
    if task != "listops":
        max_length = None  # the image tasks' length is the image's
    options = {}
    if task == "pathfinder":
        options["difficulty"] = getattr(args, "pathfinder_difficulty", "hard")
    test = load(task, "test", folder, 256, max_length=max_length, **options)
    labels = np.concatenate([y for _, y in test.as_numpy_iterator()])
    return float(np.bincount(labels).max() / len(labels))


def train_one(task: str, attention: str, folder: str, args, recipe: str = "plain") -> dict:
    spec = recipe_spec(recipe, args)
    suffix = "" if recipe == "plain" else "_" + recipe.replace("+", "_")
    model_dir = os.path.join(args.out_dir, "accuracy_runs", f"{task}_{attention}{suffix}")
    steps = task_steps(task, args)
    # Equal total steps: pretraining takes its share of the budget.
    finetune_steps = steps - spec["pretrain_steps"]
    if finetune_steps < 1:
        raise ValueError(
            f"--pretrain_steps ({spec['pretrain_steps']}) must be below the budget ({steps})"
        )
    extra = []
    if spec["positions"]:
        extra.append(f"--set=positions={json.dumps(spec['positions'])}")
    if spec["pretrain_steps"]:
        extra += ["--pretrain=masked", f"--pretrain_steps={spec['pretrain_steps']}"]
    command = [
        sys.executable,
        "-m",
        "lra_keras.training.cli",
        f"--task={task}",
        f"--attention={attention}",
        f"--preset={setting(task, 'preset', args)}",
        f"--data_dir={folder}",
        f"--model_dir={model_dir}",
        f"--num_train_steps={finetune_steps}",
        f"--batch_size={setting(task, 'batch_size', args)}",
        f"--eval_every={min(finetune_steps, setting(task, 'eval_every', args))}",
        f"--seed={args.seed}",
        "--noexport",
        "--verbose=0",
    ] + [f"--set={k}={json.dumps(v)}" for k, v in task_overrides(task, attention, args).items()]
    command += extra
    if task == "pathfinder":
        difficulty = getattr(args, "pathfinder_difficulty", "hard")
        command.append(f"--data_option=difficulty={difficulty}")
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
            "recipe": recipe,
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
            "recipe": recipe,
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
        "recipe": recipe,
        "status": "ok",
        "test_accuracy": best["test"]["accuracy"],
        "validation_accuracy": best["validation"]["accuracy"],
        "best_step": best["step"],
        "steps": steps,
        "wall_seconds": seconds,
    }


def describe(task: str, args) -> str:
    """One line of the run's setting for `task`, for the table's header."""
    preset = setting(task, "preset", args)
    text = (
        f"{task}: preset `{preset}`, {task_steps(task, args)} steps of batch "
        f"{setting(task, 'batch_size', args)}, peak learning rate "
        f"{setting(task, 'learning_rate', args):g} after {setting(task, 'warmup_steps', args)} "
        f"warmup steps, {TASK_SETUP[task]['schedule']} decay, validation every "
        f"{setting(task, 'eval_every', args)} steps"
    )
    if task == "listops":
        high = setting(task, "max_length", args)
        low = min(TASK_SETUP["listops"]["min_length"], high // 2)
        text += (
            f"; {args.listops_examples} generated training examples of {low}-{high - 1} tokens "
            f"(padded to {high}; axial on a near-square grid; bigbird blocks of 16)"
        )
    else:
        difficulty = getattr(args, "pathfinder_difficulty", "hard")
        text += f"; {args.pathfinder_images} generated Pathfinder-32 {difficulty} images, 80/10/10"
    return text


def table(results: list[dict], baselines: dict, args) -> str:
    tasks = [t for t in args.tasks.split(",") if t in baselines]
    rows = sorted(
        {(r["attention"], r.get("recipe", "plain")) for r in results},
        key=lambda row: (row[0] != "full", row[0], RECIPES.index(row[1])),
    )
    recipes = {recipe for _, recipe in rows}
    by = {(r["task"], r["attention"], r.get("recipe", "plain")): r for r in results}
    paper = "listops" in tasks
    lines = [
        "# Mini-LRA accuracy",
        "",
        f"Seed {args.seed}, trained by `lra-train`; test accuracy at the best validation step "
        "(and that step); wall time of the whole run (start-up, training, evaluation).",
        "",
        *[f"- {describe(t, args)}." for t in tasks],
        "",
        "| attention | "
        + " | ".join(f"{t} accuracy | {t} best step | {t} wall s" for t in tasks)
        + (" | LRA paper ListOps |" if paper else " |"),
        "|" + "---|" * (1 + 3 * len(tasks) + paper),
        "| majority class | "
        + " | ".join(f"{baselines[t]:.3f} | - | -" for t in tasks)
        + (" | - |" if paper else " |"),
    ]
    if recipes != {"plain"}:
        pretrain = getattr(args, "pretrain_steps", 0)
        lines[4:4] = [
            f"Recipes at equal total steps: `plain` (the preset's positions), `rotary` (rotary "
            f"positions), `+pretrain` ({pretrain} of the steps masked self-pretraining on the "
            "training inputs, the rest fine-tuning); best step counts fine-tuning steps.",
            "",
        ]
    for name, recipe in rows:
        cells = []
        for t in tasks:
            r = by.get((t, name, recipe), {})
            if r.get("status") == "ok":
                cells += [f"{r['test_accuracy']:.3f}", str(r["best_step"])]
                cells += [f"{r['wall_seconds']:.0f}"]
            else:
                cells += [r.get("status", "-"), "-", "-"]
        if paper:
            score = PAPER_LISTOPS.get(name)
            cells.append("-" if score is None else f"{score / 100:.3f}")
        label = name if recipe == "plain" else f"{name} ({recipe})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    failures = [r for r in results if r.get("status") != "ok"]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            recipe = r.get("recipe", "plain")
            label = r["attention"] if recipe == "plain" else f"{r['attention']} ({recipe})"
            lines.append(f"- {r['task']} / {label}: {r['status']}: {r.get('error', '')}")
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


def write_report(results: list[dict], baselines: dict, args, plot_too: bool) -> dict:
    report = {"config": vars(args), "majority_baseline": baselines, "results": results}
    with open(os.path.join(args.out_dir, "accuracy.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out_dir, "accuracy.md"), "w") as f:
        f.write(table(results, baselines, args))
    if plot_too:
        plot(results, baselines, os.path.join(args.out_dir, "accuracy.png"))
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="listops")
    parser.add_argument(
        "--attentions",
        default="table2",
        help="comma-separated names, `table2` (LRA Table 2's nine) or `all`",
    )
    parser.add_argument(
        "--num_train_steps",
        "--steps",
        dest="num_train_steps",
        type=int,
        default=None,
        help="training steps for every task (default: 1200 on listops, 150 on pathfinder)",
    )
    parser.add_argument(
        "--max_length", type=int, default=None, help="ListOps length cap (default 256)"
    )
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--learning_rate", type=float, default=None, help="peak learning rate")
    parser.add_argument("--warmup_steps", type=int, default=None)
    parser.add_argument("--eval_every", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--positions",
        choices=("learned", "sinusoidal", "rotary"),
        default=None,
        help="positions of the plain recipe (default: the preset's)",
    )
    parser.add_argument(
        "--pretrain_steps",
        type=int,
        default=0,
        help="steps of masked self-pretraining in the +pretrain recipes (out of the budget)",
    )
    parser.add_argument(
        "--recipes",
        default="plain",
        help=f"comma-separated recipes at equal total steps: {', '.join(RECIPES)}",
    )
    parser.add_argument("--listops_examples", type=int, default=20000)
    parser.add_argument(
        "--listops_eval_examples", type=int, default=1000, help="per validation and test split"
    )
    parser.add_argument("--pathfinder_images", type=int, default=2000)
    parser.add_argument(
        "--pathfinder_difficulty",
        choices=["easy", "intermediate", "hard"],
        default="hard",
        help="contour length 6, 9 or 14 (LRA's Pathfinder is hard)",
    )
    parser.add_argument(
        "--preset",
        default=None,
        help="model preset for every task (default: small on listops, tiny on pathfinder)",
    )
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--out_dir", default="results")
    parser.add_argument("--data_dir", default=None, help="default: <out_dir>/accuracy_data")
    args = parser.parse_args(argv)
    for key in ("num_train_steps", "batch_size", "warmup_steps", "eval_every"):
        value = getattr(args, key)
        if value is not None and value < (0 if key == "warmup_steps" else 1):
            parser.error(f"--{key} must be >= {0 if key == 'warmup_steps' else 1}, got {value}")
    if args.max_length is not None and args.max_length < 8:
        parser.error(f"--max_length must be >= 8, got {args.max_length}")
    if args.learning_rate is not None and args.learning_rate <= 0:
        parser.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    recipes = [r for r in args.recipes.split(",") if r]
    if args.pretrain_steps < 0:
        parser.error(f"--pretrain_steps must be >= 0, got {args.pretrain_steps}")
    for recipe in recipes:
        try:
            spec = recipe_spec(recipe, args)
        except ValueError as error:
            parser.error(str(error))
        for task in args.tasks.split(","):
            if task in TASK_SETUP and spec["pretrain_steps"] >= task_steps(task, args):
                parser.error(
                    f"--pretrain_steps ({spec['pretrain_steps']}) must be below {task}'s "
                    f"budget of {task_steps(task, args)} steps (the totals are equal)"
                )
    from lra_keras.layers import ATTENTIONS
    from lra_keras.zoo import RECURRENT_ATTENTIONS

    known = sorted(ATTENTIONS) + sorted(RECURRENT_ATTENTIONS)
    groups = {"all": known, "table2": list(TABLE2)}
    names = groups.get(args.attentions) or args.attentions.split(",")
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
        baselines[task] = majority_baseline(task, folder, args)
        for name in names:
            for recipe in recipes:
                result = train_one(task, name, folder, args, recipe)
                results.append(result)
                print(json.dumps(result), flush=True)
            # Written after every run, so a long run's finished rows can be read while it goes.
            write_report(results, baselines, args, plot_too=False)
    return write_report(results, baselines, args, plot_too=True)


if __name__ == "__main__":
    main()
