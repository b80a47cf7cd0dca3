"""Gaussian recursion: the library against a NumPy reference, in one process.

The reference is the loop of the authors' notebook, vectorised over chains: each
generation draws M points per chain with ``rng.normal`` and refits mean and standard
deviation. The library runs the same work (chains x M x generations, float64) through
the shared runner: ``lax.scan`` over generations, ``vmap`` over chains, once drawing
every point (``sampler="draws"``, the same algorithm) and once drawing the sufficient
statistics directly (``sampler="stats"``, exact and O(1) in M).

Throughput is counted in samples (points drawn, or represented) per second; compile
time is excluded by a warm-up run. Usage::

    python benchmarks/gaussian.py [--chains 1000] [--samples 1000] [--generations 100] [--repeats 3]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from timing import best_time, record

from collapse import gaussian


def numpy_reference(n_chains: int, M: int, n_generations: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu, sd = np.zeros(n_chains), np.ones(n_chains)
    for _ in range(n_generations + 1):  # generation 0 fits the real data
        x = rng.normal(mu[:, None], sd[:, None], size=(n_chains, M))
        mu, sd = x.mean(axis=1), x.std(axis=1, ddof=1)
    return sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000, help="M, points per generation")
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = args.chains * args.samples * (args.generations + 1)

    def library(sampler: str):
        config = gaussian.GaussianRun(
            n_samples=args.samples, n_chains=args.chains, n_generations=args.generations, sampler=sampler
        )
        return lambda: gaussian.run(config)

    print(f"devices: {jax.devices()}")
    print(f"work: {args.chains} chains x M={args.samples} x {args.generations + 1} fits = {work:.3g} samples, float64")
    reference = best_time(lambda: numpy_reference(args.chains, args.samples, args.generations), args.repeats)
    print(f"numpy reference            {work / reference:12.4g} samples/s  ({reference:.3f} s)")
    for sampler in ("draws", "stats"):
        fn = library(sampler)
        fn()  # compile
        seconds = best_time(fn, args.repeats)
        print(
            f"collapse sampler={sampler:<6}    {work / seconds:12.4g} samples/s  ({seconds:.3f} s)"
            f"   ratio vs numpy: {reference / seconds:8.2f}x"
        )
        record("gaussian", f"sampler={sampler}, {args.chains} chains, M={args.samples}", work / seconds, work / reference,
               "samples/s", "NumPy")


if __name__ == "__main__":
    main()
