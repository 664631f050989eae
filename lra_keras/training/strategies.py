"""Choosing a `tf.distribute` strategy by name, and who is the chief."""

from __future__ import annotations

import json
import os

import tensorflow as tf
from absl import logging

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def _tf_config_workers() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
    return sum(len(cluster.get(k, [])) for k in ("chief", "worker"))


def make_strategy(
    name: str = "auto", tpu: str | None = None, devices: list[str] | None = None
) -> tf.distribute.Strategy:
    """Returns the strategy `name`.

    `auto` picks, in order: TPU (a `TPU_NAME` in the environment, or local TPU devices),
    multi-worker (a `TF_CONFIG` naming more than one worker), mirrored (more than one GPU),
    else the default (one device) strategy. `devices` restricts `mirrored` to those devices
    (e.g. two logical CPUs in tests).
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}; received {name!r}.")
    if name == "auto":
        if tpu or os.environ.get("TPU_NAME") or tf.config.list_physical_devices("TPU"):
            name = "tpu"
        elif _tf_config_workers() > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
        logging.info("--strategy=auto chose %s", name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    address = tpu or os.environ.get("TPU_NAME")
    if not address and not tf.config.list_physical_devices("TPU"):
        raise ValueError(
            "no TPU found: this machine has no TPU device and neither --tpu nor TPU_NAME "
            "names one (use --strategy auto or default to train on the CPU or GPUs)."
        )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or "local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (tf.errors.OpError, RuntimeError) as error:
        detail = " ".join(str(getattr(error, "message", None) or error).split())[:200]
        raise ValueError(f"cannot reach the TPU {address or 'local'!r}: {detail}") from error
    return tf.distribute.TPUStrategy(resolver)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_info(strategy: tf.distribute.Strategy) -> tuple[bool, int, int]:
    """(is_chief, worker_index, num_workers) of this process.

    Single-process strategies give `(True, 0, 1)`. Under multi-worker, the chief (or worker 0
    when the cluster has no chief) is the chief; workers are indexed chief first.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None or not resolver.task_type:
        return True, 0, 1
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    spec = resolver.cluster_spec().as_dict()
    has_chief = "chief" in spec
    num_workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
    if task_type == "chief":
        return True, 0, num_workers
    index = task_id + (1 if has_chief else 0)
    return index == 0, index, num_workers
