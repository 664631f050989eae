"""Reusable (TF-Hub style) SavedModel export of the zoo's models, with a `.keras` archive."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid

import keras
import tensorflow as tf
from absl import logging

from lra_keras.data import encode_bytes_tf

# Tasks whose inputs are UTF-8 bytes (+1, pad 0), which get a raw-string `serve_text` endpoint.
BYTE_TASKS = ("text", "retrieval")
KERAS_ARCHIVE = "model.keras"
CONFIG_ASSET = "lra_config.json"
LABELS_ASSET = "labels.txt"
# Written into every export: `overwrite` replaces only a folder that holds it.
EXPORT_MARKER = "lra_export.json"
# What an export folder holds; a folder with anything else is not replaced.
EXPORT_ENTRIES = {
    "saved_model.pb",
    "saved_model.pbtxt",
    "fingerprint.pb",
    "variables",
    "assets",
    "model.keras",
    EXPORT_MARKER,
}


def is_export(path: str) -> bool:
    """Whether `path` is a folder written by `export_saved_model` (it holds the marker).

    Exports written before the marker existed are recognised by their SavedModel and config
    asset.
    """
    if os.path.isfile(os.path.join(path, EXPORT_MARKER)):
        return True
    legacy = [os.path.join(path, "saved_model.pb"), os.path.join(path, "assets", CONFIG_ASSET)]
    return all(os.path.isfile(p) for p in legacy)


def check_replaceable(path: str) -> None:
    """Raises FileExistsError unless the existing `path` is an export and nothing else.

    `overwrite` must never delete a training run or any other folder given by mistake.
    """
    if not os.path.isdir(path) or not is_export(path):
        raise FileExistsError(
            f"{path} exists and is not an export (no {EXPORT_MARKER}): overwrite replaces only "
            "a previous export; choose another output folder."
        )
    others = sorted(set(os.listdir(path)) - EXPORT_ENTRIES)
    if others:
        raise FileExistsError(
            f"{path} is an export but also holds {', '.join(others)}: not replacing it; move "
            "those out or choose another output folder."
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_unfinished_exports(path: str) -> list[str]:
    """Removes what exports to `path` interrupted by a kill left beside it; returns them.

    `.NAME.partial-PID-*` staging folders whose writer is no longer running (or that have no
    PID: written before it was recorded), and `NAME.old-<hex>` previous exports of a replace
    that was cut between its two renames.
    """
    parent, name = os.path.split(os.path.abspath(path))
    staging = re.compile(rf"^\.{re.escape(name)}\.partial-(?:(\d+)-)?[^/]*$")
    trash = re.compile(rf"^{re.escape(name)}\.old-[0-9a-f]{{32}}$")
    removed = []
    for entry in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        full = os.path.join(parent, entry)
        match = staging.match(entry)
        stale = match is not None and not (match.group(1) and _alive(int(match.group(1))))
        stale = stale or (trash.match(entry) is not None and is_export(full))
        if stale and os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
            removed.append(full)
    if removed:
        logging.warning(
            "Removed %d unfinished export(s) an interrupted run left: %s",
            len(removed),
            ", ".join(removed),
        )
    return removed


def _input_specs(model: keras.Model) -> dict:
    """The model's named token inputs as `tf.TensorSpec`s of fixed length."""
    specs = {}
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        if tensor.shape[1] is None:
            raise ValueError(
                f"Input '{name}' has no static length; export needs the task's fixed length."
            )
        specs[name] = tf.TensorSpec((None,) + tuple(tensor.shape[1:]), tf.int32, name=name)
    return specs


def _checked(inputs: dict, specs: dict) -> dict:
    """The token inputs, checked at run time against the export's fixed length.

    A signature (the route TF Serving takes) does not enforce its input shapes, and a wrong
    length would otherwise fail deep in the model with a reshape or broadcast error.
    """
    checked = {}
    for name, spec in specs.items():
        tokens = inputs[name]
        length = spec.shape[1]
        expected = f"int32 token ids of shape [batch, {length}] (pad with 0 or truncate)"
        with tf.control_dependencies(
            [
                tf.debugging.assert_rank(tokens, 2, message=f"'{name}' must be {expected}"),
                tf.debugging.assert_equal(
                    tf.shape(tokens)[1],
                    tf.constant(length, tf.int32),
                    message=f"'{name}' must be {expected}; its length differs",
                ),
            ]
        ):
            checked[name] = tf.identity(tokens)
    return checked


