"""Byte encodings: tensorflow-text and core tf.strings versions against a numpy reference."""

import numpy as np
import pytest
import tensorflow as tf

from lra_keras.data import encode_bytes, encode_bytes_tf


def reference(strings, max_length):
    out = np.zeros((len(strings), max_length), np.int32)
    for i, s in enumerate(strings):
        ids = np.frombuffer(s, np.uint8).astype(np.int32)[:max_length] + 1
        out[i, : len(ids)] = ids
    return out


def random_strings(seed, count=40):
    rng = np.random.default_rng(seed)
    strings = [
        rng.integers(0, 256, rng.integers(0, 30)).astype(np.uint8).tobytes() for _ in range(count)
    ]
    strings += [b"", b"\x00", b"\x00\x00abc", b"\xff\xfe\xc3", "ü€𝄞".encode(), b"\xc3(\xa0\xa1"]
    return strings


@pytest.mark.parametrize("max_length", [1, 7, 25, 64])
def test_both_encodings_match_reference(max_length):
    strings = random_strings(max_length)
    want = reference(strings, max_length)
    np.testing.assert_array_equal(encode_bytes(tf.constant(strings), max_length).numpy(), want)
    np.testing.assert_array_equal(encode_bytes_tf(tf.constant(strings), max_length).numpy(), want)


def test_shapes_and_graph_mode():
    strings = tf.constant([[b"ab", b"\xff"], [b"", b"xyz"]])
    assert encode_bytes(strings, 4).shape == (2, 2, 4)
    spec = [tf.TensorSpec([None], tf.string)]
    fn = tf.function(lambda s: encode_bytes_tf(s, 4), input_signature=spec)
    np.testing.assert_array_equal(fn(tf.constant([b"ab\x00"])).numpy(), [[98, 99, 1, 0]])
    with pytest.raises(ValueError, match="max_length"):
        encode_bytes_tf(strings, 0)


def _op_types(fn):
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec([None], tf.string)).graph
    types = {op.type for op in graph.get_operations()}
    for f in graph.as_graph_def().library.function:
        types |= {n.op for n in f.node_def}
    return types


def test_tf_version_uses_core_ops_only():
    # tf.raw_ops lists the core kernels only; tensorflow-text's custom ops are not in it.
    core = _op_types(lambda s: encode_bytes_tf(s, 8))
    assert all(hasattr(tf.raw_ops, t) for t in core), core
    text = _op_types(lambda s: encode_bytes(s, 8))
    assert not all(hasattr(tf.raw_ops, t) for t in text)  # the check can tell them apart
