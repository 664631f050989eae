"""Training: one custom loop under any `tf.distribute` strategy, LRA schedules, the CLI."""

from lra_keras.training.generation import compiled_lm_step
from lra_keras.training.lra_schedule import SCHEDULES, LRASchedule
from lra_keras.training.strategies import STRATEGIES, make_strategy
from lra_keras.training.trainer import Trainer, parse_profile_steps

__all__ = [
    "SCHEDULES",
    "STRATEGIES",
    "LRASchedule",
    "Trainer",
    "compiled_lm_step",
    "make_strategy",
    "parse_profile_steps",
]
