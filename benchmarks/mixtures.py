"""Gaussian mixtures by EM, generation after generation: the library against scikit-learn, in one process.

The reference is the authors' notebook loop (``Zakahler/curse_recurse``,
``Normals_GMM_experiments.ipynb``, cell 2): per chain and generation, ``GaussianMixture(2,
covariance_type="full", tol=1e-5, max_iter=2000).fit(X)`` then ``X = gmm.sample(N)[0]``,
from N points of N(0, I₂). The library runs the same chains × generations through the
shared runner: every chain's EM (k-means start, then EM to the same tolerance) in one
``lax.scan`` over generations, ``vmap``-ped over chains, float64 (and it also computes the
squared L2 distance of every generation to the first and to the truth, which the reference
does not).

Throughput is counted in fits (generations) per second; the library's compile time is
excluded by a warm-up run. Usage::

    python benchmarks/mixtures.py [--chains 16] [--generations 50] [--points 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from timing import best_time, record

from collapse import mixtures


def sklearn_reference(n_chains: int, n_points: int, n_generations: int, seed: int = 0) -> None:
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    for chain in range(n_chains):
        x = rng.normal(size=(n_points, 2))
        for generation in range(n_generations + 1):  # generation 0 fits the real data
            fit = GaussianMixture(2, covariance_type="full", tol=1e-5, max_iter=2000,
                                  random_state=chain * (n_generations + 1) + generation).fit(x)
            x = fit.sample(n_points)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--points", type=int, default=1000, help="N, points per generation")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    fits = args.chains * (args.generations + 1)
    run = mixtures.GmmRun(n_points=args.points, n_chains=args.chains, n_generations=args.generations)

    print(f"devices: {jax.devices()}")
    print(f"work: {args.chains} chains x {args.generations + 1} EM fits of N={args.points} points in 2-D = {fits} fits")
    reference = best_time(lambda: sklearn_reference(args.chains, args.points, args.generations), args.repeats)
    print(f"scikit-learn GaussianMixture  {fits / reference:10.4g} fits/s  ({reference:.2f} s)")
    library = lambda: mixtures.run_gmm(run)  # noqa: E731
    library()  # compile
    seconds = best_time(library, args.repeats)
    print(f"collapse (EM in JAX)          {fits / seconds:10.4g} fits/s  ({seconds:.2f} s)   ratio: {reference / seconds:.2f}x")
    record("mixtures", f"EM, {args.chains} chains x {args.generations + 1} generations, N={args.points}",
           fits / seconds, fits / reference, "fits/s", "scikit-learn")


if __name__ == "__main__":
    main()
