"""The training optimizer: AdamW, with S4's own learning rate for state-space parameters.

S4 and S4D train the state-space parameters (the step size dt, A and B) at a smaller
learning rate (0.001 on LRA) and without weight decay, while every other weight follows the
run's learning rate and weight decay (Gu et al. 2022, S4 appendix D.2; the reference code
registers each such tensor with its own `lr` and `weight_decay=0.0`). Layers that want this
expose `state_space_variables` and `ssm_learning_rate` (`S4DMixing`, `LRUMixing`,
`S5Mixing`, and any other layer that declares both); `build_optimizer` reads them.

`no_weight_decay` groups (the zoo config key of the same name) exclude further weights from
the decay, as the S5 and LRU LRA configs exclude norms, biases and embeddings:
`NO_WEIGHT_DECAY_GROUPS` says what each name covers.
"""

from __future__ import annotations

import keras

# What each `no_weight_decay` name covers (matched on layer types and variable names, so it is
# the same on every backend):
# - "norm": the scale and offset of every normalisation layer (LayerNormalization,
#   BatchNormalization and its subclasses, GroupNormalization, RMSNormalization, ...);
# - "bias": every variable named `bias` (Dense, EinsumDense, convolutions, ...);
# - "embedding": the tables of embedding layers (`keras.layers.Embedding`, learned position
#   tables: layers whose class name ends in "Embedding") and the CLS vector (`cls_token`).
NO_WEIGHT_DECAY_GROUPS = ("norm", "bias", "embedding")


def _is_norm(layer) -> bool:
    kinds = tuple(
        getattr(keras.layers, name)
        for name in (
            "LayerNormalization",
            "BatchNormalization",
            "GroupNormalization",
            "UnitNormalization",
            "RMSNormalization",
        )
        if hasattr(keras.layers, name)
    )
    return isinstance(layer, kinds)


def _own_variables(layer) -> list:
    # The layer's own weights, not those of the layers it contains.
    return list(getattr(layer, "_trainable_variables", []))


def no_weight_decay_variables(model, groups) -> list:
    """The trainable variables of `model` that the `no_weight_decay` names cover."""
    groups = list(groups or ())
    unknown = sorted(set(groups) - set(NO_WEIGHT_DECAY_GROUPS))
    if unknown:
        raise ValueError(
            f"`no_weight_decay` names must be among {list(NO_WEIGHT_DECAY_GROUPS)}, got {unknown}."
        )
    chosen: dict[int, object] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        own = _own_variables(layer)
        is_embedding = type(layer).__name__.endswith("Embedding")
        for v in own:
            short = v.name.split("/")[-1]
            if (
                ("norm" in groups and _is_norm(layer))
                or ("bias" in groups and short == "bias")
                or ("embedding" in groups and (is_embedding or short == "cls_token"))
            ):
                chosen[id(v)] = v
    return [v for v in model.trainable_variables if id(v) in chosen]


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
        no_decay: list of further variables without weight decay (at the base rate).
        **kwargs: `keras.optimizers.AdamW` arguments.
    """

    def __init__(self, *args, lr_groups=(), no_decay=(), **kwargs):
        super().__init__(*args, **kwargs)
        # Variable keys, never the variables: a variable held in an attribute is tracked as
        # the optimizer's own, so the model's weights would be saved again in its checkpoints
        # and, under `model.fit` on JAX, donated twice to one step (a JAX runtime error).
        self._lr_scale = {}
        for variables, multiplier in lr_groups:
            for v in variables:
                self._lr_scale[self._var_key(v)] = float(multiplier)
        grouped = [v for variables, _ in lr_groups for v in variables]
        grouped += [v for v in no_decay if all(v is not g for g in grouped)]
        if grouped:
            # One call: Keras keeps only the last call's list (as keys, not variables).
            self.exclude_from_weight_decay(var_list=grouped)
        self._lr_multipliers = []

    def learning_rate_multiplier(self, variable) -> float:
        """The multiple of the learning rate at which `variable` steps (1.0 outside groups)."""
        return self._lr_scale.get(self._var_key(variable), 1.0)

    def build(self, var_list):
        super().build(var_list)
        # Python floats by variable index, read while tracing `update_step`.
        self._lr_multipliers = [self.learning_rate_multiplier(v) for v in var_list]

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
    no_weight_decay=None,
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
        no_weight_decay: names in `NO_WEIGHT_DECAY_GROUPS` whose weights get no decay; None
            reads the model's `no_weight_decay` attribute (the zoo's builders set it from the
            config key), else none.
        **adam_kwargs: `beta_1`, `beta_2`, `epsilon`, ...

    Returns:
        `keras.optimizers.AdamW` when no layer declares state-space variables and nothing is
        excluded from the decay, else a `GroupedAdamW`.
    """
    if no_weight_decay is None:
        no_weight_decay = getattr(model, "no_weight_decay", ())
    no_decay = no_weight_decay_variables(model, no_weight_decay)
    groups = state_space_groups(model)
    kwargs = dict(learning_rate=learning_rate_schedule, weight_decay=weight_decay, **adam_kwargs)
    if not groups and not no_decay:
        return keras.optimizers.AdamW(**kwargs)
    base = float(learning_rate)
    lr_groups = [(variables, rate / base if base > 0 else 0.0) for variables, rate in groups]
    return GroupedAdamW(lr_groups=lr_groups, no_decay=no_decay, **kwargs)


def make_optimizer(
    model, schedule, learning_rate: float, weight_decay: float, mixed_precision: str
):
    """The LRA optimizer: AdamW (beta_2 0.98, epsilon 1e-9) with decoupled weight decay.

    State-space layers (s4d) declare parameters that train at their own learning rate without
    weight decay (`lra_keras.training.optimizers.build_optimizer`); `model` must be built.
    """
    # Clipping is done by the step, not by Keras: Keras clips each replica's partial
    # gradient before the all-reduce (and a scaled one under loss scaling).
    optimizer = build_optimizer(
        model,
        schedule,
        learning_rate=learning_rate,
        weight_decay=float(weight_decay or 0.0),
        beta_1=0.9,
        beta_2=0.98,
        epsilon=1e-9,
    )
    if mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
