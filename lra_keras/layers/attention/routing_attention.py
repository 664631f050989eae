"""Routing attention: online k-means clusters for the routing heads, local blocks for the rest."""

from __future__ import annotations

import math

import keras
from keras import ops

from lra_keras.layers.attention import attention_utils
from lra_keras.layers.attention.base_attention import BaseAttention
from lra_keras.layers.attention.registry import register_attention

_EPS = 1e-6


@register_attention("routing")
@keras.saving.register_keras_serializable(package="lra_keras")
class RoutingAttention(BaseAttention):
    """Routing Transformer attention: routing heads attend within online (spherical) k-means
    clusters, local heads within contiguous blocks, and every real query gets an output in
    every head.

    As in the paper's configurations, the first `local_heads` heads are local attention heads
    and the other `R = num_heads - local_heads` heads are routing heads. With `C` clusters and
    `w = ceil(L / C)` tokens per cluster:

    1. Local heads: the sequence is cut into contiguous blocks of `w` tokens (the last one
       padded internally) and each query attends to the keys of its own block (with
       `use_causal_mask=True`, to those not after it).
    2. Routing heads (Algorithm 1 of the paper): queries and keys are normalised to unit norm
       (`x_hat`, used only for routing); each centroid `mu_c` takes its top-w queries and,
       separately, its top-w keys by `x_hat . mu_c` (QK not shared; padded tokens score -1e9,
       so they are picked only when fewer than w real tokens are left, and are then masked
       out). The w queries of cluster c attend with a float32 softmax to the w keys of cluster
       c, with the raw logits `q . k / sqrt(key_dim)` (as `full`, so one cluster is exactly
       full attention); causally, a key is allowed when its position is not after the query's.
       Outputs are scatter-added back to positions and averaged over the clusters a query
       landed in.
    3. A query that no centroid picked (or that has no allowed key in any of its clusters)
       would get zero in a routing head; it gets its local block's attention (step 1) in that
       head instead. The paper leaves such rows at zero and relies on the local heads; the
       fallback makes every (token, head) output non-zero, even with `local_heads=0`.

    The default `local_heads=None` means `num_heads // 2`: the paper's enwik8 (4 local + 4
    routing heads) and Wikitext-103 (8 + 8) configurations split the heads in half. With one
    cluster and `local_heads=0`, the layer is exactly `full` attention.

    Centroids are a non-trainable `[R, C, key_dim]` float32 weight `centroids` (C fixed at
    build: `num_clusters`, or `max(1, round(sqrt(L)))` from the build length), drawn from a
    seeded normal and normalised. In training only, they move by an exponential moving
    average, without gradient: `mu_c <- ema_decay * mu_c + (1 - ema_decay) * mean_c`, where
    `mean_c` averages the unit queries and keys routed to cluster c over the real tokens of the
    whole (global) batch; a cluster with no real token keeps its centroid. The batch sums and
    counts go through two non-trainable scratch weights (`centroid_sums`, `centroid_counts`)
    with `aggregation="sum"`, so under `tf.distribute` each replica assigns its local sums,
    reads back the sums over all replicas, and every replica applies the same update: exactly
    the single-device update on the concatenated batch; they are zeroed again after each
    update. A batch with a non-finite routing vector at a real position (a NaN or inf input)
    updates no centroid, on any replica; its output still carries the non-finite values. The
    commitment loss `commitment_weight * mean ||x_hat - mu||^2` over the routed real queries
    and keys is added with `add_loss` (training only; gradients reach the projections, not the
    centroids).

    The length may be unknown at build (`keras.Input((None, dim))`) when `num_clusters` is
    set: w and the block padding come from `ops.shape`. Time is O(L * C * d + L * w * d) =
    O(L^1.5 d) at C = sqrt(L). Causally masked but not strictly causal
    (`strictly_causal = False`): a later token can displace an earlier one from a cluster's
    top-w. Self-attention only.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        num_clusters: int or None. Clusters per routing head; None (default) means
            `max(1, round(sqrt(L)))` for the length the layer is built at.
        local_heads: int or None. Heads that attend locally (0 <= local_heads < num_heads);
            None (default) means `num_heads // 2`, as in the paper.
        ema_decay: float in [0, 1). Centroid moving-average decay (default 0.999).
        commitment_weight: float >= 0. Weight of the commitment loss (default 1e-4).
        **kwargs: the remaining `BaseAttention` (MultiHeadAttention) arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, training, use_causal_mask: as
        `BaseAttention`. `training=True` updates the centroids and adds the commitment loss.

    Returns:
        `[batch, L, output_dim]`, zero at padded query positions.

    Masking: padded tokens take part neither in the top-w selection (unless too few real
    tokens remain, and then they are masked) nor in the centroid update nor in the commitment
    loss; padded keys get a -1e9 bias in each cluster's and block's softmax; padded query rows
    are zero. Attention dropout applies to the cluster and block probabilities.

    Example:

    >>> import numpy as np
    >>> from lra_keras.layers import RoutingAttention
    >>> layer = RoutingAttention(num_heads=2, key_dim=8, num_clusters=3)
    >>> layer.local_heads
    1
    >>> x = np.random.rand(2, 10, 16).astype("float32")
    >>> tuple(layer(x, x, use_causal_mask=True).shape)
    (2, 10, 16)

    Reference:
        Roy et al., "Efficient Content-Based Sparse Attention with Routing Transformers",
        TACL 2021.
    """

    supports_causal = True
    strictly_causal = False
    supports_cross_attention = False
    needs_static_length = False

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        num_clusters: int | None = None,
        local_heads: int | None = None,
        ema_decay: float = 0.999,
        commitment_weight: float = 1e-4,
        **kwargs,
    ):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        name = "RoutingAttention"
        self.num_clusters = attention_utils.checked_int(
            num_clusters, "num_clusters", name, allow_none=True
        )
        if local_heads is None:
            local_heads = self.num_heads // 2
        self.local_heads = attention_utils.checked_int(local_heads, "local_heads", name, minimum=0)
        if self.local_heads >= self.num_heads:
            raise ValueError(
                f"{name}: `local_heads` must be < num_heads = {self.num_heads} (at least one "
                f"routing head; use the `local` variant for local attention only), got "
                f"{local_heads!r}."
            )
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"{name}: `ema_decay` must be in [0, 1), got {ema_decay!r}.")
        if float(commitment_weight) < 0.0:
            raise ValueError(
                f"{name}: `commitment_weight` must be >= 0, got {commitment_weight!r}."
            )
        self.ema_decay = float(ema_decay)
        self.commitment_weight = float(commitment_weight)

    @property
    def routing_heads(self) -> int:
        return self.num_heads - self.local_heads

    @staticmethod
    def default_num_clusters(length: int) -> int:
        """`max(1, round(sqrt(L)))`, the paper's cluster count."""
        return max(1, int(round(math.sqrt(length))))

    def _build_variant(self, query_shape, value_shape):
        clusters = self.num_clusters
        if clusters is None:
            length = query_shape[1]
            if length is None:
                raise ValueError(
                    "RoutingAttention with num_clusters=None needs a static sequence length at "
                    f"build (C = round(sqrt(L))); got query shape {tuple(query_shape)}. Give "
                    "the input a fixed length, or set `num_clusters`."
                )
            clusters = self.default_num_clusters(int(length))
        shape = (self.routing_heads, clusters, self.key_dim)
        # A seeded (or keras.utils.set_random_seed-seeded) stateless draw: it also works when
        # the layer builds inside a tf.distribute replica function.
        draw = keras.initializers.RandomNormal(
            stddev=1.0, seed=None if self.seed is None else int(self.seed) + 1000
        )

        def unit_normal(shape, dtype=None):
            x = draw(shape, dtype="float32")
            return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))

        self.centroids = self.add_weight(
            name="centroids",
            shape=shape,
            dtype="float32",
            initializer=unit_normal,
            trainable=False,
            autocast=False,
            aggregation="mean",
        )
        self.centroid_sums = self.add_weight(
            name="centroid_sums",
            shape=shape,
            dtype="float32",
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="sum",
        )
        self.centroid_counts = self.add_weight(
            name="centroid_counts",
            shape=shape[:2],
            dtype="float32",
            initializer="zeros",
            trainable=False,
            autocast=False,
            aggregation="sum",
        )

    # ----------------------------------------------------------------- pieces

    @staticmethod
    def _unit(x):
        x = attention_utils.to_float32(x)
        return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + _EPS**2)

    def _route(self, x_hat, mask, w):
        """Top-w positions per centroid: `[B, R, C, w]` int, from unit `x_hat` `[B, R, L, d]`."""
        mu = ops.stop_gradient(ops.cast(self.centroids, "float32"))
        scores = ops.einsum("bhld,hcd->bhcl", ops.stop_gradient(x_hat), mu)
        scores = ops.where(mask[:, None, None, :], scores, attention_utils.NEG_INF)
        _, index = ops.top_k(scores, w)
        return index

    @staticmethod
    def _all_real_finite(x_hat, mask):
        """Whether `x_hat` `[B, R, L, d]` is finite at every real position of `mask` `[B, L]`."""
        return ops.all(ops.logical_or(ops.isfinite(x_hat), ~mask[:, None, :, None]))

    @staticmethod
    def _gather(x, index):
        """x `[B, R, L, ...]`, index `[B, R, C, w]` -> `[B, R, C, w, ...]` (shapes may be dynamic).

        One `take` of whole rows on the flattened `[B * R * L, ...]` tensor.
        """
        shape = ops.shape(x)
        ishape = ops.shape(index)
        trailing = tuple(x.shape[3:])
        rows = ops.reshape(ops.arange(shape[0] * shape[1]) * shape[2], (shape[0], shape[1], 1, 1))
        flat = ops.reshape(index + ops.cast(rows, index.dtype), (-1,))
        out = ops.take(ops.reshape(x, (-1,) + trailing), flat, axis=0)
        return ops.reshape(out, tuple(ishape) + trailing)

    def _update_centroids(self, members: list, finite):
        """EMA update from (unit vectors `[B, R, C, w, d]`, real `[B, R, C, w]`) pairs.

        `finite` (a boolean scalar) says whether every real routing vector of the local batch
        is finite; when it is not, no centroid moves on any replica.
        """
        sums = 0.0
        counts = 0.0
        for x_hat, real in members:
            real = ops.cast(real, "float32")
            sums = sums + ops.einsum("bhcwd,bhcw->hcd", ops.stop_gradient(x_hat), real)
            counts = counts + ops.sum(real, axis=(0, 3))
        # A non-finite token need not be routed (top_k places NaN scores first on one backend,
        # last on another) yet it has already moved the others' top-w: the NaN added here
        # marks the whole batch, and survives the all-reduce to reach every replica.
        sums = sums + ops.where(finite, 0.0, float("nan"))
        # Under tf.distribute these assigns all-reduce (aggregation="sum"): the values read
        # back are the global batch's, so every replica computes the same update.
        self.centroid_sums.assign(sums)
        self.centroid_counts.assign(counts)
        sums = ops.convert_to_tensor(self.centroid_sums)
        counts = ops.convert_to_tensor(self.centroid_counts)
        # The sums are the global batch's, so one non-finite batch on any replica makes them
        # non-finite on every replica, and all of them skip the same update: a NaN folded into
        # a centroid would stay there for good and route every later clean batch wrongly.
        finite = ops.all(ops.isfinite(sums))
        mean = sums / ops.maximum(counts, 1.0)[..., None]
        mu = ops.convert_to_tensor(self.centroids)
        moved = self.ema_decay * mu + (1.0 - self.ema_decay) * mean
        update = ops.logical_and(counts > 0, finite)[..., None]
        self.centroids.assign(ops.where(update, moved, mu))
        # The scratch weights are emptied again (zeros all-reduce to zeros), so that they hold
        # no batch's values between calls: a non-finite batch leaves every weight as it was.
        self.centroid_sums.assign(ops.zeros_like(sums))
        self.centroid_counts.assign(ops.zeros_like(counts))

    def _commitment_loss(self, members: list):
        mu = ops.stop_gradient(ops.cast(self.centroids, "float32"))[None, :, :, None, :]
        total = 0.0
        count = 0.0
        for x_hat, real in members:
            real = ops.cast(real, "float32")
            total = total + ops.sum(ops.sum(ops.square(x_hat - mu), axis=-1) * real)
            count = count + ops.sum(real)
        return self.commitment_weight * total / ops.maximum(count, 1.0)

    def _local(self, qh, kh, vh, key_mask, causal, clusters, w, length, training):
        """Attention within contiguous blocks of w tokens, all heads: `[B, H, L, dv]` float32.

        The sequence is padded to `clusters * w >= L` tokens (the padding is a key mask of
        False), so the block count is the static `clusters` even when L is dynamic.
        """
        extra = clusters * w - length

        def blocks(x):
            x = ops.pad(x, [[0, 0], [0, 0], [0, extra], [0, 0]])
            return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], clusters, w, x.shape[-1]))

        scale = ops.cast(1.0 / math.sqrt(self.key_dim), qh.dtype)
        qb, kb, vb = blocks(qh * scale), blocks(kh), blocks(vh)
        mb = ops.pad(key_mask, [[0, 0], [0, extra]], constant_values=False)
        allowed = ops.reshape(mb, (ops.shape(mb)[0], 1, clusters, 1, w))
        if causal:
            i = ops.arange(w)
            allowed = ops.logical_and(allowed, i[None, :] <= i[:, None])
        logits = ops.einsum("bhnqd,bhnkd->bhnqk", qb, kb)
        probs = self._dropout_probs(attention_utils.masked_softmax(logits, allowed), training)
        out = attention_utils.to_float32(ops.einsum("bhnqk,bhnkd->bhnqd", probs, vb))
        out = ops.reshape(out, (ops.shape(out)[0], ops.shape(out)[1], clusters * w, -1))
        return out[:, :, :length]

    def _attend(self, q, k, v, *, query, query_mask, key_mask, causal, training):
        del query
        static = q.shape[1]
        length = int(static) if static is not None else ops.shape(q)[1]
        clusters = int(self.centroids.shape[1])
        # ceil(L / C) <= L, so w never exceeds the sequence.
        w = -(-length // clusters)
        qh, kh, vh = (attention_utils.heads_first(x) for x in (q, k, v))
        local = self._local(qh, kh, vh, key_mask, causal, clusters, w, length, training)

        lh = self.local_heads
        qh, kh, vh = qh[:, lh:], kh[:, lh:], vh[:, lh:]
        heads = self.routing_heads
        q_hat, k_hat = self._unit(qh), self._unit(kh)
        q_index = self._route(q_hat, query_mask, w)  # [B, R, C, w]
        k_index = self._route(k_hat, key_mask, w)

        def per_head(mask):
            return ops.repeat(mask[:, None, :], heads, axis=1)

        qg, kg, vg = self._gather(qh, q_index), self._gather(kh, k_index), self._gather(vh, k_index)
        q_real = self._gather(per_head(query_mask), q_index)  # [B, R, C, w]
        k_real = self._gather(per_head(key_mask), k_index)
        scale = ops.cast(1.0 / math.sqrt(self.key_dim), qg.dtype)
        logits = ops.einsum("bhcqd,bhckd->bhcqk", qg * scale, kg)
        allowed = k_real[:, :, :, None, :]
        if causal:
            allowed = ops.logical_and(
                allowed, k_index[:, :, :, None, :] <= q_index[:, :, :, :, None]
            )
        has_key = ops.any(ops.broadcast_to(allowed, ops.shape(logits)), axis=-1)  # [B,R,C,w]
        probs = attention_utils.masked_softmax(logits, allowed)
        probs = self._dropout_probs(probs, training)
        out = ops.einsum("bhcqk,bhckd->bhcqd", probs, vg)
        landed = ops.cast(has_key, "float32")
        out = attention_utils.to_float32(out) * landed[..., None]

        # Scatter-add cluster outputs (and how many clusters each query landed in) back to
        # positions; duplicate indices add up.
        ones = ops.ones_like(q_index)
        b_ids = ops.cumsum(ones, axis=0) - 1
        h_ids = ops.cumsum(ones, axis=1) - 1
        indices = ops.reshape(ops.stack([b_ids, h_ids, q_index], axis=-1), (-1, 3))
        dv = int(vh.shape[-1])
        batch = ops.shape(qh)[0]
        summed = ops.scatter(indices, ops.reshape(out, (-1, dv)), (batch, heads, length, dv))
        landings = ops.scatter(indices, ops.reshape(landed, (-1,)), (batch, heads, length))
        routed = summed / ops.maximum(landings, 1.0)[..., None]
        # Queries no cluster served fall back to their local block (see the docstring).
        routed = ops.where((landings > 0)[..., None], routed, local[:, lh:])
        result = ops.concatenate([local[:, :lh], routed], axis=1) if lh else routed

        if training:
            members = [
                (self._gather(q_hat, q_index), q_real),
                (self._gather(k_hat, k_index), k_real),
            ]
            if self.commitment_weight > 0.0:
                self.add_loss(self._commitment_loss(members))
            finite = ops.logical_and(
                self._all_real_finite(q_hat, query_mask), self._all_real_finite(k_hat, key_mask)
            )
            self._update_centroids(members, finite)
        return attention_utils.heads_last(ops.cast(result, q.dtype))

    def attention_flops(self, batch, query_length, key_length, causal=False):
        """Routing scores (L * C * d for queries and keys), C clusters of w x w pairs per
        routing head, and C blocks of w x w pairs in every head (the local heads, and the
        routing heads' fallback).

        With `num_clusters=None`, C = round(sqrt(L)) for a layer built at this length, so the
        count grows as L^1.5 (2.83x per doubling).
        """
        length = int(query_length)
        clusters = self.num_clusters or self.default_num_clusters(length)
        w = -(-length // clusters)
        per_pair = 2 * (self.key_dim + self.value_dim)
        routing = 2 * self.routing_heads * 2 * length * clusters * self.key_dim
        pairs = (self.routing_heads + self.num_heads) * clusters * w * w
        return int(batch * (routing + pairs * per_pair))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_clusters": self.num_clusters,
                "local_heads": self.local_heads,
                "ema_decay": self.ema_decay,
                "commitment_weight": self.commitment_weight,
            }
        )
        return config
