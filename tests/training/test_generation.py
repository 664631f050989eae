"""The compiled per-byte generation step equals the eager one and traces once."""

import pytest

from lra_keras.training import compiled_lm_step
from tests.zoo.test_byte_language_model import tiny_lm


@pytest.mark.parametrize("block", ["transformer_xl", "compressive"])
def test_compiled_step_generates_the_same_bytes(block):
    lm = tiny_lm(block=block, memory_length=6, compressed_memory_length=2)
    step = compiled_lm_step(lm)
    prompt = b"for i in range(10):\n"
    greedy = lm.generate(prompt, num_bytes=12, temperature=0)
    assert lm.generate(prompt, num_bytes=12, temperature=0, step_fn=step) == greedy
    sampled = lm.generate(prompt, num_bytes=12, temperature=1.0, seed=4)
    assert lm.generate(prompt, num_bytes=12, temperature=1.0, seed=4, step_fn=step) == sampled
    # The state keeps its shapes from byte to byte, so the step is traced once.
    assert step.experimental_get_tracing_count() == 1
