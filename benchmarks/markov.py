"""Discrete recursion: the library against a NumPy reference, in one process.

Both simulate the same chains: a Zipf(1) distribution over K states refitted, generation
after generation, to the counts of M draws from the previous fit (``replace``), and both
record the number of surviving states of every chain at every generation.

* Reference: ``rng.multinomial(M, p)`` per generation, vectorised over chains (NumPy's
  conditional-binomial sampler, in C).
* Library: the shared runner (``lax.scan`` over generations, ``vmap`` over chains,
  sharded over devices) with ``collapse.sampling.multinomial``: sorted uniforms cut at
  the CDF for M < 50 K, binomial splitting otherwise (and for K = 2); float64.

Throughput is counted in chain-generations per second; compile time is excluded by a
warm-up run. Usage::

    python benchmarks/markov.py [--chains 1000] [--generations 50] [--repeats 2]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from timing import best_time, record

from collapse import discrete, runner
from collapse.config import Regime

SETTINGS = ((1000, 10_000), (1000, 1000), (2, 100))  # (K, M); the first is the example


def numpy_reference(p0: np.ndarray, n_chains: int, M: int, n_generations: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.broadcast_to(p0, (n_chains, len(p0)))
    alive = np.empty((n_chains, n_generations + 1), np.int32)
    for n in range(n_generations + 1):  # generation 0 fits the real data
        counts = rng.multinomial(M, p)
        p = counts / M
        alive[:, n] = (counts > 0).sum(1)
    return alive


def alive_states(weights: jax.Array) -> jax.Array:
    return (weights > 0).sum(-1).astype(jnp.int32)


def library(distribution: str, n_chains: int, M: int, n_generations: int, seed: int = 0) -> np.ndarray:
    with jax.enable_x64(True):
        return runner.simulate(
            discrete.MODEL, discrete.RealCategorical(distribution), seed=seed, n_chains=n_chains, n_samples=M,
            n_generations=n_generations, regime=Regime("replace"), record=alive_states,
            batch_size=max(jax.device_count(), 2**24 // M),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}; {args.chains:,} chains x {args.generations + 1} fits, best of {args.repeats}")
    print(f"{'K':>6} {'M':>7} {'NumPy chain-gen/s':>18} {'library chain-gen/s':>20} {'ratio':>7}  alive (NumPy / library)")
    for K, M in SETTINGS:
        distribution = f"zipf({K}, 1)" if K > 2 else "bernoulli(0.5)"
        p0 = discrete.initial_distribution(distribution)
        work = args.chains * (args.generations + 1)
        ours = library(distribution, args.chains, M, args.generations)  # warm-up: compile
        t_lib = best_time(lambda: library(distribution, args.chains, M, args.generations), args.repeats)
        ref = numpy_reference(p0, args.chains, M, args.generations)
        t_ref = best_time(lambda: numpy_reference(p0, args.chains, M, args.generations), args.repeats)
        print(
            f"{K:>6} {M:>7,} {work / t_ref:>18.3g} {work / t_lib:>20.3g} {t_ref / t_lib:>6.2f}x"
            f"  {ref[:, -1].mean():.1f} / {ours[:, -1].mean():.1f}"
        )
        record("markov", f"K={K}, M={M:,}, {args.chains} chains", work / t_lib, work / t_ref, "chain-generations/s", "NumPy")


if __name__ == "__main__":
    main()
