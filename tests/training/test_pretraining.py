"""Self-pretraining: corruption, targets, the per-token objective and the weight transfer."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lra_keras.training import objectives
from lra_keras.training.pretraining_data import (
    MASK_TOKENS,
    masked_denoising,
    next_token_targets,
    pretraining_dataset,
)
from lra_keras.zoo import build_model, get_config
from lra_keras.zoo.pretraining import (
    IGNORE_LABEL,
    build_pretraining_model,
    check_pretraining,
    transfer_encoder_weights,
)


def _batches(tokens, two_tower=False):
    tokens = tf.constant(tokens, tf.int32)
    labels = tf.zeros((tokens.shape[0],), tf.int32)
    if two_tower:
        features = {"tokens_1": tokens, "tokens_2": tokens + 100}
    else:
        features = {"tokens": tokens}
    return tf.data.Dataset.from_tensors((features, labels)).repeat(3)


def test_masked_denoising_corrupts_real_tokens_only_and_keeps_originals_as_targets():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 50, size=(64, 40)).astype("int32")
    tokens[:, 30:] = 0  # padding
    corrupted, targets = masked_denoising(
        tf.constant(tokens), tf.constant([3, 4]), vocab_size=50, mask_padding=True, rate=0.3
    )
    corrupted, targets = corrupted.numpy(), targets.numpy()
    selected = targets != IGNORE_LABEL
    assert not selected[:, 30:].any() and (corrupted[:, 30:] == 0).all()
    np.testing.assert_array_equal(targets[selected], tokens[selected])
    np.testing.assert_array_equal(corrupted[~selected], tokens[~selected])
    share = selected[:, :30].mean()
    assert 0.25 < share < 0.35
    changed = (corrupted != tokens)[selected].mean()
    assert 0.8 < changed < 0.95  # 90% replaced, a few by the same token
    assert corrupted.min() >= 0 and corrupted.max() < 50
    assert (corrupted[selected] != 0).all()  # never the padding id


def test_masked_denoising_with_a_mask_token_splits_80_10_10():
    rng = np.random.default_rng(1)
    tokens = rng.integers(1, 16, size=(256, 64)).astype("int32")  # never 16, the [MASK] id
    tokens[:, 50:] = 0
    corrupted, targets = masked_denoising(
        tf.constant(tokens),
        tf.constant([5, 6]),
        vocab_size=17,
        mask_padding=True,
        rate=0.15,
        mask_token=16,
    )
    corrupted, targets = corrupted.numpy(), targets.numpy()
    selected = targets != IGNORE_LABEL
    np.testing.assert_array_equal(targets[selected], tokens[selected])
    np.testing.assert_array_equal(corrupted[~selected], tokens[~selected])
    assert not selected[:, 50:].any() and (corrupted[:, 50:] == 0).all()
    masked = (corrupted == 16)[selected].mean()
    kept = (corrupted == tokens)[selected].mean()
    assert 0.76 < masked < 0.84  # [MASK]
    assert 0.09 < kept < 0.17  # kept: 10%, plus random draws of the same token
    assert (corrupted[~selected] != 16).all()


def test_listops_pretraining_masks_with_an_id_its_data_never_holds(tmp_path):
    from lra_keras.data import load, write_listops

    write_listops(
        str(tmp_path), num_train=64, num_val=8, num_test=8, seed=3, min_length=20, max_length=64
    )
    train = load("listops", "train", str(tmp_path), 16, max_length=64)
    mask = MASK_TOKENS["listops"]
    assert all((f["tokens"].numpy() != mask).all() for f, _ in train)
    masked = pretraining_dataset(
        train, "masked", vocab_size=17, mask_padding=True, mask_token=mask, rate=0.3
    )
    assert any((f["tokens"].numpy() == mask).any() for f, _ in masked)
    for bad in (0, 17):
        with pytest.raises(ValueError, match="mask_token"):
            pretraining_dataset(train, "masked", vocab_size=17, mask_padding=True, mask_token=bad)


def test_next_token_targets_shift_and_stop_at_padding():
    tokens = tf.constant([[5, 6, 7, 0, 0], [1, 2, 3, 4, 9]], tf.int32)
    targets = next_token_targets(tokens, mask_padding=True).numpy()
    np.testing.assert_array_equal(targets, [[6, 7, -1, -1, -1], [2, 3, 4, 9, -1]])


def test_pretraining_dataset_is_deterministic_and_handles_two_towers():
    tokens = np.random.default_rng(1).integers(1, 30, size=(4, 16))
    ds = pretraining_dataset(_batches(tokens), "masked", vocab_size=30, mask_padding=True, seed=7)
    first = [(f["tokens"].numpy(), t.numpy()) for f, t in ds]
    again = [(f["tokens"].numpy(), t.numpy()) for f, t in ds]
    assert len(first) == 3
    for (a, b), (c, d) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    # Each batch is corrupted differently.
    assert (first[0][1] != first[1][1]).any()
    two = pretraining_dataset(_batches(tokens, True), "causal", vocab_size=200, mask_padding=True)
    seen = [f["tokens"].numpy() for f, _ in two]
    assert len(seen) == 6
    np.testing.assert_array_equal(seen[1], tokens + 100)
    with pytest.raises(ValueError, match="objective"):
        pretraining_dataset(_batches(tokens), "span", vocab_size=30, mask_padding=True)


def test_token_prediction_objective_averages_over_scored_tokens():
    labels = tf.constant([[1, -1, 2], [-1, -1, -1]], tf.int32)
    logits = tf.math.log(
        tf.constant(
            [[[0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25]], [[1 / 3] * 3] * 3]
        )
    )
    loss, accuracy = objectives.token_prediction(labels, logits)
    np.testing.assert_allclose(loss.numpy(), [(-np.log(0.8) - np.log(0.25)) / 2, 0.0], rtol=1e-5)
    np.testing.assert_allclose(accuracy.numpy(), [0.5, 0.0])


def test_pretraining_model_shares_the_task_encoder():
    config = get_config("listops", "local", "tiny")
    pre = build_pretraining_model(config, "masked")
    tokens = np.random.default_rng(2).integers(1, 10, size=(2, config["max_length"]))
    logits = pre({"tokens": tokens})
    assert tuple(logits.shape) == (2, config["max_length"], config["vocab_size"])
    model = build_model("listops", "local", "tiny")
    transfer_encoder_weights(pre, model)
    pairs = zip(pre.get_layer("encoder").weights, model.get_layer("encoder").weights, strict=True)
    for a, b in pairs:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert not any("pretrain_head" in w.path for w in model.weights)
    causal = build_pretraining_model(config, "causal")
    assert causal.get_layer("encoder").causal
    with pytest.raises(ValueError, match="'bigbird'.*causal"):
        check_pretraining(get_config("listops", "bigbird", "tiny"), "causal")
    with pytest.raises(ValueError, match="differ"):
        transfer_encoder_weights(pre, build_model("listops", "local", "tiny", num_layers=3))


def test_lra_train_pretrains_on_train_only_then_fine_tunes_and_resumes(tmp_path):
    import json
    import shutil
    import subprocess

    from lra_keras.data.listops_generator import write_listops
    from tests.training.test_train_cli import lra_train
    from tests.training.test_trainer import ENV, ROOT, assert_one_line_error

    full = tmp_path / "full"
    write_listops(str(full), num_train=64, num_val=16, num_test=16, min_length=5, max_length=60)
    # Only the training file: pretraining must finish without validation or test data.
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(full / "basic_train.tsv", data)
    model_dir = tmp_path / "run"
    flags = ("--pretrain", "masked", "--pretrain_steps", "3", "--num_train_steps", "2")
    flags += ("--eval_every", "2")

    def run(*extra):
        cmd = lra_train(data, model_dir, *flags, *extra)
        return subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)

    proc = run()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_one_line_error(proc, "basic_val")
    pretrain = json.loads((model_dir / "pretrain" / "results.json").read_text())
    assert pretrain["step"] == 3 and "validation" not in pretrain["last"]

    for name in ("basic_val.tsv", "basic_test.tsv"):
        shutil.copy(full / name, data)
    proc = run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["step"] == 2 and "test" in results["best"]
    assert results["config"]["run"]["pretrain"] == "masked"
    # The finished phase was restored, not trained again; both phases keep their logs.
    assert json.loads((model_dir / "pretrain" / "results.json").read_text())["step"] == 3
    assert os.listdir(model_dir / "pretrain" / "logs" / "train")
    assert os.listdir(model_dir / "logs" / "train")

    proc = subprocess.run(
        lra_train(data, model_dir, "--pretrain", "causal", *flags[2:]),
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc, "run.objective")
