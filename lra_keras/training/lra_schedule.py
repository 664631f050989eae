"""The LRA learning-rate schedules as a Keras `LearningRateSchedule`."""

from __future__ import annotations

import math

import keras
from keras import ops

SCHEDULES = ("rsqrt", "cosine", "constant")


@keras.saving.register_keras_serializable(package="lra_keras")
class LRASchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup followed by the LRA reference's rsqrt or cosine decay.

    The LRA reference multiplies factors (`train_utils.create_learning_rate_scheduler`):

    - `rsqrt`: `lr * min(1, step / warmup) / sqrt(max(step, warmup))`. The rsqrt factor is
      NOT normalised, so the peak learning rate is `lr / sqrt(warmup)` (0.05 with warmup 1000
      peaks at 1.58e-3), exactly as the reference trains.
    - `cosine`: `lr * min(1, step / warmup) * max(0, 0.5 * (1 + cos(pi * (p % 1))))` with
      `p = max(0, (step - warmup) / steps_per_cycle)`.
    - `constant`: `lr * min(1, step / warmup)`.

    `step` is the optimizer's update count before the update (0 for the first update), as in
    the reference, so the very first update has learning rate 0 when `warmup_steps > 0`.

    Args:
        learning_rate: float. The reference's `learning_rate` ("constant" factor).
        warmup_steps: int. Linear warmup length; 0 disables warmup (and, for `rsqrt`, the
            decay then starts at step 1: `1 / sqrt(max(step, 1))`).
        schedule: str. One of `"rsqrt"`, `"cosine"`, `"constant"`.
        steps_per_cycle: int. Cosine cycle length (LRA uses `num_train_steps`); required for
            `"cosine"`.
        name: str. Name of the schedule.

    Call arguments:
        step: int or scalar tensor. The optimizer iteration.

    Returns:
        A float32 scalar learning rate.

    Example:

    >>> sched = LRASchedule(0.05, warmup_steps=1000, schedule="rsqrt")
    >>> round(float(sched(1000)), 6)
    0.001581

    Reference:
        Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers", ICLR 2021
        (`lra_benchmarks/utils/train_utils.py`).

    Masking: not applicable.
    """

    def __init__(
        self,
        learning_rate: float,
        warmup_steps: int = 0,
        schedule: str = "rsqrt",
        steps_per_cycle: int | None = None,
        name: str = "lra_schedule",
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}; received {schedule!r}.")
        if learning_rate is None or float(learning_rate) < 0:
            raise ValueError(f"`learning_rate` must be >= 0; received {learning_rate!r}.")
        if warmup_steps is None or int(warmup_steps) < 0:
            raise ValueError(f"`warmup_steps` must be >= 0; received {warmup_steps!r}.")
        if schedule == "cosine" and (steps_per_cycle is None or int(steps_per_cycle) <= 0):
            raise ValueError(
                "`steps_per_cycle` must be a positive int for the cosine schedule; "
                f"received {steps_per_cycle!r}."
            )
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.schedule = schedule
        self.steps_per_cycle = None if steps_per_cycle is None else int(steps_per_cycle)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = ops.convert_to_tensor(self.learning_rate, "float32")
        if self.warmup_steps > 0:
            lr = lr * ops.minimum(1.0, step / float(self.warmup_steps))
        if self.schedule == "rsqrt":
            lr = lr / ops.sqrt(ops.maximum(step, float(max(self.warmup_steps, 1))))
        elif self.schedule == "cosine":
            progress = ops.maximum(0.0, (step - self.warmup_steps) / float(self.steps_per_cycle))
            frac = progress - ops.floor(progress)
            lr = lr * ops.maximum(0.0, 0.5 * (1.0 + ops.cos(math.pi * frac)))
        return lr

    def get_config(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "schedule": self.schedule,
            "steps_per_cycle": self.steps_per_cycle,
            "name": self.name,
        }
