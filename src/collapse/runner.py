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

Random streams. A run's randomness derives from its integer seed alone, along two kinds of
path that never meet:

* indexed streams: chain ``i``'s key is ``fold_in(key(seed), i)`` (:func:`chain_keys`) and a
  neural run's generation ``n`` has ``fold_in(key(seed), n)`` (:func:`generation_key`);
* named streams, for draws that are not a chain or a generation (:func:`stream_key`): the
  root is a key made from a SHA-256 of the stream's name, with its top bit set so it is never
  ``key(s)`` for a seed ``s < 2**32``, and the seed is folded into it.

The named streams (the names are part of the results: renaming one changes its numbers):

=======================  =============================================================
``vae/analysis``         :func:`collapse.vae_experiment.analyse`: the decoded latent grid,
                         the ELBO draws that score each generation and those that choose
                         the tail
``vae/classifier``       :func:`collapse.vae_experiment.train_classifier`: the label
                         classifier's initial weights and batches
``lm/init``              :func:`collapse.lm_experiment.initial_params`: a from-scratch
                         language model's initial weights
``regression/design``    :func:`collapse.linear_regression.make_design`: the fixed inputs
                         and the true weights
``fairness/population``  :func:`collapse.fairness.population_rows`: which minority
                         images the population keeps (NumPy, via :func:`stream_rng`)
``mixtures/figures``     :func:`collapse.mixtures.scatter_points`: the points drawn from
                         recorded mixtures for the scatter plots
``mixtures/em-check``    :func:`collapse.mixtures.em_check`: the data sets on which EM is
                         compared with scikit-learn
``mixtures/test``        :func:`collapse.mixtures.run_kde`: the real points that score
                         the kernel density estimates
=======================  =============================================================
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from .config import Regime
from .distributed import agree, load_shared, to_host
from .sharding import round_to_devices, shard_leading_axis
from .store import DamagedEntry, locked

PyTree = Any

#: Every named random stream (see the module notes); :func:`stream_key` accepts no other name.
STREAMS = ("vae/analysis", "vae/classifier", "lm/init", "lm/pretrain", "regression/design", "fairness/population",
           "mixtures/figures", "mixtures/em-check", "mixtures/test")

#: Bumped when the derivation of the streams changes, so records made before say so.
STREAMS_VERSION = 1


def stream_key(seed: int, name: str) -> jax.Array:
    """The key of the named stream ``name`` of run ``seed``: ``fold_in(root(name), seed)``.

    ``root(name)`` is a threefry key whose two words are the first eight bytes of
    SHA-256(name) with the top bit set; ``key(seed)`` is ``[0, seed]`` for every valid seed,
    so no named stream shares a root with the chains and generations of any seed.
    """
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; the streams are {STREAMS}")
    words = np.frombuffer(hashlib.sha256(name.encode()).digest()[:8], dtype=">u4").astype(np.uint32)
    words[0] |= np.uint32(1 << 31)
    root = jax.random.wrap_key_data(jnp.asarray(words), impl="threefry2x32")
    return jax.random.fold_in(root, seed)


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded by the words of a JAX key (for NumPy-side draws of a run)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def stream_rng(seed: int, name: str) -> np.random.Generator:
    """A NumPy generator for the named stream: :func:`numpy_rng` of :func:`stream_key`."""
    return numpy_rng(stream_key(seed, name))


