"""LRA's protocol in one command: the `lra` preset at the paper's batch size and steps.

    python -m benchmarks.lra_protocol [--attentions full,local,linformer,performer]
        [--tasks listops,pathfinder] [--budget_s 3600] [--out_dir results/lra_protocol]
    python -m benchmarks.lra_protocol --smoke     # end to end on a CPU in seconds

Trains each (task, attention) row with `lra-train --preset lra` (the paper's model, batch size,
steps, schedule and evaluation cadence, `lra_keras.zoo.presets`) on generated data at the
paper's sizes: ListOps with 96,000 / 2,000 / 2,000 expressions of 500-2,000 tokens, and
Pathfinder-32 (`hard`, as LRA used) with 200,000 images split 80/10/10. Each row reports the
test accuracy at the best validation step, the training steps/s and peak memory of the last
window, the wall time, the device and the backend, beside LRA Table 1's accuracy for that model
and task (Tay et al. 2021; the state-space and Mega rows from their own papers).

It runs on whatever backend (`KERAS_BACKEND`: tensorflow or jax) and device are there; on JAX
it needs no TensorFlow. Each row is a child `lra-train` process, so one that runs out of memory
is a result and the run goes on. `--budget_s` bounds the whole command: a row still training
when the budget runs out is stopped with SIGTERM, which makes `lra-train` checkpoint and exit;
it is recorded as `incomplete`, and the next invocation resumes it from that checkpoint. Rows
already done (for the same backend and settings) are skipped, so the command can be rerun until
every row is done. After each row, `<out_dir>/lra_protocol.json` and `lra_protocol.md` are
rewritten whole (a kill never leaves half a file).

`--smoke` runs the same path at toy scale (the `tiny` preset, 2 steps, 64 examples) so that
`make test` checks the command end to end on both backends and without TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

from lra_keras.onednn import child_environment

# LRA Table 1 (Tay et al., ICLR 2021): test accuracy (%) on ListOps and Pathfinder-32.
LRA_TABLE1 = {
    "full": {"listops": 36.37, "pathfinder": 71.40},
    "local": {"listops": 15.82, "pathfinder": 66.63},
    "sparse": {"listops": 17.07, "pathfinder": 71.71},
    "longformer": {"listops": 35.63, "pathfinder": 69.71},
    "linformer": {"listops": 35.70, "pathfinder": 76.34},
    "reformer": {"listops": 37.27, "pathfinder": 68.50},
    "sinkhorn": {"listops": 33.67, "pathfinder": 67.45},
    "synthesizer": {"listops": 36.99, "pathfinder": 69.45},
    "bigbird": {"listops": 36.05, "pathfinder": 74.87},
    "linear": {"listops": 16.13, "pathfinder": 75.30},
    "performer": {"listops": 18.01, "pathfinder": 77.05},
}
# The models after the survey, from their papers' LRA tables: S4 (Gu et al., ICLR 2022, the
# s4d row's closest published figure), S5 (Smith et al., ICLR 2023, Table 1), LRU (Orvieto et
# al., ICML 2023, Table 1), Mega (Ma et al., ICLR 2023, Table 2).
LATER_PAPERS = {
    "s4d": {"listops": 59.60, "pathfinder": 94.20, "source": "S4"},
    "s5": {"listops": 62.15, "pathfinder": 95.33, "source": "S5"},
    "lru": {"listops": 60.2, "pathfinder": 95.1, "source": "LRU"},
    "mega": {"listops": 63.14, "pathfinder": 96.01, "source": "Mega"},
}

PAPER_DATA = {
    "listops": {"num_train": 96000, "num_val": 2000, "num_test": 2000, "lengths": (500, 2000)},
    "pathfinder": {"num_images": 200000},
}
SMOKE_DATA = {
    "listops": {"num_train": 64, "num_val": 16, "num_test": 16, "lengths": (5, 60)},
    "pathfinder": {"num_images": 64},
}
TASKS = ("listops", "pathfinder")
# `full` and three efficient variants that did well in LRA Table 1 and train on a CPU.
DEFAULT_ATTENTIONS = "full,local,linformer,performer"
# After SIGTERM, `lra-train` finishes its step and checkpoints; past this it is killed.
STOP_GRACE_S = 300


def paper_accuracy(attention: str, task: str) -> tuple[float | None, str]:
    """The published test accuracy (%) of `attention` on `task` and where it comes from."""
    if attention in LRA_TABLE1:
        return LRA_TABLE1[attention][task], "LRA Table 1"
    if attention in LATER_PAPERS:
        row = LATER_PAPERS[attention]
        return row[task], row["source"]
    return None, ""


def backend_name() -> str:
    import keras

    return keras.backend.backend()


def _cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {name} ({os.cpu_count()} cores)"


def device_name(backend: str) -> str:
    """The accelerator the rows train on, named as its backend reports it, else the CPU."""
    if backend == "jax":
        import jax

        devices = jax.devices()
        if devices[0].platform != "cpu":
            return f"{devices[0].device_kind} x{len(devices)} ({devices[0].platform})"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"{details.get('device_name', 'GPU')} x{len(gpus)} (gpu)"
    return _cpu_name()


def _write_whole(path: str, text: str) -> None:
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)


def generate(task: str, data_root: str, args) -> str:
    """Writes the task's data once (a folder per size and seed); returns the folder."""
    from lra_keras.data.listops_generator import write_listops
    from lra_keras.data.pathfinder_generator import write_pathfinder

    sizes = (SMOKE_DATA if args.smoke else PAPER_DATA)[task]
    if task == "listops":
        low, high = sizes["lengths"]
        folder = os.path.join(
            data_root, f"listops_{sizes['num_train']}_{low}_{high}_seed{args.seed}"
        )
    else:
        folder = os.path.join(
            data_root,
            f"pathfinder32_{args.pathfinder_difficulty}_{sizes['num_images']}_seed{args.seed}",
        )
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    print(f"Generating {task} data in {folder} ...", flush=True)
    if task == "listops":
        write_listops(
            folder,
            num_train=sizes["num_train"],
            num_val=sizes["num_val"],
            num_test=sizes["num_test"],
            seed=args.seed,
            min_length=low,
            max_length=high,
            overwrite=True,  # what an interrupted generation left (no .complete) is replaced
        )
    else:
        write_pathfinder(
            folder,
            resolution=32,
            difficulty=args.pathfinder_difficulty,
            num_images=sizes["num_images"],
            seed=args.seed,
            workers=max(1, os.cpu_count() or 1),
            overwrite=True,
        )
    open(done, "w").close()
    return folder


