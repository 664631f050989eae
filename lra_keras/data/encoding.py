"""Token encodings shared by the pipelines and the exported graphs.

Bytes are encoded as byte + 1 with 0 for padding (vocabulary 257, the reference's
`ByteTextEncoder`). `encode_bytes` splits with tensorflow-text's `ByteSplitter` (the pipelines);
`encode_bytes_tf` uses core `tf.strings` ops only, for SavedModels that must not depend on
tensorflow-text's custom ops. Both accept any bytes, including invalid UTF-8.
"""

from __future__ import annotations

import tensorflow as tf

from lra_keras.data.release_files import LISTOPS_OOV_ID, LISTOPS_TOKENS

BYTE_VOCAB_SIZE = 257
PAD_ID = 0

# ListOps: a vocabulary fixed in code (the reference built it from a Python set, whose order
# changed between processes). Id 0 pads, 1..15 are the tokens, 16 is out-of-vocabulary.
LISTOPS_VOCAB_SIZE = len(LISTOPS_TOKENS) + 2


def _check_max_length(max_length: int) -> int:
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}.")
    return max_length


def encode_bytes(strings: tf.Tensor, max_length: int) -> tf.Tensor:
    """Encodes strings as byte + 1 ids, truncated and 0-padded to `max_length` (tf-text).

    Args:
        strings: a string tensor of shape `[...]`.
        max_length: the output length.

    Returns:
        int32 `[..., max_length]`.
    """
    import tensorflow_text as tf_text

    _check_max_length(max_length)
    strings = tf.convert_to_tensor(strings, tf.string)
    shape = tf.shape(strings)
    flat = tf.reshape(strings, [-1])
    pieces = tf_text.ByteSplitter().split(flat)
    ids = tf.cast(pieces, tf.int32) + 1
    dense = ids.to_tensor(default_value=PAD_ID, shape=[None, max_length])
    return tf.reshape(dense, tf.concat([shape, [max_length]], 0))


def encode_bytes_tf(strings: tf.Tensor, max_length: int) -> tf.Tensor:
    """Encodes strings as byte + 1 ids, truncated and 0-padded to `max_length` (core ops only).

    The same result as `encode_bytes`, with `tf.strings.substr` (byte units) and
    `tf.io.decode_raw`, so a graph that uses it has no custom ops.

    Args:
        strings: a string tensor of shape `[...]`.
        max_length: the output length.

    Returns:
        int32 `[..., max_length]`.
    """
    _check_max_length(max_length)
    strings = tf.convert_to_tensor(strings, tf.string)
    shape = tf.shape(strings)
    flat = tf.reshape(strings, [-1])
    clipped = tf.strings.substr(flat, 0, max_length, unit="BYTE")
    lengths = tf.strings.length(clipped, unit="BYTE")
    # Filler so every string has exactly max_length bytes; positions past the true length are
    # zeroed below, so real NUL bytes (id 1) stay distinguishable from padding.
    padded = tf.strings.substr(clipped + "\0" * max_length, 0, max_length, unit="BYTE")
    raw = tf.reshape(tf.io.decode_raw(padded, tf.uint8), [-1, max_length])
    ids = tf.cast(raw, tf.int32) + 1
    keep = tf.range(max_length)[None, :] < lengths[:, None]
    dense = tf.where(keep, ids, PAD_ID)
    return tf.reshape(dense, tf.concat([shape, [max_length]], 0))


def listops_tokens(source: tf.Tensor) -> tf.Tensor:
    """Splits one ListOps source string into tokens the way the fixed reference does.

    `]` becomes `X` and parentheses are dropped (lra_benchmarks c209b2a, issues #6/#20).
    """
    text = tf.strings.regex_replace(source, r"\]", "X")
    text = tf.strings.regex_replace(text, r"[()]", " ")
    return tf.strings.split(tf.strings.strip(text))


def listops_ids(tokens: tf.Tensor) -> tf.Tensor:
    """Maps a 1-D tensor of ListOps tokens to int32 ids (1..15, 16 for unknown tokens).

    Comparison against a constant vocabulary rather than a lookup table: tables are stateful
    resources, and stateless ops keep the input pipeline checkpointable.
    """
    vocab = tf.constant(LISTOPS_TOKENS)
    hits = tf.equal(tokens[:, None], vocab[None, :])
    ids = tf.cast(tf.argmax(tf.cast(hits, tf.int32), axis=1), tf.int32) + 1
    return tf.where(tf.reduce_any(hits, axis=1), ids, LISTOPS_OOV_ID)


def pad_or_truncate(ids: tf.Tensor, max_length: int) -> tf.Tensor:
    """Truncates a 1-D id tensor to `max_length` and right-pads it with 0."""
    ids = ids[:max_length]
    ids = tf.pad(ids, [[0, max_length - tf.shape(ids)[0]]])
    return tf.ensure_shape(ids, [max_length])