class StatsModel(NamedTuple):
    """A model fitted from sufficient statistics (an exponential family, say).

    ``sample_stats(key, params, m)`` returns the statistics of ``m`` i.i.d. draws from
    the fitted model (``m`` is static); ``merge`` pools the statistics of two data
    sets; ``fit`` maps statistics to parameters. Data and its statistics coincide for
    models with no reduction; such a model may also give ``subsample(key, pooled, m)``,
    ``m`` points of a pooled data set drawn without replacement, which the
    ``accumulate-subsample`` regime needs.

    ``traced_m``: ``sample_stats`` (and the real source the model runs with) also take ``m``
    as a traced integer, because their shapes do not depend on it. :func:`simulate` then
    compiles one program for every M and every mix(α), instead of one per value. The numbers
    are those of the per-M programs up to float rounding: XLA folds the constants a static M
    makes, and computes them at run time when M is traced.
    """

    fit: Callable[[PyTree], PyTree]
    sample_stats: Callable[[jax.Array, PyTree, int], PyTree]
    merge: Callable[[PyTree, PyTree], PyTree]
    subsample: Callable[[jax.Array, PyTree, int], PyTree] | None = None
    traced_m: bool = False


def _identity(params):
    return params


def mix_case(regime: Regime, n_samples: int) -> str:
    """Which data a generation of ``n_samples`` holds under ``regime``: "synthetic", "real" (mix(1))
    or "both" (mix(α) with 0 < round(αM) < M)."""
    n_real = regime.n_real(n_samples)
    return "synthetic" if n_real == 0 else "real" if n_real == n_samples else "both"


def program_regime(regime: Regime, n_samples: int) -> Regime:
    """``regime`` as a chain of ``n_samples`` points per generation computes it: a ``mix(α)`` whose
    generations hold no real point is ``replace``, and one that holds k real points is
    ``mix(k / n_samples)``. Compiled chains are keyed by it, so runs that compute the same chains
    share one program: the avoiding page's grid at ``cpu`` has four such pairs (mix(0.01), (0.02)
    and (0.05) at M = 10, and mix(0.01) at M = 30, are ``replace``), about 3 s of compiling each."""
    if regime.kind != "mix":
        return regime
    n_real = regime.n_real(n_samples)
    return Regime() if n_real == 0 else Regime("mix", n_real / n_samples)


def _training_stats(
    model: StatsModel, real_stats, regime: Regime, key, params, pooled, n_samples: int, n_real: int | None = None,
    case: str | None = None,
):
    """Generation n+1's data given generation n's fit: ``(the pool carried on, the training set)``.

    They differ only under ``accumulate-subsample``, where the training set is drawn from the pool.
    ``n_real`` (fresh real points, under mix) and ``case`` (its :func:`mix_case`) default to
    ``regime``'s at ``n_samples``; a ``traced_m`` model may be given traced counts and their case.
    """
    key_synthetic, key_real = jax.random.split(key)
    if regime.kind == "replace":
        data = model.sample_stats(key_synthetic, params, n_samples)
        return data, data
    if regime.kind in ("accumulate", "accumulate-subsample"):
        pooled = model.merge(pooled, model.sample_stats(key_synthetic, params, n_samples))
        if regime.kind == "accumulate":
            return pooled, pooled
        if model.subsample is None:
            raise ValueError("regime 'accumulate-subsample' needs a model that keeps its data points (StatsModel.subsample)")
        return pooled, model.subsample(key_real, pooled, n_samples)
    if n_real is None:
        n_real, case = regime.n_real(n_samples), mix_case(regime, n_samples)
    if case == "synthetic":
        data = model.sample_stats(key_synthetic, params, n_samples)
    elif case == "real":
        data = real_stats(key_real, n_samples)
    else:
        data = model.merge(real_stats(key_real, n_real), model.sample_stats(key_synthetic, params, n_samples - n_real))
    return data, data


def _start_chain(model: StatsModel, real_stats, key: jax.Array, n_samples: int):
    """Generation 0, the fit to real data: ``(the chain's key for later generations, pooled, params)``."""
    key_real, key_chain = jax.random.split(key)
    pooled = real_stats(key_real, n_samples)
    return key_chain, pooled, model.fit(pooled)


