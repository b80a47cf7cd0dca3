"""Spread the seed (or batch) axis over every available device.

On one device this is a no-op. On several (GPUs, TPU cores, or CPU devices forced
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``) the leading axis is
split evenly and ``jit`` runs each shard where it lives. :func:`map_batches` is the one
loop that applies a jitted function to many rows a batch at a time (padded, sharded).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from tqdm import tqdm

from .distributed import to_host


def leading_axis_sharding(axis_name: str = "seeds") -> NamedSharding:
    # Auto axes: the compiler propagates the sharding. (Explicit axes, the default of
    # make_mesh in recent JAX, make gathers under vmap fail outside a mesh context.)
    mesh = jax.make_mesh((jax.device_count(),), (axis_name,), axis_types=(AxisType.Auto,))
    return NamedSharding(mesh, PartitionSpec(axis_name))


def shard_leading_axis(tree, axis_name: str = "seeds"):
    """Place every leaf's leading axis across all devices (its length must divide evenly).

    Across processes (:mod:`collapse.distributed`) every process passes the same whole value
    and keeps the rows of its own devices.
    """
    if jax.device_count() == 1:
        return tree
    sharding = leading_axis_sharding(axis_name)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):  # keys travel as their raw words
            words = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(words, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    return jax.tree.map(one, tree)


def round_to_devices(n: int) -> int:
    """``n`` rounded up to a multiple of the device count, so every device gets equal work."""
    return -(-n // jax.device_count()) * jax.device_count()


def map_batches(fn, rows_N, batch_size: int, *, pad: bool = False, shard: bool = False, progress: bool = False,
                desc: str | None = None) -> np.ndarray:
    """``fn(b, rows_B)`` over consecutive batches of ``rows_N``, results concatenated (``N × …``).

    ``b`` is the batch's index (to fold into a key). With ``pad``, the last batch is filled
    up with copies of its last row, so one shape compiles; the copies' results are dropped.
    With ``shard``, the batch size is rounded up to a multiple of the device count and
    every batch is sharded over the devices on its leading axis (padding is then implied).
    Row-wise functions give the same numbers either way.
    """
    n = len(rows_N)
    batch = min(batch_size, n)
    if shard:
        batch, pad = round_to_devices(batch), True
    out = []
    starts = range(0, n, batch)
    for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False)):
        rows = rows_N[start : start + batch]
        if pad and len(rows) < batch:
            rows = np.concatenate([rows, np.repeat(rows[-1:], batch - len(rows), axis=0)])
        if shard:
            rows = shard_leading_axis(jnp.asarray(rows), "batch")
        out.append(to_host(fn(b, rows))[: min(batch, n - start)])
    return np.concatenate(out)
