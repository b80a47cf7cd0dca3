"""Spread the seed (or batch) axis over every available device.

On one device this is a no-op. On several (GPUs, TPU cores, or CPU devices forced
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``) the leading axis is
split evenly and ``jit`` runs each shard where it lives.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec


def leading_axis_sharding(axis_name: str = "seeds") -> NamedSharding:
    # Auto axes: the compiler propagates the sharding. (Explicit axes, the default of
    # make_mesh in recent JAX, make gathers under vmap fail outside a mesh context.)
    mesh = jax.make_mesh((jax.device_count(),), (axis_name,), axis_types=(AxisType.Auto,))
    return NamedSharding(mesh, PartitionSpec(axis_name))


def shard_leading_axis(tree, axis_name: str = "seeds"):
    """Place every leaf's leading axis across all devices (its length must divide evenly)."""
    if jax.device_count() == 1:
        return tree
    return jax.device_put(tree, leading_axis_sharding(axis_name))
