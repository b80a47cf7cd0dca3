"""The one generational runner every chapter uses.

Generation 0 is fitted to real data; generation n+1 is fitted to data sampled from
generation n, under a data :class:`~collapse.config.Regime`.

Two drivers share that definition:

* :func:`simulate` for cheap models: the whole recursion is one ``lax.scan`` per
  chain, ``vmap``-ped over chains and sharded over every device. Models describe
  data by *sufficient statistics* (a fixed-size pytree), so ``accumulate`` -- whose
  data set grows every generation -- still has fixed shapes inside the scan.
* :func:`run_generations` for neural models: a Python loop over generations whose
  artifacts go to a :class:`~collapse.store.RunDir`, so an interrupted run resumes at
  the last finished generation with identical results.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from .config import Regime
from .sharding import shard_leading_axis

PyTree = Any


class StatsModel(NamedTuple):
    """A model fitted from sufficient statistics (an exponential family, say).

    ``sample_stats(key, params, m)`` returns the statistics of ``m`` i.i.d. draws from
    the fitted model (``m`` is static); ``merge`` pools the statistics of two data
    sets; ``fit`` maps statistics to parameters. Data and its statistics coincide for
    models with no reduction.
    """

    fit: Callable[[PyTree], PyTree]
    sample_stats: Callable[[jax.Array, PyTree, int], PyTree]
    merge: Callable[[PyTree, PyTree], PyTree]


def _identity(params):
    return params


def _training_stats(model: StatsModel, real_stats, regime: Regime, key, params, pooled, n_samples: int):
    """Statistics of generation n+1's training data, given generation n's fit."""
    key_synthetic, key_real = jax.random.split(key)
    if regime.kind == "replace":
        return model.sample_stats(key_synthetic, params, n_samples)
    if regime.kind == "accumulate":
        return model.merge(pooled, model.sample_stats(key_synthetic, params, n_samples))
    n_real = regime.n_real(n_samples)
    if n_real == 0:
        return model.sample_stats(key_synthetic, params, n_samples)
    if n_real == n_samples:
        return real_stats(key_real, n_samples)
    return model.merge(real_stats(key_real, n_real), model.sample_stats(key_synthetic, params, n_samples - n_real))


def run_chain(
    model: StatsModel,
    real_stats: Callable[[jax.Array, int], PyTree],
    key: jax.Array,
    *,
    n_samples: int,
    n_generations: int,
    regime: Regime,
    record: Callable[[PyTree], PyTree] = _identity,
) -> PyTree:
    """One chain: ``record(params_n)`` for n = 0..n_generations, stacked on axis 0."""
    key_real, key_chain = jax.random.split(key)
    pooled = real_stats(key_real, n_samples)
    params = model.fit(pooled)

    def step(carry, key_n):
        pooled, params = carry
        pooled = _training_stats(model, real_stats, regime, key_n, params, pooled, n_samples)
        params = model.fit(pooled)
        return (pooled, params), record(params)

    keys = jax.random.split(key_chain, n_generations)
    _, history = jax.lax.scan(step, (pooled, params), keys)
    return jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), record(params), history)


def chain_keys(seed: int, n_chains: int) -> jax.Array:
    """Chain i's key is ``fold_in(key(seed), i)``: independent of how chains are batched or padded."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n_chains, dtype=jnp.uint32))


@functools.lru_cache(maxsize=128)
def _compiled_chains(model, real_stats, n_samples, n_generations, regime, record):
    """One jitted, vmapped chain function per (hashable) setting, reused across calls."""
    chain = functools.partial(
        run_chain, model, real_stats, n_samples=n_samples, n_generations=n_generations, regime=regime, record=record
    )
    return jax.jit(jax.vmap(chain))


def simulate(
    model: StatsModel,
    real_stats: Callable[[jax.Array, int], PyTree],
    *,
    seed: int,
    n_chains: int,
    n_samples: int,
    n_generations: int,
    regime: Regime,
    record: Callable[[PyTree], PyTree] = _identity,
) -> PyTree:
    """Run ``n_chains`` independent chains; every leaf comes back as ``(n_chains, n_generations + 1, ...)``.

    The chain axis is sharded over all devices; the numbers do not depend on the device count.
    ``model``, ``real_stats`` and ``record`` should be hashable and long-lived (module-level
    functions, cached models) so that repeated calls reuse the compiled computation.
    """
    chains = _compiled_chains(model, real_stats, n_samples, n_generations, regime, record)
    n_devices = jax.device_count()
    n_padded = -(-n_chains // n_devices) * n_devices  # pad so every device gets equal work
    keys = shard_leading_axis(chain_keys(seed, n_padded))
    return jax.tree.map(lambda x: np.asarray(x)[:n_chains], chains(keys))


# --------------------------------------------------------------------------- neural models


def generation_key(seed: int, generation: int) -> jax.Array:
    """Generation n's randomness depends on (seed, n) only, so resuming changes nothing."""
    return jax.random.fold_in(jax.random.key(seed), generation)


def training_set(regime: Regime, key, real_data: np.ndarray, synthetic: list[np.ndarray]) -> np.ndarray:
    """Generation n's training data: real for n = 0, else as the regime says.

    ``synthetic[i]`` holds the samples generated by generation i (all of them so far).
    """
    if not synthetic:
        return real_data
    if regime.kind == "replace":
        return synthetic[-1]
    if regime.kind == "accumulate":
        return np.concatenate([real_data, *synthetic])
    n_total = len(real_data)
    n_real = regime.n_real(n_total)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    real_rows = rng.choice(len(real_data), size=n_real, replace=False)
    synthetic_rows = rng.choice(len(synthetic[-1]), size=n_total - n_real, replace=False)
    return np.concatenate([real_data[np.sort(real_rows)], synthetic[-1][np.sort(synthetic_rows)]])


def run_generations(
    run_dir,
    *,
    seed: int,
    real_data: np.ndarray,
    n_generations: int,
    regime: Regime,
    train: Callable[[jax.Array, np.ndarray], PyTree],
    generate: Callable[[jax.Array, PyTree, int], np.ndarray],
    evaluate: Callable[[PyTree, np.ndarray], dict] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Generations 0..n_generations of a model trained in Python, one generation at a time.

    Each finished generation's parameters, generated data and metrics are written to
    ``run_dir`` atomically; generations already there are loaded, not recomputed.
    Returns the metrics of every generation.
    """
    synthetic: list[np.ndarray] = []
    metrics: list[dict] = []
    bar = tqdm(range(n_generations + 1), desc="generations", disable=not progress)
    for n in bar:
        if run_dir.has_generation(n):
            record = run_dir.load_generation(n, params=False)
            bar.set_postfix_str(f"generation {n}: loaded from {run_dir.path.name}")
        else:
            key_data, key_train, key_generate = jax.random.split(generation_key(seed, n), 3)
            data = training_set(regime, key_data, real_data, synthetic)
            params = train(key_train, data)
            samples = np.asarray(generate(key_generate, params, len(real_data)))
            scores = dict(evaluate(params, samples)) if evaluate else {}
            run_dir.save_generation(n, params=params, samples=samples, metrics=scores)
            record = {"samples": samples, "metrics": scores}
        synthetic.append(record["samples"])
        metrics.append(record["metrics"])
    return metrics
