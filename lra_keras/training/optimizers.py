"""The training optimizer: AdamW, with S4's own learning rate for state-space parameters.

S4 and S4D train the state-space parameters (the step size dt, A and B) at a smaller
learning rate (0.001 on LRA) and without weight decay, while every other weight follows the
run's learning rate and weight decay (Gu et al. 2022, S4 appendix D.2; the reference code
registers each such tensor with its own `lr` and `weight_decay=0.0`). Layers that want this
expose `state_space_variables` and `ssm_learning_rate` (`S4DMixing`, `LRUMixing`, `S5Mixing`);
`build_optimizer` reads them from the model.
"""

from __future__ import annotations

import keras


def state_space_groups(model) -> list[tuple[list, float]]:
    """[(variables, ssm_learning_rate)] of every layer in `model` that declares them."""
    groups = []
    layers = model._flatten_layers(include_self=True, recursive=True)
    for layer in layers:
        rate = getattr(layer, "ssm_learning_rate", None)
        variables = getattr(layer, "state_space_variables", None) if layer.built else None
        if rate is not None and variables:
            groups.append(([v for v in variables if v.trainable], float(rate)))
    return groups


@keras.saving.register_keras_serializable(package="lra_keras")
class GroupedAdamW(keras.optimizers.AdamW):
    """AdamW in which chosen variables step at a multiple of the learning rate.

    The multiple scales the Adam update itself (equivalently, the learning rate), not the
    gradient: Adam divides the gradient scale out, so a scaled gradient would change nothing.
    The result equals two AdamW optimizers over disjoint variable sets, the second with the
    scaled schedule, sharing the step count. Variables in a group get no weight decay.

    Args:
        lr_groups: list of `(variables, multiplier)`; a variable in no group has multiplier 1.
        **kwargs: `keras.optimizers.AdamW` arguments.
    """

    def __init__(self, *args, lr_groups=(), **kwargs):
        super().__init__(*args, **kwargs)
        self._lr_groups = [(list(variables), float(m)) for variables, m in lr_groups]
        grouped = [v for variables, _ in self._lr_groups for v in variables]
        if grouped:
            self.exclude_from_weight_decay(var_list=grouped)
        self._lr_multipliers = []

    def build(self, var_list):
        super().build(var_list)
        scale = {}
        for variables, multiplier in self._lr_groups:
            for v in variables:
                scale[self._var_key(v)] = multiplier
        # Python floats by variable index, read while tracing `update_step`.
        self._lr_multipliers = [scale.get(self._var_key(v), 1.0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._lr_multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)


def build_optimizer(
    model,
    learning_rate_schedule,
    *,
    learning_rate: float,
    weight_decay: float = 0.0,
    **adam_kwargs,
) -> keras.optimizers.Optimizer:
    """The run's AdamW; state-space parameters at their own learning rate, without decay.

    Args:
        model: the built model.
        learning_rate_schedule: float or schedule, the run's learning rate.
        learning_rate: float. The schedule's base value (the config's `learning_rate`); a
            layer's `ssm_learning_rate` is on this scale, so its variables follow
            `learning_rate_schedule * ssm_learning_rate / learning_rate` (the same warmup and
            decay, as S4's per-parameter-group learning rates).
        weight_decay: float. Decoupled weight decay of the other weights.
        **adam_kwargs: `beta_1`, `beta_2`, `epsilon`, ...

    Returns:
        `keras.optimizers.AdamW` when no layer declares state-space variables, else a
        `GroupedAdamW`.
    """
    groups = state_space_groups(model)
    kwargs = dict(learning_rate=learning_rate_schedule, weight_decay=weight_decay, **adam_kwargs)
    if not groups:
        return keras.optimizers.AdamW(**kwargs)
    base = float(learning_rate)
    lr_groups = [(variables, rate / base if base > 0 else 0.0) for variables, rate in groups]
    return GroupedAdamW(lr_groups=lr_groups, **kwargs)
