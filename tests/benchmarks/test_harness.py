"""The benchmark harnesses on tiny shapes (the benchmarks themselves are not tests)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import pytest

from benchmarks import accuracy, efficiency


def fake_args(**kwargs):
    args = dict(batch_size=1, steps=3, warmup=1, jit_compile=False, profile=False, timeout=5)
    args.update(out_dir="unused", attention=None, length=None)
    args.update(kwargs)
    return argparse.Namespace(**args)


def row(name, length, sps, mib, status="ok"):
    return {
        "attention": name,
        "length": length,
        "status": status,
        "steps_per_second": sps,
        "peak_mib": mib,
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
        ]
    )
    assert {r["attention"] for r in report["results"]} == {"full", "local"}
    assert all(r["status"] == "ok" for r in report["results"])
    for name in ("efficiency.json", "efficiency.md", "efficiency.png"):
        assert os.path.getsize(tmp_path / name) > 0
    saved = json.loads((tmp_path / "efficiency.json").read_text())
    assert saved["matmul"]["matmul_gflops"] > 0


@pytest.mark.slow
def test_accuracy_end_to_end(tmp_path):
    report = accuracy.main(
        [
            "--tasks",
            "listops",
            "--attentions",
            "full,linear",
            "--steps",
            "5",
            "--listops_examples",
            "100",
            "--out_dir",
            str(tmp_path),
        ]
    )
    assert [r["status"] for r in report["results"]] == ["ok", "ok"]
    assert 0 < report["majority_baseline"]["listops"] <= 1
    for name in ("accuracy.json", "accuracy.md", "accuracy.png"):
        assert os.path.getsize(tmp_path / name) > 0