def _next_generation(model: StatsModel, real_stats, regime: Regime, key_n, params, pooled, n_samples: int,
                     n_real: int | None = None, case: str | None = None):
    """Generation n+1 from generation n: ``(pooled, params)``."""
    pooled, data = _training_stats(model, real_stats, regime, key_n, params, pooled, n_samples, n_real, case)
    return pooled, model.fit(data)


def run_chain(
    model: StatsModel,
    real_stats: Callable[[jax.Array, int], PyTree],
    key: jax.Array,
    *,
    n_samples: int,
    n_generations: int,
    regime: Regime,
    record: Callable[[PyTree], PyTree] = _identity,
    record_at: tuple[int, ...] | None = None,
    n_real: int | None = None,
    case: str | None = None,
) -> PyTree:
    """One chain: ``record(params_n)`` for n = 0..n_generations, stacked on axis 0.

    With ``record_at`` (increasing generation indices) only those generations are
    recorded: memory is O(len(record_at)) instead of O(n_generations), and ``record``
    is not even evaluated at the others -- what long chains with an O(K) summary need.
    ``n_samples`` and ``n_real`` may be traced for a ``traced_m`` model (see :func:`_training_stats`).
    """
    key_chain, pooled, params = _start_chain(model, real_stats, key, n_samples)
    keys = jax.random.split(key_chain, n_generations)
    next_generation = functools.partial(_next_generation, model, real_stats, regime, n_samples=n_samples,
                                        n_real=n_real, case=case)

    if record_at is None:

        def step(carry, key_n):
            pooled, params = next_generation(key_n, carry[1], carry[0])
            return (pooled, params), record(params)

        _, history = jax.lax.scan(step, (pooled, params), keys)
        return jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), record(params), history)

    kept = np.asarray(record_at, dtype=int)
    if kept.ndim != 1 or len(kept) == 0 or np.any(np.diff(kept) <= 0) or kept[0] < 0 or kept[-1] > n_generations:
        raise ValueError(f"record_at must be increasing generations in [0, {n_generations}], got {record_at!r}")
    n_kept = len(kept)
    slot_of = np.full(n_generations + 1, n_kept)  # n_kept means "not recorded"
    slot_of[kept] = np.arange(n_kept)

    def write(buffer, slot, params):
        # The slot depends on the generation only, never on the chain, so under vmap this
        # stays a real branch and ``record`` runs only at recorded generations.
        return jax.lax.cond(
            slot < n_kept,
            lambda b: jax.tree.map(lambda b_, v: b_.at[slot].set(v), b, record(params)),
            lambda b: b,
            buffer,
        )

    first = record(params)
    buffer = jax.tree.map(lambda v: jnp.zeros((n_kept, *jnp.shape(v)), jnp.result_type(v)), first)
    buffer = write(buffer, slot_of[0], params)

    def step_recorded(carry, inputs):
        pooled, params, buffer = carry
        key_n, slot = inputs
        pooled, params = next_generation(key_n, params, pooled)
        return (pooled, params, write(buffer, slot, params)), None

    (_, _, buffer), _ = jax.lax.scan(step_recorded, (pooled, params, buffer), (keys, jnp.asarray(slot_of[1:])))
    return buffer


class Passage(NamedTuple):
    """The state of one chain run until a condition holds (see :func:`simulate_until`)."""

    n: jax.Array  # generation of ``params`` (0 = the fit to real data)
    pooled: PyTree
    params: PyTree
    key: jax.Array  # the chain's raw key data; generation n's randomness is fold_in(key, n)
    stopped: jax.Array  # stop(params) holds


def passage_init(model: StatsModel, real_stats, key: jax.Array, *, n_samples: int, stop) -> Passage:
    """Generation 0 of a first-passage run: the fit to real data."""
    key_chain, pooled, params = _start_chain(model, real_stats, key, n_samples)
    return Passage(jnp.asarray(0, jnp.int32), pooled, params, jax.random.key_data(key_chain), stop(params))


