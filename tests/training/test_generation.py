"""The compiled per-byte generation step equals the eager one and traces once."""

import pytest

from lra_keras.training import compiled_lm_step
from lra_keras.zoo.byte_language_model import ByteLanguageModel


def tiny_lm(block):
    return ByteLanguageModel(
        block=block,
        embed_dim=16,
        num_layers=2,
        num_heads=2,
        key_dim=8,
        mlp_dim=32,
        segment_length=4,
        memory_length=6,
        compressed_memory_length=2,
        dropout=0.0,
    )


@pytest.mark.parametrize("block", ["transformer_xl", "compressive"])
def test_compiled_step_generates_the_same_bytes(block):
    lm = tiny_lm(block)
    step = compiled_lm_step(lm)
    prompt = b"for i in range(10):\n"
    greedy = lm.generate(prompt, num_bytes=12, temperature=0)
    assert lm.generate(prompt, num_bytes=12, temperature=0, step_fn=step) == greedy
    sampled = lm.generate(prompt, num_bytes=12, temperature=1.0, seed=4)
    assert lm.generate(prompt, num_bytes=12, temperature=1.0, seed=4, step_fn=step) == sampled
    # The state keeps its shapes from byte to byte, so the step is traced once.
    assert step.experimental_get_tracing_count() == 1
