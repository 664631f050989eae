"""Reformer LSH attention: shared-QK softmax attention inside chunks of hash-sorted tokens."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention

# trax's additive penalty on a token's own key: it keeps weight only when nothing else is allowed.
SELF_PENALTY = 1e5
# trax's `length_normalized` epsilon (on the mean square, hence times key_dim on the norm).
NORM_EPSILON = 1e-6


@register_attention("reformer")
@keras.saving.register_keras_serializable(package="lra_keras")
class ReformerAttention(BaseAttention):
    """Reformer LSH attention: shared-QK attention inside chunks of hash-sorted tokens.

    Each head's projected queries serve as the keys too (shared QK). Per hash round, a random
    rotation `R ~ N(0, 1)` of shape `[key_dim, num_buckets / 2]` gives every token the bucket
    `argmax([q R ; -q R])`, with `num_buckets = 2 * ceil(L / bucket_size)` (always even). The
    tokens are sorted by `(bucket, position)` (padded tokens go to an extra last bucket), cut
    into chunks of `bucket_size`, and each chunk attends to itself and the previous chunk (the
    first chunk's previous one is the last, as in trax; a single chunk attends only to itself).
    The logits are those of trax (keys length-normalised, no further `1/sqrt(key_dim)`):

        logit(i, j) = q_i . q_j / sqrt(||q_j||^2 + 1e-6 * key_dim)

    minus 1e5 when j = i (a token attends to itself only when nothing else is allowed) and 1e9
    for padded or (causally) later keys. Each round keeps its rows' log-sum-exp; the outputs are
    unsorted and the `num_hashes` rounds combined with weights `softmax_r(lse_r(i))`. A key
    repeated across rounds is not deduplicated (as trax). Time and memory are
    O(num_hashes * L * bucket_size) plus an O(num_hashes * L log L) sort and the hashing matmul,
    O(num_hashes * L * key_dim * L / bucket_size). With `bucket_size >= L` (two buckets, one
    chunk) it is exactly dense shared-QK attention with that self rule.

    Random rotations: in training, drawn afresh on every call from the layer's
    `seed_generator` (shared across the batch); at inference, a fixed draw made at build from
    `seed` and stored as the non-trainable weight `inference_rotations`, so predictions are
    deterministic and survive saving and reloading. That draw is sized for the length the layer
    is built with (a static length is needed); a shorter sequence uses a slice of it, a longer
    one raises a `ValueError`.

    The base's `key` projection is kept, so that `load_mha_weights` copies a
    MultiHeadAttention's four projections unchanged, but it is not used: keys are the queries
    (its weights get a zero gradient, not None).
    The permutations that sort and unsort the tokens are gathers whose gradient gathers with the
    inverse permutation (`attention_utils.gather_permutation`), not a scatter. Self-attention
    only.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query (= key) and, by default, value.
        num_hashes: int. Hash rounds (default 2; LRA's text setting 1).
        bucket_size: int. Chunk length (default 64); the number of buckets is
            `2 * ceil(L / bucket_size)`.
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention` (`key`, when given, only feeds the unused key projection).
        `use_causal_mask=True` masks keys by their original positions (j <= i). It is causally
        masked but not strictly causal (`strictly_causal = False`): a later token can change
        the buckets and hence which earlier tokens share a chunk.

    Returns:
        `[batch, L, output_dim]`, zero at padded query positions.

    Masking: padded keys (from `value_mask`/`key_mask`) and the internal padding of the last
    chunk go to an extra last bucket, after every real token, and get a -1e9 bias, so they
    change neither the real tokens' order nor their chunks; padded query rows are zero and a
    fully padded row is zero and finite. Attention dropout applies to each round's chunk
    probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import ReformerAttention
    >>> layer = ReformerAttention(num_heads=2, key_dim=8, num_hashes=2, bucket_size=4, seed=0)
    >>> x = np.random.rand(2, 13, 16).astype("float32")
    >>> mask = np.arange(13)[None, :] < np.array([[13], [9]])
    >>> tuple(layer(x, x, query_mask=mask, value_mask=mask, use_causal_mask=True).shape)
    (2, 13, 16)

    Reference:
        Kitaev et al., "Reformer: The Efficient Transformer", ICLR 2020 (and trax's
        `LSHSelfAttention`).
    """

    supports_causal = True
    strictly_causal = False
    supports_cross_attention = False
    needs_static_length = True
    static_length_argument = (
        "`bucket_size` (its inference-time rotations are drawn for 2 * ceil(L / "
        "bucket_size) buckets)"
    )

    def __init__(
        self, num_heads: int, key_dim: int, num_hashes: int = 2, bucket_size: int = 64, **kwargs
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        self.num_hashes = attention_utils.checked_int(num_hashes, "num_hashes", "ReformerAttention")
        self.bucket_size = attention_utils.checked_int(
            bucket_size, "bucket_size", "ReformerAttention"
        )
        self.inference_rotations = None

    def num_buckets(self, length: int) -> int:
        """Buckets per hash round at sequence length `length`: `2 * ceil(L / bucket_size)`."""
        return 2 * (-(-int(length) // self.bucket_size))

    def _build_variant(self, query_shape, value_shape):
        length = query_shape[1]
        if length is None:
            raise ValueError(
                "ReformerAttention needs a static sequence length at build (its inference-time "
                f"rotations are drawn for 2 * ceil(L / bucket_size) buckets); got query shape "
                f"{tuple(query_shape)}. Give the input a fixed length, e.g. keras.Input((L, dim))."
            )
        shape = (self.num_heads, self.key_dim, self.num_hashes, self.num_buckets(length) // 2)
        seed = attention_utils.structure_seed(self.seed)
        draw = np.random.default_rng(seed).standard_normal(shape).astype("float32")
        # Initialised from the draw (not assigned afterwards), so a layer first built inside a
        # traced function does not re-assign it on every step; never autocast, so a mixed
        # precision layer hashes with the same rotations as a float32 one.
        self.inference_rotations = self.add_weight(
            name="inference_rotations",
            shape=shape,
            dtype="float32",
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(draw, "float32"),
            trainable=False,
            autocast=False,
        )

    def _rotations(self, half_buckets: int, training):
        """`[heads, key_dim, num_hashes, half_buckets]` float32 rotations for this call."""
        shape = (self.num_heads, self.key_dim, self.num_hashes, half_buckets)
        if training:
            return keras.random.normal(shape, seed=self.seed_generator, dtype="float32")
        built = int(self.inference_rotations.shape[-1])
        if half_buckets > built:
            raise ValueError(
                f"ReformerAttention was built for at most {2 * built} buckets (a sequence of at "
                f"most {built * self.bucket_size} tokens at bucket_size={self.bucket_size}), but "
                f"this call needs {2 * half_buckets}; build the layer at the longest length."
            )
        return ops.cast(self.inference_rotations, "float32")[..., :half_buckets]

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        del query, query_mask  # Padded query rows are zeroed by the base.
        length = attention_utils.static_length(q, 1, "ReformerAttention")
        # Shared QK: k is unused. Adding the sum of an empty slice of it (exactly 0, never NaN)
        # gives the key projection a zero gradient instead of None, which optimizers warn
        # about and gradient accumulation trips on.
        q = q + ops.cast(ops.sum(k[:, :0]), q.dtype)
        heads, hashes, d = self.num_heads, self.num_hashes, self.key_dim
        num_buckets = self.num_buckets(length)
        c = min(self.bucket_size, length)
        rotations = self._rotations(num_buckets // 2, training)

        q = attention_utils.pad_axis_to_multiple(
            attention_utils.heads_first(attention_utils.to_float32(q)), 2, c
        )
        v = attention_utils.pad_axis_to_multiple(
            attention_utils.heads_first(attention_utils.to_float32(v)), 2, c
        )
        mask = attention_utils.pad_axis_to_multiple(key_mask, 1, c, value=False)  # [B, Lp]
        padded_length = int(q.shape[2])
        num_chunks = padded_length // c
        if (num_buckets + 1) * padded_length >= 2**31:
            raise ValueError(
                f"ReformerAttention: a sequence of {length} tokens at bucket_size="
                f"{self.bucket_size} overflows the int32 sort key; use a larger bucket_size."
            )

        # Hash: [B, H, n_h, Lp] buckets; padded tokens (and the chunk padding) last.
        rotated = ops.einsum("bhld,hdrn->bhrln", ops.stop_gradient(q), rotations)
        buckets = ops.cast(ops.argmax(ops.concatenate([rotated, -rotated], -1), axis=-1), "int32")
        buckets = ops.where(mask[:, None, None, :], buckets, num_buckets)
        positions = ops.arange(padded_length, dtype="int32")
        order = ops.stop_gradient(ops.argsort(buckets * padded_length + positions, axis=-1))
        inverse = ops.stop_gradient(ops.argsort(order, axis=-1))

        # Sort q and v together (one gather); sorted positions are the sort order itself.
        qv = ops.repeat(ops.concatenate([q, v], -1)[:, :, None], hashes, axis=2)
        sqv = attention_utils.gather_permutation(qv, order[..., None], inverse[..., None], axis=3)
        smask = ops.take_along_axis(mask[:, None, None, :], order, axis=3)

        def chunks(x):
            return ops.reshape(x, (-1, heads, hashes, num_chunks, c) + tuple(x.shape[4:]))

        def with_previous(x):
            # Keys of each chunk: itself, then the previous chunk (cyclically, as trax).
            if num_chunks == 1:
                return x
            previous = ops.roll(x, 1, axis=3)
            return ops.concatenate([x, previous], axis=4)

        # Split and roll rather than slices: a strided slice's gradient pads a full-size zero
        # tensor per slice, which was the largest single cost of the backward pass on CPU.
        sq, sv = (chunks(x) for x in ops.split(sqv, [d], axis=-1))
        sk = sq * ops.rsqrt(ops.sum(ops.square(sq), -1, keepdims=True) + NORM_EPSILON * d)
        qpos = chunks(order)
        kpos, kmask = with_previous(qpos), with_previous(chunks(smask))
        sk, sv = with_previous(sk), with_previous(sv)

        # [B, H, n_h, chunks, c, keys] in float32.
        logits = ops.einsum("bhrnqd,bhrnkd->bhrnqk", sq, sk)
        allowed = kmask[..., None, :]
        if causal:
            allowed = ops.logical_and(allowed, kpos[..., None, :] <= qpos[..., None])
        is_self = ops.cast(kpos[..., None, :] == qpos[..., None], "float32")
        logits = logits + attention_utils.mask_to_bias(allowed) - SELF_PENALTY * is_self
        lse = ops.logsumexp(logits, axis=-1, keepdims=True)
        probs = attention_utils.to_float32(self._dropout_probs(ops.exp(logits - lse), training))
        out = ops.einsum("bhrnqk,bhrnkd->bhrnqd", probs, sv)

        # Unsort output and lse together, then weigh the rounds by softmax_r(lse_r).
        out = ops.concatenate([out, lse], -1)
        out = ops.reshape(out, (-1, heads, hashes, padded_length, int(out.shape[-1])))
        out = attention_utils.gather_permutation(out, inverse[..., None], order[..., None], axis=3)
        out, lse = ops.split(out, [int(out.shape[-1]) - 1], axis=-1)
        if hashes > 1:
            out = ops.sum(out * ops.softmax(lse, axis=2), axis=2)
        else:
            out = ops.squeeze(out, axis=2)
        if padded_length != length:
            out = out[:, :, :length]
        return attention_utils.heads_last(out)

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Per round: each (padded) query scores its chunk and the previous one (2 *
        bucket_size keys; bucket_size when one chunk covers the sequence), plus the hashing
        matmul `key_dim x num_buckets / 2`, which grows with L / bucket_size (causal masking
        skips nothing)."""
        del key_length, causal
        c = min(self.bucket_size, query_length)
        padded = -(-query_length // c) * c
        keys = c if padded == c else 2 * c
        attend = self.num_hashes * self._pair_flops(batch, padded, keys)
        half_buckets = self.num_buckets(query_length) // 2
        hashing = 2 * batch * self.num_heads * padded * self.key_dim * self.num_hashes
        return int(attend + hashing * half_buckets)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"num_hashes": self.num_hashes, "bucket_size": self.bucket_size})
        return config