def row_key(task: str, attention: str, backend: str, args) -> str:
    scale = "smoke" if args.smoke else "paper"
    return f"{task}/{attention}/{backend}/{scale}/seed{args.seed}"


def train_command(task: str, attention: str, data_dir: str, model_dir: str, args) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "lra_keras.training.cli",
        f"--task={task}",
        f"--attention={attention}",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        f"--seed={args.seed}",
        "--noexport",
        "--verbose=0",
    ]
    if args.smoke:
        command += ["--preset=tiny", "--num_train_steps=2", "--batch_size=8", "--eval_every=2"]
    else:
        command.append("--preset=lra")
    if task == "pathfinder":
        command.append(f"--data_option=difficulty={args.pathfinder_difficulty}")
    return command


def _run_until(command: list[str], deadline: float) -> tuple[int, str, bool]:
    """Runs `command` until it exits or `deadline`; then SIGTERM (it checkpoints and exits).

    Returns (exit status, the end of its stderr, whether the budget stopped it).
    """
    env = child_environment(TF_CPP_MIN_LOG_LEVEL="2")
    with open(os.devnull, "w") as devnull:
        child = subprocess.Popen(
            command, stdout=devnull, stderr=subprocess.PIPE, text=True, env=env
        )
        stopped = False
        try:
            _, stderr = child.communicate(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            stopped = True
            child.send_signal(signal.SIGTERM)
            try:
                _, stderr = child.communicate(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                _, stderr = child.communicate()
    return child.returncode, (stderr or "")[-3000:], stopped


def run_row(task: str, attention: str, data_dir: str, args, backend: str, device: str, deadline):
    """Trains (or resumes) one row; returns its record."""
    model_dir = os.path.join(
        args.out_dir, "runs", backend, f"{task}_{attention}" + ("_smoke" if args.smoke else "")
    )
    paper, source = paper_accuracy(attention, task)
    record = {
        "key": row_key(task, attention, backend, args),
        "task": task,
        "attention": attention,
        "backend": backend,
        "device": device,
        "preset": "tiny" if args.smoke else "lra",
        "paper_test_accuracy": paper,
        "paper_source": source,
        "model_dir": model_dir,
    }
    start = time.time()
    status, stderr, stopped = _run_until(
        train_command(task, attention, data_dir, model_dir, args), deadline
    )
    record["wall_s_this_call"] = round(time.time() - start, 1)
    results_path = os.path.join(model_dir, "results.json")
    if status == 0 and not stopped and os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
        best, train = results["best"], results.get("train") or {}
        record.update(
            status="ok",
            test_accuracy=best.get("test", {}).get("accuracy"),
            validation_accuracy=best.get("validation", {}).get("accuracy"),
            best_step=best.get("step"),
            steps=results.get("step"),
            steps_per_sec=train.get("steps_per_sec"),
            peak_memory=_memory(train),
            wall_time_s=results.get("wall_time_s"),
        )
        return record
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if stopped:
        record.update(status="incomplete", error="budget reached: rerun to resume")
    elif status in (-9, 137) or "ResourceExhausted" in stderr or "out of memory" in stderr:
        record.update(status="out of memory", error=lines[-1] if lines else f"exit {status}")
    else:
        record.update(status="failed", error=lines[-1] if lines else f"exit {status}")
    return record


def _memory(train: dict) -> dict | None:
    figures = {k: v for k, v in train.items() if "memory" in k or k.endswith("_source")}
    return figures or None


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| task | attention | test acc. (%) | LRA paper (%) | best step / steps | steps/s | "
        "wall (s) | device | backend | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = row.get("paper_test_accuracy")
        paper_text = "" if paper is None else f"{paper:.2f} ({row['paper_source']})"
        steps = row.get("steps")
        best = "" if steps is None else f"{row.get('best_step')} / {steps}"
        rate = row.get("steps_per_sec")
        wall = row.get("wall_time_s")
        lines.append(
            f"| {row['task']} | {row['attention']} | {_percent(row.get('test_accuracy'))} | "
            f"{paper_text} | {best} | {'' if rate is None else f'{rate:.3g}'} | "
            f"{'' if wall is None else f'{wall:.0f}'} | {row['device']} | {row['backend']} | "
            f"{row['status']}{': ' + row['error'] if row.get('error') else ''} |"
        )
    return "\n".join(lines) + "\n"


def _load_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f).get("rows", [])


def _save(rows: list[dict], out_dir: str) -> None:
    _write_whole(
        os.path.join(out_dir, "lra_protocol.json"),
        json.dumps({"rows": rows}, indent=2, allow_nan=False),
    )
    _write_whole(os.path.join(out_dir, "lra_protocol.md"), table(rows))


def _names(text: str, what: str, valid=None) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"lra_protocol: --{what} is empty.")
    bad = [n for n in names if valid is not None and n not in valid]
    if bad:
        raise SystemExit(f"lra_protocol: --{what} has unknown {bad}; valid: {sorted(valid)}.")
    return names


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attentions", default=None, help="default: full,local,linformer,performer (smoke: full)"
    )
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--budget_s", type=float, default=3600.0)
    parser.add_argument("--out_dir", default=None, help="default: results/lra_protocol")
    parser.add_argument("--data_dir", default=None, help="default: <out_dir>/data")
    parser.add_argument("--pathfinder_difficulty", default="hard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="toy scale, seconds on a CPU")
    args = parser.parse_args(argv)
    tasks = _names(args.tasks, "tasks", TASKS)
    if args.attentions is None:
        args.attentions = "full" if args.smoke else DEFAULT_ATTENTIONS
    attentions = _names(args.attentions, "attentions")
    if args.budget_s <= 0:
        raise SystemExit(f"lra_protocol: --budget_s must be > 0, got {args.budget_s}.")
    if args.out_dir is None:
        args.out_dir = os.path.join("results", "lra_protocol" + ("_smoke" if args.smoke else ""))
    data_root = args.data_dir or os.path.join(args.out_dir, "data")
    os.makedirs(args.out_dir, exist_ok=True)

    from lra_keras.layers import ATTENTIONS

    unknown = [a for a in attentions if a not in ATTENTIONS]
    if unknown:
        raise SystemExit(
            f"lra_protocol: unknown attentions {unknown}; valid: {sorted(ATTENTIONS)}."
        )
    backend = backend_name()
    device = device_name(backend)
    deadline = time.time() + args.budget_s
    path = os.path.join(args.out_dir, "lra_protocol.json")
    rows = _load_rows(path)
    done = {row["key"] for row in rows if row.get("status") == "ok"}
    print(f"LRA protocol on {backend}, {device}; budget {args.budget_s:.0f} s", flush=True)
    for task in tasks:
        data_dir = None
        for attention in attentions:
            key = row_key(task, attention, backend, args)
            if key in done:
                print(f"{key}: done before, skipped", flush=True)
                continue
            if time.time() >= deadline:
                print(f"{key}: budget spent, not started", flush=True)
                continue
            data_dir = data_dir or generate(task, data_root, args)
            record = run_row(task, attention, data_dir, args, backend, device, deadline)
            rows = [row for row in rows if row["key"] != key] + [record]
            _save(rows, args.out_dir)
            print(table([record]).splitlines()[-1], flush=True)
    _save(rows, args.out_dir)
    print(f"Wrote {path} and lra_protocol.md", flush=True)
    return rows


if __name__ == "__main__":
    main()
