"""A data set of points with a fixed capacity: the runner's "statistics" for models that keep their data.

A Gaussian mixture fitted by EM or a kernel density estimate has no fixed-size sufficient
statistic, so its data set itself is what the runner carries. Inside one ``lax.scan`` shapes
are fixed, so a :class:`Pool` holds up to ``capacity`` points and a count; rows past the
count are unused. ``replace`` and ``mix`` need a capacity of M, ``accumulate`` and
``accumulate-subsample`` one of M times the number of generations + 1.

The pool also carries the key of the random numbers its fit may use (EM's k-means++
seeding), so a fit stays a function of its data set: the key comes with the points that were
drawn last.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from .runner import StatsModel


class Pool(NamedTuple):
    x: jax.Array  # (capacity, d); rows at or past ``count`` are unused
    count: jax.Array  # int32, the number of points held
    key: jax.Array  # raw key data (uint32[2]) for the fit's own random numbers


def pool_of(key: jax.Array, x_MxD: jax.Array, capacity: int) -> Pool:
    m = x_MxD.shape[0]
    if m > capacity:
        raise ValueError(f"{m} points do not fit a pool of capacity {capacity}")
    x = jnp.zeros((capacity, x_MxD.shape[1]), x_MxD.dtype).at[:m].set(x_MxD)
    return Pool(x, jnp.asarray(m, jnp.int32), jax.random.key_data(key))


def weights(pool: Pool) -> jax.Array:
    """1 for the rows held, 0 for the unused ones."""
    return (jnp.arange(pool.x.shape[0]) < pool.count).astype(pool.x.dtype)


def merge(a: Pool, b: Pool) -> Pool:
    """b's points after a's, in a's capacity (the pooled count must fit); the key is b's."""
    rows = jnp.arange(a.x.shape[0]) - a.count  # row i of the result is b's row i − count_a
    from_b = (rows >= 0) & (rows < b.count)
    x = jnp.where(from_b[:, None], b.x[jnp.clip(rows, 0, b.x.shape[0] - 1)], a.x)
    return Pool(x, a.count + b.count, b.key)


def subsample(key: jax.Array, pool: Pool, m: int) -> Pool:
    """m of the pool's points, drawn uniformly without replacement, in a pool of capacity m."""
    key_rows, key_fit = jax.random.split(key)
    u = jax.random.uniform(key_rows, (pool.x.shape[0],))
    _, rows = jax.lax.top_k(jnp.where(weights(pool) > 0, u, -1.0), m)  # the m largest uniforms among held rows
    return Pool(pool.x[rows], jnp.asarray(m, jnp.int32), jax.random.key_data(key_fit))


def data_model(fit: Callable, sample: Callable, capacity: int) -> StatsModel:
    """A runner model whose data set is a :class:`Pool`: ``sample(key, params, m) -> (m, d)`` points."""

    def sample_stats(key, params, m):
        key_points, key_fit = jax.random.split(key)
        return pool_of(key_fit, sample(key_points, params, m), capacity)

    return StatsModel(fit=fit, sample_stats=sample_stats, merge=merge, subsample=subsample)
