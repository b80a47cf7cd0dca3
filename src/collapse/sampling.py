"""Exact counts: binomial and multinomial draws.

``multinomial(key, w, m)``, the counts of m i.i.d. draws from ``w / w.sum()``, has two exact
algorithms, chosen from the static (K, m):

* **binomial splitting**, O(K): the m draws go down a binary tree over the K states; a node
  holding n draws sends ``Binomial(n, W_left / W_node)`` of them to its left half (W: the
  weight under a node), the rest to its right half. Conditioning on each node's count makes
  this the multinomial law exactly; each of the log2 K levels is one vectorised binomial over
  the level's nodes, K - 1 binomials in all, whatever m.
* **sorted uniforms**, O(m): m order statistics of uniforms (normalised exponential spacings)
  cut at the CDF.

``binomial`` draws by inversion where the mean is small (a walk up the pmf from k = 0, one
uniform) and by Hörmann's transformed rejection with squeeze (BTRS) where it is large; both
are exact up to float rounding. Vectorised, each is a loop that runs until the slowest lane
is done, so rejection runs only on the lanes that need it (gathered), and inversion's steps
are fused several at a time.

Why not always split. On a CPU a vectorised binomial is not "cheap arithmetic": a float64
uniform alone costs about 6.5 ns a lane, the pmf's first term 7 ns, and rejection's rounds
repeat until the unluckiest of all lanes is accepted (9 rounds at 512k lanes, about 60 ns a
lane each). Splitting K = 1000 states costs more than m = 1,000 or 10,000 sorted uniforms
(table at SPLITTING_MIN_RATIO), so it is used where it wins: large m per state, and K = 2.

W. Hörmann, "The generation of binomial random variates", J. Stat. Comput. Simul. 46 (1993).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Inversion below this mean, BTRS from it: BTRS's hat is proved for n p >= 10 (Hörmann, 1993).
INVERSION_MAX_MEAN = 10.0
# Where no lane can reach a larger mean (a static bound n_max on n, and q <= 1/2), every lane is
# drawn by inversion: the vectorised rejection loop runs until the unluckiest lane of all is
# accepted, and costs more than inversion's walk up to the largest mean. Measured for K = 2
# multinomials (41,943 chains, float64, 2-core CPU), inversion alone against rejection from mean 10:
# m = 100 290 vs 1,470 ns a chain, m = 200 318 vs 1,020; with rejection's set-up still computed,
# inversion alone took 1,220 vs 1,130 ns at m = 400 and 3,400 vs 1,040 at m = 1,000.
# Float64 only: the walk starts at (1 - q)^n >= 4^(-100), which float32 cannot hold.
INVERSION_ONLY_MAX_MEAN = 100.0
# Inversion steps per loop iteration.
UNROLL = 8
# Binomial splitting costs K - 1 binomials, each a loop over lanes that runs until the slowest
# lane is done; sorted uniforms cost m exponentials and a search. Measured per chain (1,000
# chains, float64, 2-core CPU), splitting is faster from m of about 25-80 K on:
# (K, m) = (10, 10^3) 11.6 vs 13.3 us, (1000, 10^4) 481 vs 271 us, (1000, 10^5) 480 vs 1861 us.
SPLITTING_MIN_RATIO = 50


def _inversion(key, n, q):
    """Binomial(n, q) by sequential search from k = 0, for means n q below INVERSION_MAX_MEAN
    (INVERSION_ONLY_MAX_MEAN in float64 when no lane can exceed it): :func:`_walk` of one uniform a lane."""
    return _walk(jax.random.uniform(key, n.shape, n.dtype), n, q)


@jax.custom_batching.custom_vmap
def _walk(u, n, q):
    """The smallest k with F(k) >= u (or k = n) for Binomial(n, q), lane by lane.

    pmf(k + 1) = pmf(k) (n - k) / (k + 1) · q / (1 - q); the walk stops at the first k with
    F(k) >= u, or at k = n. Every lane still walking after i steps has k = i, so 1 / (k + 1)
    is one number per step; steps go UNROLL at a time, which XLA fuses into one pass over the
    lanes (a while-loop iteration per step was 4x slower at mean 8, 512k lanes). A lane that
    has stopped keeps its k and F(k) while others walk on, so the draws do not depend on which
    lanes share the loop.
    """
    odds = q / (1.0 - q)
    pmf = jnp.exp(n * jnp.log1p(-q))  # (1 - q)^n >= 4^(-n q) for q <= 1/2: 2^-20 at n q < 10, 2^-200 at 100 (float64)

    def walking(state):
        _, k, _, cdf = state
        return jnp.any((u > cdf) & (k < n))

    def steps(state):
        i, k, pmf, cdf = state
        for j in range(UNROLL):
            go = (u > cdf) & (k < n)
            pmf = pmf * ((n - k) * odds * (1.0 / (i + j + 1.0)))
            cdf = jnp.where(go, cdf + pmf, cdf)
            k = k + go
        return i + UNROLL, k, pmf, cdf

    _, k, _, _ = jax.lax.while_loop(walking, steps, (0, jnp.zeros_like(n), pmf, pmf))
    return k


@_walk.def_vmap
def _walk_vmapped(axis_size, in_batched, u, n, q):
    """Under ``vmap`` (the chains) the walk runs once over every chain's lanes, as one array, with one
    step counter and one loop condition. ``vmap``'s own rule for a loop made both per chain and
    selected every carried value per chain at each step: Binomial(100, q) took 913 / 443 / 233 ns a
    lane at q = 0.5 / 0.1 / 0.02 that way, 359 / 166 / 102 ns this way (100,000 chains, 2-core
    CPU), the same draws."""
    u, n, q = (x if batched else jnp.broadcast_to(x, (axis_size, *x.shape)) for x, batched in zip((u, n, q), in_batched))
    return _walk(u, n, q), True


_STIRLING_TAILS = [math.lgamma(k + 1.0) - (k + 0.5) * math.log(k + 1.0) + (k + 1.0) - 0.5 * math.log(2 * math.pi)
                   for k in range(10)]


def _stirling_tail(k):
    """log k! - [(k + 1/2) log(k + 1) - (k + 1) + log(2 pi)/2]: the correction Stirling's formula leaves.

    Exact values for k <= 9, the asymptotic series (terms to 1/k^5) beyond, as in BTRS.
    """
    table = jnp.asarray(_STIRLING_TAILS, k.dtype)
    kp1_sq = (k + 1.0) ** 2
    series = (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / kp1_sq) / kp1_sq) / (k + 1.0)
    return jnp.where(k <= 9, table[jnp.clip(k, 0, 9).astype(jnp.int32)], series)


def _btrs(key, n, q, active):
    """Binomial(n, q) by transformed rejection with squeeze, on the ``active`` lanes (n q >= 10).

    Each round draws (u, v) for every lane still waiting; a candidate k is accepted by the
    squeeze (no logarithm; most rounds), or by comparing log v against log pmf(k) / pmf(mode)
    written with Stirling tails. Inactive lanes get placeholder parameters and are ignored.
    """
    n = jnp.where(active, n, 100.0)
    q = jnp.where(active, q, 0.5)
    spq = jnp.sqrt(n * q * (1.0 - q))
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * q
    c = n * q + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    r = q / (1.0 - q)
    mode = jnp.floor((n + 1.0) * q)
    log_h = ((mode + 0.5) * jnp.log((mode + 1.0) / (r * (n - mode + 1.0))) + _stirling_tail(mode) +
             _stirling_tail(n - mode))

    def waiting(state):
        _, _, done = state
        return jnp.any(~done)

    def step(state):
        i, k, done = state
        u, v = jax.random.uniform(jax.random.fold_in(key, i), (2, *n.shape), n.dtype)
        u = u - 0.5
        us = 0.5 - jnp.abs(u)
        candidate = jnp.floor((2.0 * a / us + b) * u + c)
        squeezed = (us >= 0.07) & (v <= v_r)
        inside = (candidate >= 0) & (candidate <= n)
        kk = jnp.clip(candidate, 0, n)
        log_v = jnp.log(v * alpha / (a / (us * us) + b))
        log_ratio = (log_h + (n + 1.0) * jnp.log((n - mode + 1.0) / (n - kk + 1.0)) +
                     (kk + 0.5) * jnp.log(r * (n - kk + 1.0) / (kk + 1.0)) - _stirling_tail(kk) - _stirling_tail(n - kk))
        accept = ~done & (squeezed | (inside & (log_v <= log_ratio)))
        return i + 1, jnp.where(accept, candidate, k), done | accept

    _, k, _ = jax.lax.while_loop(waiting, step, (0, jnp.zeros_like(n), ~active))
    return k


def binomial(key: jax.Array, n: jax.Array, p: jax.Array, max_large: int | None = None,
             n_max: float | None = None) -> jax.Array:
    """Binomial(n, p) variates, elementwise over a vector; ``n`` holds whole numbers as floats, ``p`` is in [0, 1].

    Exact: p = 0 gives 0, p = 1 gives n, n = 0 gives 0. The result has ``n``'s dtype.
    ``max_large`` (static) bounds how many lanes can have a mean min(p, 1 - p) n of
    INVERSION_MAX_MEAN or more; rejection then runs on that many lanes only (gathered), not on all.
    ``n_max`` (static) bounds ``n``: in float64 with ``n_max / 2`` at most INVERSION_ONLY_MAX_MEAN,
    every lane is drawn by inversion and rejection does not run.
    """
    n, p = jnp.broadcast_arrays(n, jnp.asarray(p, n.dtype))
    flip = p > 0.5
    q = jnp.where(flip, 1.0 - p, p)  # q <= 1/2: the smaller tail, drawn and then reflected
    key_inversion, key_rejection = jax.random.split(key)
    if n_max is not None and n_max / 2 <= INVERSION_ONLY_MAX_MEAN and n.dtype == jnp.float64:
        k = _inversion(key_inversion, n, q)
        return jnp.where(flip, n - k, k)
    large = n * q >= INVERSION_MAX_MEAN
    k = _inversion(key_inversion, jnp.where(large, 0.0, n), q)
    lanes = n.shape[-1]
    if max_large is None or max_large >= lanes:
        k = jnp.where(large, _btrs(key_rejection, n, q, large), k)
    elif max_large > 0:
        (rows,) = jnp.nonzero(large, size=max_large, fill_value=lanes)  # lanes past the last large one: `lanes`
        held = rows < lanes
        n_rows = n.at[rows].get(mode="fill", fill_value=0.0)
        q_rows = q.at[rows].get(mode="fill", fill_value=0.5)
        k_rows = _btrs(key_rejection, n_rows, q_rows, held)
        k = k.at[rows].set(k_rows, mode="drop")
    return jnp.where(flip, n - k, k)


def _spacings(key: jax.Array, weights: jax.Array, m: int) -> jax.Array:
    """Counts of m draws: m sorted uniforms (normalised exponential spacings) cut at the CDF.

    The k-th count is the number of order statistics in [F(k-1), F(k)): no sort, no
    scatter, no loop over states or samples. A state of weight zero has F(k) = F(k-1)
    and gets exactly zero draws, so lost states stay lost.
    """
    dtype = weights.dtype
    cdf = jnp.cumsum(weights) / jnp.sum(weights)
    spacings = jnp.cumsum(jax.random.exponential(key, (m + 1,), dtype))
    uniforms = spacings[:-1] / spacings[-1]  # the order statistics of m i.i.d. uniforms
    below = jnp.searchsorted(uniforms, cdf, side="left", method="scan")
    below = below.at[-1].set(m)  # F(K) = 1 exactly, whatever the rounding of the cumulative sum
    return jnp.diff(below, prepend=0).astype(dtype)


def _splitting(key: jax.Array, weights: jax.Array, m: int) -> jax.Array:
    """Counts of m draws by binomial splitting down a binary tree over the states (see the module notes)."""
    K = weights.shape[-1]
    depth = (K - 1).bit_length()
    w = jnp.pad(weights, (0, 2**depth - K))
    sums = [w]  # sums[j]: the weight under each node of level depth - j
    for _ in range(depth):
        sums.append(sums[-1].reshape(-1, 2).sum(-1))
    sums.reverse()  # sums[level], level 0 the root
    n = jnp.full((1,), m, weights.dtype)
    for level, level_key in enumerate(jax.random.split(key, depth)):
        left, node = sums[level + 1][0::2], sums[level]
        p_left = jnp.where(node > 0, left / jnp.where(node > 0, node, 1.0), 0.0)
        # A node of mean >= 10 holds >= 20 draws (q <= 1/2) and a level's nodes hold m in all.
        n_left = binomial(level_key, n, jnp.minimum(p_left, 1.0), max_large=m // 20, n_max=m)
        n = jnp.stack([n_left, n - n_left], axis=-1).reshape(-1)
    return n[:K]


def multinomial(key: jax.Array, weights: jax.Array, m: int) -> jax.Array:
    """Counts of ``m`` i.i.d. draws from the categorical distribution ``weights / weights.sum()``.

    Exact. ``m`` and the number of states K are static, and the algorithm is chosen from them:
    binomial splitting (K - 1 binomials) when K = 2 or m >= SPLITTING_MIN_RATIO · K, sorted
    uniforms (m exponentials) otherwise. A state of weight 0 gets no draw. Counts come back
    in the dtype of ``weights``.
    """
    K = weights.shape[-1]
    if m == 0 or K == 1:
        return jnp.full_like(weights, m)
    if K == 2 or m >= SPLITTING_MIN_RATIO * K:
        return _splitting(key, weights, m)
    return _spacings(key, weights, m)