def passage_advance(
    model: StatsModel, real_stats, state: Passage, *, n_samples: int, regime: Regime, stop, n_steps: int,
    max_generations: int,
) -> Passage:
    """At most ``n_steps`` more generations; stops early once ``stop`` holds or ``max_generations`` is passed.

    Generation n's key is ``fold_in(key, n)``, so how a run is cut into calls changes nothing.
    """
    limit = jnp.minimum(state.n + n_steps, max_generations + 1)

    def running(s: Passage):
        return jnp.logical_and(s.n < limit, jnp.logical_not(s.stopped))

    def step(s: Passage) -> Passage:
        key_n = jax.random.fold_in(jax.random.wrap_key_data(s.key), s.n)
        pooled, params = _next_generation(model, real_stats, regime, key_n, s.params, s.pooled, n_samples)
        return Passage(s.n + 1, pooled, params, s.key, stop(params))

    return jax.lax.while_loop(running, step, state)


def log_generations(n_generations: int, n_recorded: int) -> np.ndarray:
    """Generations to record: 0, then about ``n_recorded`` log-spaced up to ``n_generations`` (included)."""
    if isinstance(n_generations, bool) or not isinstance(n_generations, (int, np.integer)) or n_generations < 1:
        raise ValueError(f"n_generations={n_generations!r} must be an integer >= 1")
    if isinstance(n_recorded, bool) or not isinstance(n_recorded, (int, np.integer)) or n_recorded < 1:
        raise ValueError(f"n_recorded={n_recorded!r} must be an integer >= 1")
    grid = np.unique(np.round(np.logspace(0, np.log10(n_generations), n_recorded)).astype(int))
    return np.concatenate([[0], grid])


