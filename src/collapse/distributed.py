"""Runs across processes and hosts: JAX's multi-controller runtime.

Every process runs the same program (a record entry point such as
``python -m collapse.vae_experiment --profile paper --record``); :func:`initialize`, called
first, joins them into one JAX system whose devices are every process's devices. The runner
and the trainers then shard their chain or batch axis over all of them
(:mod:`collapse.sharding`), and every process gets the whole result back (:func:`to_host`),
so every process continues with the same numbers. One process (index 0) writes files.

A process learns its place from the environment; nothing is set on one machine:

=============================  ===================================================
``JAX_COORDINATOR_ADDRESS``    ``host:port`` of process 0, the same for every process
``JAX_NUM_PROCESSES``          how many processes in all
``JAX_PROCESS_ID``             this process's index, 0 .. ``JAX_NUM_PROCESSES - 1``
``JAX_LOCAL_DEVICE_IDS``       optional: the local devices this process drives
=============================  ===================================================

(On Slurm, Open MPI and Cloud TPU JAX finds them itself; set ``JAX_DISTRIBUTED=1`` there.)
"""

from __future__ import annotations

import os

import jax
import numpy as np


def requested() -> bool:
    """True when the environment asks for a multi-process run."""
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("JAX_DISTRIBUTED"))


def initialize() -> None:
    """Join the processes named by the environment (see the module notes); a no-op otherwise.

    Must run before any JAX computation. On CPU, collectives between processes go over Gloo.
    """
    if not requested() or jax.distributed.is_initialized():
        return
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and (count is None or index is None):
        raise ValueError("JAX_COORDINATOR_ADDRESS is set: set JAX_NUM_PROCESSES and JAX_PROCESS_ID as well")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        num_processes=None if count is None else int(count), process_id=None if index is None else int(index)
    )


def is_writer() -> bool:
    """The process that writes the results store and the records: process 0."""
    return jax.process_index() == 0


def to_host(tree):
    """Every leaf as a NumPy array holding the whole (global) value, on every process."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def agree(flag: bool) -> bool:
    """Process 0's ``flag``, on every process: a decision all processes must take alike
    (whether to load a stored result or compute it, which takes every process)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(bool(flag))))


def load_shared(load, what) -> object:
    """``load()``, of something process 0 found stored (``what``, for the message); a process that
    cannot read it says why."""
    try:
        return load()
    except Exception as error:  # missing, or unreadable here
        raise RuntimeError(
            f"process {jax.process_index()} cannot read {what}, which process 0 stored: a run over several "
            "processes needs its results folder (COLLAPSE_RESULTS_DIR) on a filesystem every process sees"
        ) from error
