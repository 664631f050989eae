"""The benchmark harnesses on tiny shapes (the benchmarks themselves are not tests)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import pytest

from benchmarks import accuracy, chunked_memory, efficiency, relative_attention, variants_l4096


def fake_args(**kwargs):
    args = dict(batch_size=1, steps=3, warmup=1, jit_compile=False, profile=False, timeout=5)
    args.update(out_dir="unused", attention=None, length=None)
    args.update(kwargs)
    return argparse.Namespace(**args)


def row(name, length, sps, mib, status="ok", source="allocator"):
    return {
        "attention": name,
        "length": length,
        "status": status,
        "steps_per_second": sps,
        "peak_mib": mib,
        "memory_source": source,
        "step_gflop": 10.0,
        "gflops_per_second": 100.0,
    }


def test_table_keeps_out_of_memory_and_failed_rows():
    results = [
        row("full", 1024, 2.0, 100.0),
        row("local", 1024, 5.0, 40.0),
        {"attention": "full", "length": 16384, "status": "out of memory"},
        {"attention": "local", "length": 16384, "status": "failed", "error": "boom"},
    ]
    text = efficiency._table(results, [1024, 16384], fake_args(), {"matmul_gflops": 200.0})
    lines = {}  # name -> its rows in both tables
    for line in text.splitlines():
        if "|" in line:
            name = line.split("|")[1].strip()
            lines[name] = lines.get(name, "") + line
    assert "2.50x" in lines["local"] and "0.40x" in lines["local"]
    assert "out of memory" in lines["full"]
    assert "failed" in lines["local"]
    assert "(50%)" in text  # 100 GFLOP/s against a 200 GFLOP/s matmul
    assert "Peak MiB source: `allocator`, TensorFlow's allocator statistics" in text
    assert "[rss]" not in text


def test_a_run_predicted_not_to_fit_is_skipped_with_its_reason():
    limit = 24 * 1024.0
    results = [row("full", 4096, 0.3, 3000.0), row("full", 8192, 0.08, 12000.0)]
    results += [row("local", 4096, 3.0, 100.0), row("local", 8192, 1.5, 200.0)]
    reason = efficiency.skip_reason("full", 16384, results, limit)
    assert "predicted peak 46.9 GiB" in reason and "L^2.00" in reason
    assert efficiency.skip_reason("local", 16384, results, limit) is None
    # One measured length: quadratic growth is assumed.
    assert "L^2.00" in efficiency.skip_reason("full", 16384, results[:1], 4000.0)
    assert efficiency.skip_reason("sparse", 16384, results, limit) is None  # nothing measured
    timed_out = [{"attention": "reformer", "length": 8192, "status": "timeout"}]
    assert efficiency.skip_reason("reformer", 16384, timed_out, limit) == "timed out at 8K"


def test_speedups_are_reported_against_the_flop_bound_and_extrapolated_full():
    def with_flops(r, gflop, rate):
        return {**r, "step_gflop": gflop, "gflops_per_second": rate}

    results = [
        with_flops(row("full", 1024, 2.0, 100.0), 10.0, 20.0),
        with_flops(row("local", 1024, 5.0, 40.0), 4.0, 20.0),
        {"attention": "full", "length": 4096, "status": "skipped", "reason": "too big"},
        with_flops(row("local", 4096, 1.0, 160.0), 16.0, 16.0),
    ]
    results[2]["step_gflop"] = 160.0
    text = efficiency._table(results, [1024, 4096], fake_args(), {"matmul_gflops": 200.0})
    bound = text.split("## Speedup over `full`")[1].split("##")[0]
    local = next(line for line in bound.splitlines() if line.startswith("| local"))
    # 1K: 2.5x measured, 2.5x FLOP bound. 4K: full extrapolated at its 1K rate (20 GFLOP/s,
    # 8 s) against local's 1 s: 8x of a 10x bound.
    assert "2.50 / 2.50 = 100%" in local and "~8.00 / 10.00 = 80%" in local
    assert local.endswith("| 5.29 |")  # the paper's 4K: 7.4 / 1.4
    assert "- full at 4K: too big" in text
    growth = text.split("## Growth from 1K to 4K")[1]
    local = next(line for line in growth.splitlines() if line.startswith("| local"))
    # Time 0.2 s -> 1 s, memory 40 -> 160 MiB, FLOPs 4 -> 16 over a length ratio of 4.
    assert local == "| local | 1.16 | 1.00 | 1.00 |"
    assert "| full | skipped | skipped | skipped |" in growth


def test_table_says_which_source_each_peak_came_from():
    results = [
        row("full", 1024, 2.0, 100.0),
        row("local", 1024, 5.0, 40.0),
        row("sparse", 1024, 5.0, 900.0, source="rss"),
    ]
    text = efficiency._table(results, [1024], fake_args(), {"matmul_gflops": 1.0})
    first_table = [line for line in text.split("## FLOPs")[0].splitlines() if "|" in line]
    cells = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in first_table}
    assert cells["local"] == "40 (0.40x)"
    # A figure from another source is marked, and not divided by an allocator figure.
    assert cells["sparse"] == "900 [rss]"
    assert "Peak MiB source: `allocator`" in text
    assert "cells marked [rss]: the child process's peak resident set size" in text
    assert "TF_ENABLE_ONEDNN_OPTS=0" in text
    # When every figure is the RSS fallback, the table says so once, without marks.
    only_rss = [
        row("full", 1024, 2.0, 800.0, source="rss"),
        row("local", 1024, 5, 700, source="rss"),
    ]
    text = efficiency._table(only_rss, [1024], fake_args(), {"matmul_gflops": 1.0})
    assert "Peak MiB source: `rss`, the child process's peak resident set size" in text
    assert "[rss]" not in text and "700 (0.88x)" in text


@pytest.mark.parametrize("user_setting", [None, "0"])
def test_children_run_with_onednn_unless_the_user_chose(monkeypatch, tmp_path, user_setting):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "placeholder")  # restored afterwards
    if user_setting is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", user_setting)
    seen = []

    def fake_run(command, **kwargs):
        seen.append(kwargs["env"])
        return subprocess.CompletedProcess(command, 0, stdout='{"peak_mib": 1.0}\n', stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    efficiency._run_worker("step", fake_args(), attention="full", length=64)
    variants_l4096._run_child("full", 64, 1, 1, {}, timeout=5)
    chunked_memory._run_child("chunked", 64, 16, 1, timeout=5)
    accuracy.train_one(
        "listops",
        "full",
        str(tmp_path),
        argparse.Namespace(steps=3, seed=0, timeout=5, out_dir=str(tmp_path)),
    )
    assert len(seen) == 4
    for env in seen:
        assert env["TF_ENABLE_ONEDNN_OPTS"] == (user_setting or "1")
        assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ or user_setting is not None


def test_table_adds_the_trace_peak_beside_the_allocator_peak():
    results = [
        {**row("full", 64, 2.0, 100.0), "trace_peak_mib": 98.0},
        {**row("local", 64, 4.0, 50.0), "trace_peak_mib": None, "trace_note": "no memory"},
        {"attention": "sparse", "length": 64, "status": "out of memory"},
    ]
    text = efficiency._table(results, [64], fake_args(profile=True), {"matmul_gflops": 1.0})
    first_table = [line for line in text.split("## FLOPs")[0].splitlines() if "|" in line]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in first_table}
    header = [c.strip() for c in rows["attention"]]
    assert header == ["steps/s 64", "peak MiB 64", "trace peak MiB 64"]
    assert [c.strip() for c in rows["full"]] == ["2.00 (1.00x)", "100 (1.00x)", "98"]
    assert rows["local"][2].strip() == "no memory profile"
    assert [c.strip() for c in rows["sparse"]] == ["out of memory"] * 3
    # Without traces there is no trace column.
    plain = efficiency._table(
        [row("full", 1024, 2.0, 100.0)], [1024], fake_args(), {"matmul_gflops": 1.0}
    )
    assert "trace peak MiB" not in plain
    assert "steps/s 1K" in plain


def test_worker_killed_by_the_kernel_is_reported_as_out_of_memory(monkeypatch):
    def killed(*args, **kwargs):
        return subprocess.CompletedProcess(args, -9, stdout="", stderr="Killed\n")

    monkeypatch.setattr(subprocess, "run", killed)
    result = efficiency._run_worker("step", fake_args(), attention="full", length=16384)
    assert result["status"] == "out of memory"
    assert result["attention"] == "full" and result["length"] == 16384


def test_worker_errors_are_reported_not_dropped(monkeypatch):
    def failing(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="ValueError: bad grid\n")

    monkeypatch.setattr(subprocess, "run", failing)
    result = efficiency._run_worker("step", fake_args(), attention="axial", length=1000)
    assert result["status"] == "failed" and "bad grid" in result["error"]


def test_model_flops_scale_with_length():
    from lra_keras.zoo import build_model

    small = build_model("text", "full", "tiny", max_length=64)
    large = build_model("text", "full", "tiny", max_length=128)
    f_small = efficiency.model_flops(small, 1, 64)
    f_large = efficiency.model_flops(large, 1, 128)
    # Projections and MLP double, attention quadruples: between 2x and 4x.
    assert 2.0 < f_large / f_small < 4.0
    local_small = efficiency.model_flops(build_model("text", "local", "tiny", max_length=64), 1, 64)
    local_large = efficiency.model_flops(
        build_model("text", "local", "tiny", max_length=128), 1, 128
    )
    assert local_large / local_small == pytest.approx(2.0, rel=0.05)


def test_full_attention_quadruples_and_projections_double():
    from lra_keras.layers import LRAEncoder
    from lra_keras.zoo import build_model

    model = build_model("text", "full", "tiny", max_length=64)
    encoder = next(layer for layer in model.layers if isinstance(layer, LRAEncoder))
    attention = encoder.blocks[0].attention_layer
    assert attention.attention_flops(1, 128, 128) == 4 * attention.attention_flops(1, 64, 64)
    assert attention.projection_flops(1, 128, 128) == 2 * attention.projection_flops(1, 64, 64)
    # Dense attention: 2 FLOPs per multiply-add of QK^T and of PV, per head.
    heads, key_dim = attention.num_heads, attention.key_dim
    assert attention.attention_flops(2, 64, 64) == 2 * 2 * 64 * 64 * heads * 2 * key_dim


def test_keras_mha_baseline_counts_the_same_flops_as_full():
    import keras

    import lra_keras.layers.encoder.transformer_encoder_block as block_module

    original = block_module.get_attention
    baseline = efficiency.build_text_model(efficiency.BASELINE, 64, "tiny")
    assert block_module.get_attention is original  # the swap does not leak
    mha = [layer for layer in baseline._flatten_layers() if type(layer).__name__ != "Functional"]
    assert any(type(layer) is keras.layers.MultiHeadAttention for layer in mha)
    full = efficiency.build_text_model("full", 64, "tiny")
    assert efficiency.model_flops(baseline, 2, 64) == efficiency.model_flops(full, 2, 64)


@pytest.mark.parametrize("attention", ["performer", "linear", "fnet"])
def test_variants_without_probabilities_build_without_attention_dropout(attention):
    # The `full` preset's attention dropout would be refused by these variants.
    model = efficiency.build_text_model(attention, 64, "lra")
    assert model.get_layer("encoder").blocks[0].attention_layer.dropout == 0.0


def test_every_efficiency_row_is_the_same_text_model():
    # s4d's own preset (S4's 6 layers, mean pooling) must not change the benchmarked model.
    full = efficiency.build_text_model("full", 64, "lra").get_layer("encoder")
    s4d = efficiency.build_text_model("s4d", 64, "lra").get_layer("encoder")
    assert (len(s4d.blocks), s4d.embed_dim, s4d.use_cls_token) == (
        len(full.blocks),
        full.embed_dim,
        full.use_cls_token,
    )
    assert s4d.blocks[0].mlp_dim == full.blocks[0].mlp_dim


def test_accuracy_table_keeps_failures(monkeypatch):
    results = [
        {
            "task": "listops",
            "attention": "full",
            "status": "ok",
            "test_accuracy": 0.25,
            "best_step": 800,
            "wall_seconds": 12.0,
        },
        {"task": "listops", "attention": "linear", "status": "failed", "error": "ValueError: x"},
        {"task": "listops", "attention": "local", "status": "out of memory", "error": "Killed"},
    ]
    args = argparse.Namespace(tasks="listops", seed=0, listops_examples=100, pathfinder_images=10)
    text = accuracy.table(results, {"listops": 0.2}, args)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if "|" in line}
    assert "0.200" in rows["majority class"]
    cells = [c.strip() for c in rows["full"].split("|")[2:-1]]
    assert cells == ["0.250", "800", "12", "0.364"]  # the paper's 36.37
    assert "failed" in rows["linear"] and "out of memory" in rows["local"]
    assert "0.161" in rows["linear"]  # the paper's column stays beside a failed run
    assert "- listops / linear: failed: ValueError: x" in text
    assert "preset `small`, 1200 steps of batch 32" in text and "50-255 tokens" in text


def test_accuracy_defaults_are_the_documented_listops_setting():
    args = argparse.Namespace()
    assert accuracy.task_steps("listops", args) == 1200
    overrides = accuracy.task_overrides("listops", "full", args)
    assert overrides["max_length"] == 256 and overrides["learning_rate"] == 2e-3
    assert overrides["warmup_steps"] == 100 and overrides["schedule"] == "cosine"
    # Flags replace the defaults.
    args = argparse.Namespace(num_train_steps=7, max_length=128, learning_rate=1e-2)
    assert accuracy.task_steps("listops", args) == 7
    overrides = accuracy.task_overrides("listops", "local", args)
    assert overrides["max_length"] == 128 and overrides["learning_rate"] == 1e-2
    # BigBird takes its sparse path at the capped length, not the dense fallback.
    from lra_keras.layers import get_attention

    kwargs = accuracy.task_overrides("listops", "bigbird")["attention_kwargs"]
    bigbird = get_attention("bigbird", num_heads=2, key_dim=4, **kwargs)
    assert bigbird.min_sparse_length() <= 256
    from lra_keras.layers import ATTENTIONS

    assert set(accuracy.TABLE2) <= set(ATTENTIONS) and len(accuracy.TABLE2) == 9


def test_accuracy_run_killed_by_the_kernel_is_out_of_memory(monkeypatch, tmp_path):
    def killed(*args, **kwargs):
        return subprocess.CompletedProcess(args, -9, stdout="", stderr="Killed\n")

    monkeypatch.setattr(subprocess, "run", killed)
    args = argparse.Namespace(num_train_steps=3, seed=0, timeout=5, out_dir=str(tmp_path))
    result = accuracy.train_one("listops", "full", str(tmp_path), args)
    assert result["status"] == "out of memory" and result["steps"] == 3


def test_accuracy_runs_grid_variants_on_a_listops_grid():
    overrides = accuracy.task_overrides("listops", "axial")
    height, width = overrides["attention_kwargs"]["axis_shape"]
    assert (height, width) == (16, 16) and overrides["pooling"] == "mean"
    assert accuracy.task_overrides("listops", "transformer_xl")["max_length"] == 256
    assert "axis_shape" not in str(accuracy.task_overrides("pathfinder", "axial"))


def test_grid_variants_get_a_grid_of_the_length():
    overrides = efficiency.text_overrides("axial", 3072)
    height, width = overrides["attention_kwargs"]["axis_shape"]
    assert height * width == 3072 and overrides["pooling"] == "mean"
    assert efficiency.text_overrides("local", 1024) == {"max_length": 1024}


@pytest.mark.slow
def test_efficiency_end_to_end(tmp_path):
    report = efficiency.main(
        [
            "--lengths",
            "64",
            "--attentions",
            "full,local",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--out_dir",
            str(tmp_path),
            "--trace_memory",
        ]
    )
    assert {r["attention"] for r in report["results"]} == {"full", "local"}
    assert all(r["status"] == "ok" for r in report["results"])
    for name in ("efficiency.json", "efficiency.md", "efficiency.png"):
        assert os.path.getsize(tmp_path / name) > 0
    saved = json.loads((tmp_path / "efficiency.json").read_text())
    assert saved["matmul"]["matmul_gflops"] > 0
    assert [(r["attention"], r["length"]) for r in saved["results"]] == [
        ("full", 64),
        ("local", 64),
    ]
    table = (tmp_path / "efficiency.md").read_text()
    assert "| full | " in table and "| local | " in table and "trace peak MiB 64" in table
    for r in saved["results"]:
        assert r["steps_per_second"] > 0 and r["step_gflop"] > 0
        assert os.path.exists(r["trace_file"])
        assert r["memory_source"] in ("allocator", "rss")
        if r["memory_source"] == "allocator":
            # The trace's memory profile and the allocator statistics watch the same
            # allocator over the same steps.
            assert r["trace_peak_mib"] == pytest.approx(r["peak_mib"], rel=0.05)


def test_accuracy_trains_on_the_pathfinder_difficulty_it_generated(tmp_path):
    report = accuracy.main(
        [
            "--tasks=pathfinder",
            "--attentions=full",
            "--steps=2",
            "--pathfinder_images=40",
            "--pathfinder_difficulty=easy",
            f"--out_dir={tmp_path}",
        ]
    )
    assert [r["status"] for r in report["results"]] == ["ok"], report["results"]
    assert list((tmp_path / "accuracy_data").glob("pathfinder_easy_40/curv_baseline"))
    config = json.loads(
        (tmp_path / "accuracy_runs" / "pathfinder_full" / "config.json").read_text()
    )
    assert config["run"]["data_options"] == {"difficulty": "easy"}
    assert "Pathfinder-32 easy images" in (tmp_path / "accuracy.md").read_text()


@pytest.mark.slow
def test_accuracy_end_to_end(tmp_path):
    report = accuracy.main(
        [
            "--tasks",
            "listops,pathfinder",
            "--attentions",
            "full,linear",
            "--steps",
            "5",
            "--listops_examples",
            "100",
            "--listops_eval_examples",
            "50",
            "--pathfinder_images",
            "40",
            "--out_dir",
            str(tmp_path),
        ]
    )
    runs = [(r["task"], r["attention"], r["status"]) for r in report["results"]]
    assert runs == [
        ("listops", "full", "ok"),
        ("listops", "linear", "ok"),
        ("pathfinder", "full", "ok"),
        ("pathfinder", "linear", "ok"),
    ]
    for r in report["results"]:
        assert r["steps"] == 5 and 1 <= r["best_step"] <= 5
        assert 0 <= r["test_accuracy"] <= 1 and r["wall_seconds"] > 0
    for task in ("listops", "pathfinder"):
        assert 0 < report["majority_baseline"][task] <= 1
        # ListOps data is kept per length range (listops_50_256 by default).
        assert list((tmp_path / "accuracy_data").glob(f"{task}*/.complete"))
    for name in ("accuracy.json", "accuracy.md", "accuracy.png"):
        assert os.path.getsize(tmp_path / name) > 0
    table = (tmp_path / "accuracy.md").read_text()
    assert "| linear | " in table and "pathfinder accuracy" in table


def test_relative_attention_benchmark_prints_both_modes(capsys):
    relative_attention.main(["--length", "4", "--memory", "3", "--batch", "1", "--repeats", "1"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["causal"] for r in rows] == [False, True]
    assert all(r["median_seconds"] > 0 and r["memory"] == 3 for r in rows)


def test_layer_flops_of_full_equal_the_keras_mha_formula():
    import keras

    from lra_keras.layers import get_attention

    heads, key_dim = variants_l4096.HEADS, variants_l4096.KEY_DIM
    full = get_attention("full", num_heads=heads, key_dim=key_dim)
    full.build((2, 64, variants_l4096.MODEL_DIM), (2, 64, variants_l4096.MODEL_DIM))
    mha = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim)
    assert variants_l4096.step_flops(full, 2, 64) == variants_l4096.step_flops(mha, 2, 64)
    local = get_attention("local", num_heads=heads, key_dim=key_dim, block_size=16)
    assert variants_l4096.step_flops(local, 2, 64) < variants_l4096.step_flops(full, 2, 64)


def test_accuracy_recipes_share_one_budget(monkeypatch, tmp_path):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="boom\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    args = argparse.Namespace(
        num_train_steps=30, seed=0, timeout=5, out_dir=str(tmp_path), pretrain_steps=10
    )
    for recipe in ("plain", "rotary", "rotary+pretrain"):
        result = accuracy.train_one("listops", "full", str(tmp_path), args, recipe)
        assert result["recipe"] == recipe and result["status"] == "failed"
    plain, rotary, both = commands
    assert "--num_train_steps=30" in plain and not any("pretrain" in c for c in plain)
    assert '--set=positions="rotary"' in rotary and "--num_train_steps=30" in rotary
    # Equal totals: 10 pretraining steps + 20 fine-tuning steps.
    assert "--pretrain=masked" in both and "--pretrain_steps=10" in both
    assert "--num_train_steps=20" in both and '--set=positions="rotary"' in both
    assert len({c[c.index("--attention=full") + 3] for c in commands}) == 3  # own model_dirs
    with pytest.raises(ValueError, match="pretrain_steps"):
        accuracy.recipe_spec("pretrain", argparse.Namespace(pretrain_steps=0))
    results = [
        {
            "task": "listops",
            "attention": "full",
            "recipe": r,
            "status": "ok",
            "test_accuracy": 0.3,
            "best_step": 5,
            "wall_seconds": 1.0,
        }
        for r in ("plain", "rotary", "rotary+pretrain")
    ]
    text = accuracy.table(
        results,
        {"listops": 0.2},
        argparse.Namespace(
            tasks="listops", seed=0, listops_examples=100, pathfinder_images=10, pretrain_steps=10
        ),
    )
    assert "| full |" in text and "| full (rotary) |" in text
    assert "| full (rotary+pretrain) |" in text and "equal total steps" in text


def test_pathfinder_control_reads_the_accuracy_benchmarks_images(tmp_path):
    from benchmarks import pathfinder_control

    output = tmp_path / "control.json"
    rows = pathfinder_control.main(
        [
            "--images=40",
            "--steps=3",
            "--eval_every=2",
            "--batch_size=4",
            f"--data_dir={tmp_path}",
            f"--output={output}",
        ]
    )
    assert [r["step"] for r in rows] == [2, 3]
    assert all(0.0 <= r["validation_accuracy"] <= 1.0 for r in rows)
    assert json.loads(output.read_text())["evaluations"] == rows
    # The same folder `benchmarks.accuracy --pathfinder_difficulty easy` trains on.
    assert (tmp_path / "pathfinder_easy_40" / ".complete").exists()
    with pytest.raises(SystemExit):
        pathfinder_control.main(["--images=5"])


def test_attention_kwargs_reach_the_variant_and_the_children(monkeypatch):
    # Mega-chunk's rows: `--attention_kwargs '{"chunk_size": 16}'` on top of mega's own preset.
    model = efficiency.build_text_model("mega", 64, "lra", attention_kwargs={"chunk_size": 16})
    layer = model.get_layer("encoder").blocks[0].attention_layer
    assert layer.chunk_size == 16 and layer.ema_dim == 16
    assert (
        efficiency.build_text_model("mega", 64, "lra")
        .get_layer("encoder")
        .blocks[0]
        .attention_layer.chunk_size
        is None
    )
    seen = []

    def fake_run(command, **kwargs):
        seen.append(command)
        return subprocess.CompletedProcess(command, 0, stdout='{"peak_mib": 1.0}\n', stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    args = fake_args(attention_kwargs='{"chunk_size": 16}')
    efficiency._run_worker("step", args, attention="mega", length=64)
    assert seen[-1][seen[-1].index("--attention_kwargs") + 1] == '{"chunk_size": 16}'
    with pytest.raises(SystemExit):
        efficiency.main(["--attention_kwargs", "[16]"])
