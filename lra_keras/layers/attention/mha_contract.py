"""MultiHeadAttention's interface, checked: the argument, shape, mask and capability checks.

Shared by `BaseAttention` and `TokenMixer`, the two bases that stand in for
`keras.layers.MultiHeadAttention`, so that both raise the same errors.
"""

from __future__ import annotations

import keras
from keras import ops

# MultiHeadAttention arguments this contract refuses, with what to use instead.
_REFUSED_MHA_ARGUMENTS = {
    "attention_axes": "use the `axial` variant for attention over several axes",
    "flash_attention": "use the `chunked` variant for exact attention in O(L) memory",
    "sliding_window": "use the `local` or `longformer` variant for windowed attention",
    "use_gate": "gated attention is not part of this contract",
}
_REFUSED_DEFAULTS = {"attention_axes": None, "flash_attention": None, "sliding_window": None}


def refuse_mha_arguments(layer_name: str, kwargs: dict) -> None:
    """Pops the MultiHeadAttention arguments this contract refuses from `kwargs`.

    Raises a ValueError naming what to use instead when one is set to a non-default value.
    """
    for arg, advice in _REFUSED_MHA_ARGUMENTS.items():
        if arg in kwargs:
            value = kwargs.pop(arg)
            if value != _REFUSED_DEFAULTS.get(arg, False):
                raise ValueError(
                    f"{layer_name} does not take MultiHeadAttention's `{arg}` "
                    f"(got {value!r}): {advice}."
                )


def check_attention_dropout(layer, dropout) -> None:
    """Validates `dropout`; refuses `dropout > 0` for a variant with no probabilities."""
    name = type(layer).__name__
    if isinstance(dropout, bool) or not isinstance(dropout, int | float):
        raise ValueError(f"{name}: `dropout` must be a number in [0, 1), got {dropout!r}.")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"{name}: `dropout` must be in [0, 1), got {dropout!r}.")
    if dropout > 0 and not layer.has_attention_probabilities:
        raise ValueError(
            f"{name} ('{layer.attention_name}') forms no attention probabilities, so it "
            f"cannot apply attention dropout: `dropout` must be 0, got {dropout!r}."
        )


def refuse_rotary(layer, kwargs: dict) -> None:
    """Pops `rotary` arguments given to a mixer without queries and keys; refuses `rotary=True`.

    For token mixers that are not a BaseAttention (fnet, s4d, lru, s5) but share its interface.
    """
    if kwargs.pop("rotary", False):
        raise capability_error(
            layer, "rotary position embeddings (`rotary=True`)", "it has no queries or keys."
        )
    kwargs.pop("rotary_max_wavelength", None)


def capability_error(layer, capability: str, detail: str = "") -> ValueError:
    """The ValueError for asking `layer` for a capability it lacks; names both."""
    return ValueError(
        f"Attention variant '{layer.attention_name}' ({type(layer).__name__}) does not support "
        f"{capability}" + (f": {detail}" if detail else ".")
    )


def check_call_capabilities(
    layer, use_causal_mask: bool, attention_mask, return_attention_scores: bool
) -> None:
    """Raises `capability_error` for a call argument `layer`'s class attributes refuse."""
    if use_causal_mask and not layer.supports_causal:
        raise capability_error(layer, "causal masking (`use_causal_mask=True`)")
    if attention_mask is not None and not layer.supports_attention_mask:
        raise capability_error(
            layer,
            "a dense `attention_mask`",
            "pass padding masks as `query_mask`/`value_mask` ([batch, length] vectors).",
        )
    if return_attention_scores and not layer.supports_attention_scores:
        raise capability_error(
            layer, "`return_attention_scores`", "it never forms the attention matrix."
        )


def check_input_shapes(layer, query_shape, value_shape, key_shape) -> None:
    """Validates [batch, length, dim] inputs: ranks, key/value agreement and, for a
    self-attention-only layer, equal query and key lengths (a capability error)."""
    for arg, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
        if len(shape) != 3:
            raise ValueError(
                f"{type(layer).__name__}: `{arg}` must have shape [batch, length, dim], "
                f"got shape {tuple(shape)}."
            )
    if tuple(value_shape[:2]) != tuple(key_shape[:2]) and None not in tuple(key_shape[:2]):
        raise ValueError(
            f"{type(layer).__name__}: `key` and `value` must have the same batch and length, "
            f"got {tuple(key_shape)} and {tuple(value_shape)}."
        )
    t, s = query_shape[1], value_shape[1]
    if not layer.supports_cross_attention and t is not None and s is not None and t != s:
        raise capability_error(
            layer,
            "cross-attention",
            f"query length {t} differs from key length {s}; it is self-attention only.",
        )