def _reusable_object(model: keras.Model, task: str | None, assets: dict) -> tf.train.Checkpoint:
    """The exported root: `__call__(inputs, training)`, variable lists and endpoints.

    A `tf.train.Checkpoint` is the root (as in TF-Hub's reusable SavedModel recipe), since
    `tf.Module` reserves `variables` and `trainable_variables` as read-only properties.
    """
    specs = _input_specs(model)
    names = list(specs)
    root = tf.train.Checkpoint()
    # TF-Hub's reusable SavedModel convention: plain variable lists and zero-argument
    # regularisation callables (the zoo's models use decoupled weight decay, so none).
    root.variables = [v.value for v in model.variables]
    root.trainable_variables = [v.value for v in model.trainable_variables]
    root.regularization_losses = []

    def forward(inputs, training):
        if not isinstance(inputs, dict):
            inputs = {names[0]: inputs}
        return tf.cast(model(_checked(inputs, specs), training=training), tf.float32)

    def outputs(logits):
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    # One structured argument (a tensor for classifiers, a dict for two-tower models), as
    # `TFSMLayer` and `hub.KerasLayer` pass their inputs.
    single = specs[names[0]] if len(names) == 1 else specs
    root.serve = tf.function(
        lambda inputs: outputs(forward(inputs, False)), input_signature=[single]
    )
    root.train = tf.function(
        lambda inputs: outputs(forward(inputs, True)), input_signature=[single]
    )
    call = tf.function(lambda inputs, training=False: forward(inputs, training))
    call.get_concrete_function(single, training=False)
    call.get_concrete_function(single, training=True)
    root.__call__ = call
    # Signatures take flat named tensors (TF Serving).
    root.serving_signature = tf.function(
        lambda *tokens: outputs(forward(dict(zip(names, tokens, strict=True)), False)),
        input_signature=[specs[n] for n in names],
    )
    if task in BYTE_TASKS:
        length = specs[names[0]].shape[1]
        text_names = [n.replace("tokens", "text") for n in names]

        def encode(strings):
            if not isinstance(strings, dict):
                strings = {text_names[0]: strings}
            pairs = zip(names, text_names, strict=True)
            return {n: encode_bytes_tf(strings[t], length) for n, t in pairs}

        text_specs = {t: tf.TensorSpec((None,), tf.string, name=t) for t in text_names}
        single_text = text_specs[text_names[0]] if len(names) == 1 else text_specs
        root.serve_text = tf.function(
            lambda strings: outputs(forward(encode(strings), False)),
            input_signature=[single_text],
        )
        root.serve_text_signature = tf.function(
            lambda *strings: outputs(
                forward(encode(dict(zip(text_names, strings, strict=True))), False)
            ),
            input_signature=[text_specs[t] for t in text_names],
        )
    for name, path in assets.items():
        setattr(root, name, tf.saved_model.Asset(path))
    return root


def export_saved_model(
    model: keras.Model,
    path: str,
    *,
    config: dict | None = None,
    label_names: list[str] | None = None,
    overwrite: bool = False,
) -> str:
    """Writes `model` as a reusable SavedModel at `path`, with `path/model.keras` inside.

    Endpoints: `serve` (also `serving_default`: fixed-length token ids -> `logits` and
    `probabilities`), `train` (the same with `training=True`, for
    `keras.layers.TFSMLayer(call_endpoint="serve", call_training_endpoint="train")`), and for
    byte tasks `serve_text` (raw strings encoded in the graph with `tf.strings` ops). The object
    also has `__call__(inputs, training)`, `variables`, `trainable_variables` and
    `regularization_losses` (TF-Hub's reusable SavedModel API, for `hub.KerasLayer`). The
    config and label names are saved as assets.

    The export is written to a temporary folder beside `path` and renamed into place, so an
    interrupted export never leaves a half-written model at `path`.

    Args:
        model: a zoo model (functional, named int32 token inputs of fixed length).
        path: the target folder.
        config: the zoo config (its `task` decides whether `serve_text` is added).
        label_names: names of the classes, saved as an asset.
        overwrite: replace an existing export at `path`. Only a folder written by this
            function (it holds `lra_export.json`) and holding nothing else is replaced; any
            other existing folder raises `FileExistsError`.

    Returns:
        `path`.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(
                f"{path} already exists; pass overwrite=True (or --overwrite) to replace a "
                "previous export there, or choose another output folder."
            )
        check_replaceable(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    remove_unfinished_exports(path)
    config = dict(config or {})
    task = config.get("task")
    # The PID in the name tells a later export whether the writer is still alive.
    staging = tempfile.mkdtemp(
        prefix=f".{os.path.basename(path)}.partial-{os.getpid()}-", dir=parent
    )
    try:
        asset_dir = os.path.join(staging, "_assets_src")
        os.makedirs(asset_dir)
        assets = {}
        config_path = os.path.join(asset_dir, CONFIG_ASSET)
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True, default=str)
        assets["config_file"] = config_path
        if label_names is None and "num_classes" in config:
            label_names = [str(i) for i in range(int(config["num_classes"]))]
        if label_names is not None:
            labels_path = os.path.join(asset_dir, LABELS_ASSET)
            with open(labels_path, "w") as f:
                f.write("\n".join(label_names) + "\n")
            assets["labels_file"] = labels_path
        root = _reusable_object(model, task, assets)
        signatures = {"serving_default": root.serving_signature, "serve": root.serving_signature}
        if task in BYTE_TASKS:
            signatures["serve_text"] = root.serve_text_signature
        saved = os.path.join(staging, "saved_model")
        tf.saved_model.save(root, saved, signatures=signatures)
        model.save(os.path.join(saved, KERAS_ARCHIVE))
        with open(os.path.join(saved, EXPORT_MARKER), "w") as f:
            json.dump({"format": "lra_keras export", "version": 1}, f)
        if os.path.exists(path):
            check_replaceable(path)  # again: the export took a while
            trash = f"{path}.old-{uuid.uuid4().hex}"
            os.rename(path, trash)
            os.rename(saved, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(saved, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