def chain_keys(seed: int, n_chains: int) -> jax.Array:
    """Chain i's key is ``fold_in(key(seed), i)``: independent of how chains are batched or padded."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n_chains, dtype=jnp.uint32))


@functools.lru_cache(maxsize=128)
def _compiled_chains(model, real_stats, n_samples, n_generations, regime, record, record_at, lockstep=True):
    """One jitted chain function per (hashable) setting, reused across calls: ``vmap`` over the chains
    (``lockstep``), or per device a ``lax.map`` over its chains, the devices ``vmap``-ped.

    For a ``traced_m`` model, ``n_samples`` is None and ``regime`` a (kind, :func:`mix_case`) pair:
    the function takes ``(keys, n_samples, n_real)``, so every M and α of that kind and case share it.
    """
    traced = n_samples is None

    # Traced, the regime's α enters through n_real alone: mix's alpha is left at 0.
    regime, case = (Regime(regime[0]), regime[1]) if traced else (regime, None)

    def chain(key, m, n_real):
        return run_chain(model, real_stats, key, n_samples=m, n_generations=n_generations, regime=regime,
                         record=record, record_at=record_at, n_real=n_real, case=case)

    if lockstep:
        vmapped = jax.vmap(chain, in_axes=(0, None, None))
    else:
        n_devices = jax.device_count()

        def vmapped(keys, m, n_real):
            per_device = keys.reshape(n_devices, -1, *keys.shape[1:])
            out = jax.vmap(lambda k: jax.lax.map(lambda key: chain(key, m, n_real), k))(per_device)
            return jax.tree.map(lambda v: v.reshape(-1, *v.shape[2:]), out)

    if traced:
        return jax.jit(vmapped)
    return jax.jit(lambda keys: vmapped(keys, n_samples, None))


@functools.lru_cache(maxsize=128)
def _compiled_passage(model, real_stats, n_samples, regime, stop, n_steps, max_generations):
    init = functools.partial(passage_init, model, real_stats, n_samples=n_samples, stop=stop)
    advance = functools.partial(
        passage_advance, model, real_stats, n_samples=n_samples, regime=regime, stop=stop, n_steps=n_steps,
        max_generations=max_generations,
    )
    return jax.jit(jax.vmap(init)), jax.jit(jax.vmap(advance))


def _on_all_devices(chains, seed: int, n_chains: int, batch_size: int | None = None) -> PyTree:
    """``chains(keys)`` with chain i's key from :func:`chain_keys`, the chain axis sharded over every device.

    With ``batch_size``, chains run in batches of that many (rounded up to a multiple of
    the device count) to bound memory; chain i's numbers do not depend on the batching.
    """
    batch = round_to_devices(n_chains if batch_size is None else min(n_chains, batch_size))
    n_batches = -(-n_chains // batch)
    keys = chain_keys(seed, n_batches * batch)
    parts = [chains(shard_leading_axis(keys[b * batch : (b + 1) * batch])) for b in range(n_batches)]
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:n_chains], *[to_host(part) for part in parts])


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
    record_at: tuple[int, ...] | None = None,
    batch_size: int | None = None,
    lockstep: bool = True,
) -> PyTree:
    """Run ``n_chains`` independent chains; every leaf comes back as ``(n_chains, n_recorded, ...)``.

    ``n_recorded`` is ``n_generations + 1``, or ``len(record_at)`` when that is given.
    ``batch_size`` bounds how many chains run at once (memory), without changing any number.
    The chain axis is sharded over all devices; the numbers do not depend on the device count.
    ``model``, ``real_stats`` and ``record`` should be hashable and long-lived (module-level
    functions, cached models) so that repeated calls reuse the compiled computation.

    ``lockstep=False`` runs each device's chains one after another (``lax.map``) instead of
    side by side (``vmap``). For a fit that is a loop of varying length, such as EM, a vmapped
    ``while_loop`` steps every chain until the slowest has converged; one after another, each
    chain pays for its own steps only: 8 chains × 200 generations of the mixtures chapter's EM
    took 4.3 s instead of 8.1 s on a 2-core CPU (first calls, compilation included).
    """
    record_at = None if record_at is None else tuple(int(g) for g in record_at)
    regime = program_regime(regime, n_samples)
    if model.traced_m:
        shape = (regime.kind, mix_case(regime, n_samples))
        compiled = _compiled_chains(model, real_stats, None, n_generations, shape, record, record_at, lockstep)
        m, n_real = np.int32(n_samples), np.int32(regime.n_real(n_samples))

        def chains(keys):
            return compiled(keys, m, n_real)
    else:
        chains = _compiled_chains(model, real_stats, n_samples, n_generations, regime, record, record_at, lockstep)
    return _on_all_devices(chains, seed, n_chains, batch_size)


# Lanes of the calls of simulate_until's compiled advance: few shapes, so few compilations per run.
# Measured on 2 cores (six absorption runs of the discrete chapter, K = 2 and 100, M = 10 to 200,
# 5,000 to 100,000 chains): 61.8 s with 2,048-lane chunks against 78.8 s with batches padded to
# the next power of two (up to 65,536 lanes): 12.5 s compiling in 21 compilations against 32.2 s in 37.
# The chains that are left once most have stopped run in 128-lane chunks: a 2,048-lane call for a
# few dozen heavy-tailed chains computed mostly padding. The chapter's 15-point sweep (5,000 chains
# each, K = 2 to 100, M = 10 to 200) took 66.5-68.5 s with (2048, 128) and (2048, 256) against
# 87.8 s with 2,048 alone (about 0.6 s more compiling per run); (2048, 512, 128, 32) took 102 s.
PASSAGE_LANES = (2048, 128)


def simulate_until(
    model: StatsModel,
    real_stats: Callable[[jax.Array, int], PyTree],
    *,
    seed: int,
    n_chains: int,
    n_samples: int,
    max_generations: int,
    regime: Regime,
    stop: Callable[[PyTree], jax.Array],
    n_steps: int = 64,
    batch_size: int = 65_536,
    progress: bool = False,
) -> tuple[np.ndarray, PyTree]:
    """First-passage times of ``n_chains`` chains: ``(n, params_n)``, n being the first generation
    where ``stop(params_n)`` holds (0 if the fit to real data does), or ``max_generations + 1``
    for a chain that never stopped (censored).

    Chains advance ``n_steps`` generations at a time, in chunks of PASSAGE_LANES[0] lanes and the
    remainder in smaller ones (at most ``batch_size``; vmapped, sharded over the devices); between
    rounds, stopped chains leave.
    First-passage times are heavy-tailed, so the work is about the sum of the chains' times
    rather than the number of chains times the slowest one. Chain i's numbers depend on
    (seed, i) only, not on the batching.
    """
    init, advance = _compiled_passage(model, real_stats, n_samples, program_regime(regime, n_samples), stop, n_steps,
                                      max_generations)
    batch = round_to_devices(min(batch_size, n_chains))
    sizes = sorted({round_to_devices(min(batch, size)) for size in PASSAGE_LANES}, reverse=True)
    state = _on_all_devices(init, seed, n_chains, batch)
    state = jax.tree.map(np.array, to_host(state))  # writable host copies, updated in place below
    bar = tqdm(total=n_chains, desc="chains stopped", disable=not progress)
    while True:
        active = np.flatnonzero(~state.stopped & (state.n <= max_generations))
        bar.update(n_chains - len(active) - bar.n)
        if len(active) == 0:
            break
        start = 0
        while start < len(active):
            left = len(active) - start
            lanes = next((size for size in sizes if size <= left), sizes[-1])
            rows = active[start : start + lanes]
            start += lanes
            padded = np.concatenate([rows, np.full(lanes - len(rows), rows[-1])])  # padding lanes are discarded
            moved = to_host(advance(shard_leading_axis(jax.tree.map(lambda x: x[padded], state))))
            for leaf, new in zip(jax.tree.leaves(state), jax.tree.leaves(moved)):
                leaf[rows] = new[: len(rows)]
    bar.close()
    return state.n, state.params


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
    if regime.kind == "accumulate-subsample":
        pool = np.concatenate([real_data, *synthetic])
        return pool[np.sort(numpy_rng(key).choice(len(pool), size=len(real_data), replace=False))]
    n_total = len(real_data)
    n_real = regime.n_real(n_total)
    rng = numpy_rng(key)
    real_rows = rng.choice(len(real_data), size=n_real, replace=False)
    synthetic_rows = rng.choice(len(synthetic[-1]), size=n_total - n_real, replace=False)
    return np.concatenate([real_data[np.sort(real_rows)], synthetic[-1][np.sort(synthetic_rows)]])


def generation_zero_dir(store, experiment: str, version: str, config, data: str):
    """The run folder holding generation 0 for every run on the same ``data`` (a digest) that
    differs from ``config`` only in its regime and length: generation 0 sees only real data, and
    its keys depend on (seed, 0), so it is the generation 0 of ``config`` under ``replace`` with
    no later generation. Run folders are keyed ``{"run": config, "data": data}``."""
    twin = dataclasses.replace(config, regime=Regime(), n_generations=0)
    return store.run_dir(experiment, version, {"run": twin, "data": data})


def require_finished(run_dir, n_generations: int) -> None:
    """Raise unless generations 0..n_generations are all in ``run_dir`` (measure only finished runs)."""
    missing = [n for n in range(n_generations + 1) if not run_dir.has_generation(n)]
    if missing:
        raise RuntimeError(f"generations {missing} of the run in {run_dir.path} are not finished; call run() first")


def run_generations(
    run_dir,
    *,
    seed: int,
    real_data: np.ndarray,
    n_generations: int,
    regime: Regime,
    train: Callable[[jax.Array, np.ndarray], PyTree],
    generate: Callable[[jax.Array, PyTree, np.ndarray], np.ndarray],
    evaluate: Callable[[PyTree, np.ndarray], dict] | None = None,
    progress: bool = True,
    zero_shared_with=None,
    train_on_previous: bool = False,
) -> list[dict]:
    """Generations 0..n_generations of a model trained in Python, one generation at a time.

    ``generate(key, params, data)`` returns as many samples as there are real ones; ``data``
    is the set the generation was trained on (a language model continues its blocks).
    Each finished generation's parameters, generated data and metrics are written to
    ``run_dir`` atomically; generations already there are loaded, not recomputed.
    Generation 0 sees only real data, so runs that differ only in their regime can share it:
    with ``zero_shared_with`` (the run folder that holds the shared copy), generation 0 is
    taken from there when it exists and put there once trained. With ``train_on_previous``,
    ``train(key, data, previous)`` also gets generation n−1's parameters (None for generation
    0), loaded from the store when that generation was: a model that draws its training
    batches from its predecessor.
    Returns the metrics of every generation.
    """
    shared = zero_shared_with if zero_shared_with is not None and zero_shared_with.path != run_dir.path else None
    synthetic: list[np.ndarray] = []
    metrics: list[dict] = []
    latest: dict[int, PyTree] = {}  # with train_on_previous: the last generation computed in this call

    def previous_params(n: int) -> PyTree | None:
        if n == 0:
            return None
        if n - 1 in latest:
            return latest[n - 1]
        return load_shared(lambda: run_dir.load_generation(n - 1)["params"], f"generation {n - 1} in {run_dir.path}")

    def stored(n: int) -> dict | None:
        """Generation n if stored and intact (a damaged one is set aside), else None."""
        if run_dir.has_generation(n):
            try:
                return run_dir.load_generation(n, params=False) | {"loaded": True}
            except DamagedEntry as error:
                run_dir.set_aside_generation(n, str(error))
        if n == 0 and shared is not None and shared.has_generation(0):
            try:
                shared.verify_generation(0)
                run_dir.adopt_generation(0, shared)
                return shared.load_generation(0, params=False) | {"loaded": True}
            except DamagedEntry as error:
                shared.set_aside_generation(0, str(error))
        return None

    def generation(n: int) -> dict:
        """Generation n: loaded if stored and intact, else computed and saved."""
        record = stored(n)
        if agree(record is not None):  # across processes, process 0's store decides for all
            if record is None:
                stored_n = load_shared(lambda: run_dir.load_generation(n, params=False),
                                       f"generation {n} in {run_dir.path}")
                record = stored_n | {"loaded": True}
            return record
        key_data, key_train, key_generate = jax.random.split(generation_key(seed, n), 3)
        data = training_set(regime, key_data, real_data, synthetic)
        params = train(key_train, data, previous_params(n)) if train_on_previous else train(key_train, data)
        if train_on_previous:  # held for the next generation only
            latest.clear()
            latest[n] = params
        samples = np.asarray(generate(key_generate, params, data))
        if len(samples) != len(real_data):
            raise ValueError(f"generate returned {len(samples)} samples; every generation must make {len(real_data)}")
        scores = dict(evaluate(params, samples)) if evaluate else {}
        run_dir.save_generation(n, params=params, samples=samples, metrics=scores)
        return {"samples": samples, "metrics": scores, "loaded": False}

    # One writer per run folder; generation 0 is made under the shared folder's lock too, so a
    # run of another regime started at the same time waits for it instead of training it again.
    with locked(run_dir.path):
        bar = tqdm(range(n_generations + 1), desc="generations", disable=not progress)
        for n in bar:
            if n == 0 and shared is not None:
                with locked(shared.path):
                    record = generation(0)
                    if not shared.has_generation(0):
                        shared.adopt_generation(0, run_dir)
            else:
                record = generation(n)
            if record["loaded"]:
                bar.set_postfix_str(f"generation {n}: loaded from {run_dir.path.name}")
            synthetic.append(record["samples"])
            metrics.append(record["metrics"])
    return metrics