def check_float_inputs(layer, **tensors) -> None:
    """Refuses non-floating inputs (token ids passed where embeddings belong)."""
    for arg, x in tensors.items():
        if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype)):
            raise ValueError(
                f"{type(layer).__name__}: `{arg}` must be a floating-point tensor "
                f"(embed token ids first), got dtype {x.dtype}."
            )


def set_mha_attributes(layer, arguments: dict) -> None:
    """Stores MultiHeadAttention's constructor arguments on `layer`, as `mha_config` reads them.

    `arguments` is the constructor's `locals()`: the dropout, bias, output shape, initializer,
    regularizer, constraint and seed arguments are taken from it by name, so that every layer
    with this interface keeps them as the same attributes (`num_heads`, `key_dim` and
    `value_dim`, whose defaults differ, stay the caller's).
    """
    layer.dropout = float(arguments["dropout"])
    layer.use_bias = arguments["use_bias"]
    layer._output_shape = arguments["output_shape"]
    layer.kernel_initializer = keras.initializers.get(arguments["kernel_initializer"])
    layer.bias_initializer = keras.initializers.get(arguments["bias_initializer"])
    layer.kernel_regularizer = keras.regularizers.get(arguments["kernel_regularizer"])
    layer.bias_regularizer = keras.regularizers.get(arguments["bias_regularizer"])
    layer.kernel_constraint = keras.constraints.get(arguments["kernel_constraint"])
    layer.bias_constraint = keras.constraints.get(arguments["bias_constraint"])
    layer.seed = arguments["seed"]


def mha_config(layer) -> dict:
    """The MultiHeadAttention constructor arguments of `layer`, serialised for `get_config`."""
    return {
        "num_heads": layer.num_heads,
        "key_dim": layer.key_dim,
        "value_dim": layer.value_dim,
        "dropout": layer.dropout,
        "use_bias": layer.use_bias,
        "output_shape": layer._output_shape,
        "kernel_initializer": keras.initializers.serialize(layer.kernel_initializer),
        "bias_initializer": keras.initializers.serialize(layer.bias_initializer),
        "kernel_regularizer": keras.regularizers.serialize(layer.kernel_regularizer),
        "bias_regularizer": keras.regularizers.serialize(layer.bias_regularizer),
        "activity_regularizer": keras.regularizers.serialize(layer.activity_regularizer),
        "kernel_constraint": keras.constraints.serialize(layer.kernel_constraint),
        "bias_constraint": keras.constraints.serialize(layer.bias_constraint),
        "seed": layer.seed,
    }


def check_padding_mask(layer_name: str, arg: str, mask, batch_and_length):
    """Validates a [batch, length] padding mask and casts it to bool (None stays None)."""
    if mask is None:
        return None
    if len(mask.shape) != 2:
        raise ValueError(
            f"{layer_name}: `{arg}` must be a [batch, length] padding mask "
            f"(True = real token), got shape {tuple(mask.shape)}."
        )
    for got, want in zip(mask.shape, batch_and_length, strict=True):
        if got is not None and want is not None and got != want:
            raise ValueError(
                f"{layer_name}: `{arg}` has shape {tuple(mask.shape)}, which does "
                f"not match the input's [batch, length] = {tuple(batch_and_length)}."
            )
    return ops.cast(mask, "bool")


def check_inputs_and_masks(layer, inputs: tuple, masks: tuple) -> tuple:
    """Validates `(query, value, key)` and their padding masks before anything is computed.

    Floating inputs, their shapes (`layer._check_shapes`), then each `[batch, length]` mask
    against its input. Returns `(query_mask, value_mask, key_mask)` cast to bool (None stays
    None).
    """
    query, value, key = inputs
    check_float_inputs(layer, query=query, value=value, key=key)
    layer._check_shapes(query.shape, value.shape, key.shape)
    name = type(layer).__name__
    return tuple(
        check_padding_mask(name, arg, mask, x.shape[:2])
        for arg, mask, x in zip(
            ("query_mask", "value_mask", "key_mask"), masks, inputs, strict=True
        )
    )
