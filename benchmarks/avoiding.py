"""Chapter 5's two recursions: the library against reference implementations, in one process.

* Linear regression (``--part regression``): every chain refits OLS to T rows labelled by
  its previous fit plus noise, for G generations (``replace``). The reference is NumPy,
  vectorised over chains as one would write it by hand (``np.linalg.solve`` on the
  stacked normal equations each generation, T labels drawn per chain); the library runs
  the chapter's code through the shared runner (``lax.scan`` over generations, ``vmap``
  over chains), which draws each data set's sufficient statistics directly (d normals per
  chain instead of T; exact in distribution), float32 both. Throughput: OLS fits per second.
* Fairness feedback loop (``--part fairness``): one generation of the classifier loop,
  an MLP (784 → hidden → 10) trained by Adam on batches of MNIST-sized images, for
  several chains. The reference is the same network in PyTorch (``nn.Linear``,
  ``torch.optim.Adam``), one Python step per batch and one chain after another; the
  library trains every chain at once (``lax.scan`` over steps inside ``vmap`` over
  chains), as :func:`collapse.fairness.simulate_predictions` does. Throughput: training
  images per second. PyTorch is a benchmark-only dependency (``pip install -e ".[torch]"``).

Compile time and first-call overheads are excluded by a warm-up run; best of
``--repeats``. Usage::

    python benchmarks/avoiding.py [--part regression|fairness|both] [--chains 8] [--steps 300]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from timing import best_time, record

from collapse import fairness
from collapse import linear_regression as lr
from collapse.config import Regime


def numpy_regression(X: np.ndarray, w_star: np.ndarray, sigma: float, n_chains: int, n_generations: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    G = X.T @ X
    w = np.broadcast_to(w_star, (n_chains, len(w_star)))
    for _ in range(n_generations + 1):  # generation 0 fits the real labels
        y = w @ X.T + sigma * rng.standard_normal((n_chains, X.shape[0]), dtype=np.float32)
        w = np.linalg.solve(G, (y @ X).T).T
    return w


def regression(args) -> None:
    config = lr.RegressionConfig(n_samples=args.rows, dim=args.dim, n_generations=args.generations,
                                 n_chains=args.regression_chains)
    design = lr.make_design(config)
    X, w_star = np.asarray(design.X_TxD), np.asarray(design.w_star)
    fits = config.n_chains * (config.n_generations + 1)
    print(f"regression: {config.n_chains} chains x {config.n_generations + 1} OLS fits, T={config.n_samples}, "
          f"d={config.dim}, float32")
    reference = best_time(lambda: numpy_regression(X, w_star, config.sigma, config.n_chains, config.n_generations),
                          args.repeats)
    print(f"  numpy reference      {fits / reference:12.4g} fits/s  ({reference:.3f} s)")

    def library():
        return jax.block_until_ready(lr.simulate_errors(config, Regime("replace")))

    library()  # compile
    seconds = best_time(library, args.repeats)
    print(f"  collapse             {fits / seconds:12.4g} fits/s  ({seconds:.3f} s)   ratio vs numpy: "
          f"{reference / seconds:8.2f}x")
    record("linear regression refits", f"{config.n_chains} chains, T={config.n_samples}, d={config.dim}",
           fits / seconds, fits / reference, "fits/s", "NumPy")


def torch_training(images_uint8: np.ndarray, labels: np.ndarray, run: fairness.FairnessRun, device: str):
    import torch
    from torch import nn

    x_all = torch.as_tensor(images_uint8.reshape(len(images_uint8), -1), device=device)
    y_all = torch.as_tensor(labels, dtype=torch.long, device=device)

    def train_chains():
        for chain in range(run.n_chains):
            generator = torch.Generator(device=device).manual_seed(chain)
            net = nn.Sequential(nn.Linear(x_all.shape[1], run.hidden), nn.ReLU(), nn.Linear(run.hidden, 10)).to(device)
            optimiser = torch.optim.Adam(net.parameters(), lr=run.learning_rate)
            for _ in range(run.steps):
                rows = torch.randint(0, len(x_all), (run.batch_size,), generator=generator, device=device)
                loss = nn.functional.cross_entropy(net(x_all[rows].float() / 255.0), y_all[rows])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return train_chains


def fairness_part(args) -> None:
    import torch

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.population, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, args.population).astype(np.int32)
    labels[:50] = np.arange(50) % 10  # every class present
    run = fairness.FairnessRun(n_samples=args.population // 2, hidden=args.hidden, steps=args.steps,
                               n_chains=args.chains, n_generations=1)
    population = fairness.make_population(images, labels, 10, run)
    work = run.n_chains * run.steps * run.batch_size
    device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"fairness: {run.n_chains} chains x {run.steps} Adam steps x batch {run.batch_size}, hidden {run.hidden}; "
          f"JAX on {jax.devices()[0].platform}, PyTorch on {device}")
    reference = best_time(torch_training(images, labels, run, device), args.repeats)
    print(f"  pytorch reference    {work / reference:12.4g} images/s  ({reference:.3f} s)")

    # The library's work for one generation: every chain's fit, vmapped (what the runner runs).
    keys = jax.random.split(jax.random.key(0), run.n_chains)
    fit_chains = jax.jit(jax.vmap(lambda key: fairness.fit(
        population, run, fairness.real_stats(population, key, run.n_samples))))

    def library():
        return jax.block_until_ready(fit_chains(keys))

    library()  # compile
    seconds = best_time(library, args.repeats)
    print(f"  collapse             {work / seconds:12.4g} images/s  ({seconds:.3f} s)   ratio vs pytorch: "
          f"{reference / seconds:8.2f}x")
    record("fairness classifier training", f"{run.n_chains} chains, hidden {run.hidden}", work / seconds,
           work / reference, "images/s", "PyTorch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("regression", "fairness", "both"), default="both")
    parser.add_argument("--rows", type=int, default=100, help="T, rows of the regression design")
    parser.add_argument("--dim", type=int, default=10, help="d, inputs per row")
    parser.add_argument("--generations", type=int, default=50, help="regression generations")
    parser.add_argument("--regression-chains", type=int, default=4000)
    parser.add_argument("--population", type=int, default=4000, help="random MNIST-sized images in the population")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300, help="Adam steps per chain")
    parser.add_argument("--chains", type=int, default=8, help="classifier chains")
    parser.add_argument("--torch-device", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    if args.part in ("regression", "both"):
        regression(args)
    if args.part in ("fairness", "both"):
        fairness_part(args)


if __name__ == "__main__":
    main()
