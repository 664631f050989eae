"""The attention registry: name -> layer class, filled by `register_attention`."""

from __future__ import annotations

ATTENTIONS: dict[str, type] = {}


def register_attention(name: str):
    """Class decorator that registers an attention layer under `name` (see DESIGN.md sec. 2)."""

    def decorator(cls):
        if name in ATTENTIONS and ATTENTIONS[name] is not cls:
            raise ValueError(
                f"Attention name '{name}' is already registered to {ATTENTIONS[name].__name__}."
            )
        cls.attention_name = name
        ATTENTIONS[name] = cls
        return cls

    return decorator


def get_attention(name: str, /, **kwargs):
    """Builds the attention layer registered under `name` with the given arguments.

    Args:
        name: a registry name, e.g. "full", "performer", "bigbird".
        **kwargs: MultiHeadAttention's arguments plus the variant's own hyperparameters.

    Returns:
        An unbuilt attention layer.
    """
    if name not in ATTENTIONS:
        raise ValueError(
            f"Unknown attention '{name}'. Known attention names: {', '.join(sorted(ATTENTIONS))}."
        )
    return ATTENTIONS[name](**kwargs)
