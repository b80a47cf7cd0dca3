"""Chapter 2: a categorical distribution re-estimated from its own samples.

Generation n+1 is the vector of empirical frequencies of M draws from generation n.
Data enter only through counts, so the model's parameters *are* its statistics: a
vector of non-negative weights ``c`` (counts), the distribution being ``c / c.sum()``.
Under ``accumulate`` the counts of every generation are pooled; under ``mix(alpha)``
fresh real counts are added. The runner does the rest.

Exact results for K = 2 (the Wright--Fisher chain) are in float64 NumPy/SciPy: the
transition matrix, the fundamental matrix, absorption times and probabilities, and the
stationary law when real data are mixed in.
"""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy
from scipy import linalg, special, stats

from .chapter import check_chapter, executed_note
from .checks import AgreementError, check_agreement, z_threshold
from .config import Regime, check_int, check_seed
from .runner import StatsModel, log_generations, simulate, simulate_until
from .sampling import multinomial

# --------------------------------------------------------------------------- the model


def _weights(counts: jax.Array) -> jax.Array:
    """The fit: the counts themselves (the distribution is counts / counts.sum())."""
    return counts


def _pool(a: jax.Array, b: jax.Array) -> jax.Array:
    return a + b


MODEL = StatsModel(fit=_weights, sample_stats=multinomial, merge=_pool)  # multinomial: collapse.sampling


def is_delta(weights: jax.Array) -> jax.Array:
    """True when a single state carries all the weight: the chain's absorbing states."""
    return jnp.max(weights) == jnp.sum(weights)  # exact: the weights are integer counts


# --------------------------------------------------------------------------- distributions


def initial_distribution(text: str) -> np.ndarray:
    """The real distribution p0 from its name.

    ``"zipf(K, s)"``: p(k) proportional to k^-s, k = 1..K; ``"uniform(K)"``;
    ``"bernoulli(p)"``: K = 2 with p(1) = p.
    """
    match = re.fullmatch(r"\s*(\w+)\(([^)]*)\)\s*", text)
    args = [a.strip() for a in match.group(2).split(",")] if match else []
    try:
        if match and match.group(1) == "zipf" and len(args) == 2 and int(args[0]) >= 2 and float(args[1]) >= 0:
            p = np.arange(1, int(args[0]) + 1, dtype=float) ** -float(args[1])
            return p / p.sum()
        if match and match.group(1) == "uniform" and len(args) == 1 and int(args[0]) >= 2:
            return np.full(int(args[0]), 1.0 / int(args[0]))
        if match and match.group(1) == "bernoulli" and len(args) == 1 and 0 < float(args[0]) < 1:
            return np.array([1.0 - float(args[0]), float(args[0])])
    except ValueError:
        pass
    raise ValueError(
        f"distribution={text!r} is not allowed; use 'zipf(K, s)' (K >= 2, s >= 0), 'uniform(K)' or 'bernoulli(p)' (0 < p < 1)"
    )


@dataclasses.dataclass(frozen=True)
class RealCategorical:
    """The real data source: ``(key, m) -> counts of m fresh draws from p0``."""

    distribution: str

    def __call__(self, key: jax.Array, m: int) -> jax.Array:
        p0 = jnp.asarray(initial_distribution(self.distribution), jnp.result_type(float))
        return multinomial(key, p0, m)


# --------------------------------------------------------------------------- metrics


class CategoricalMetrics(NamedTuple):
    alive: jax.Array  # number of states with p_n(k) > 0
    diversity: jax.Array  # 1 - sum_k p_n(k)^2: the chance that two draws differ
    entropy: jax.Array  # H(p_n) in nats
    kl_from_real: jax.Array  # KL(p0 || p_n): +inf as soon as a state of p0 is lost
    kl_to_real: jax.Array  # KL(p_n || p0): finite
    tail_alive: jax.Array  # real mass p0 of the tail states (p0 < 1/M) still alive
    tail_mass: jax.Array  # mass p_n puts on those tail states
    top: jax.Array  # max_k p_n(k): 1 once absorbed


def metrics_of(p: jax.Array, p0: jax.Array, tail: jax.Array) -> CategoricalMetrics:
    """The summaries of the distribution ``p`` (last axis), against the real ``p0``."""
    entropy = -xlogy(p, p).sum(-1)
    lost = jnp.any((p0 > 0) & (p == 0), axis=-1)
    kl_from = jnp.where(lost, jnp.inf, (xlogy(p0, p0) - xlogy(p0, p)).sum(-1))
    return CategoricalMetrics(
        alive=(p > 0).sum(-1).astype(jnp.int32),
        diversity=1.0 - (p * p).sum(-1),
        entropy=entropy,
        kl_from_real=kl_from,
        kl_to_real=(xlogy(p, p) - xlogy(p, p0)).sum(-1),
        tail_alive=jnp.where(tail & (p > 0), p0, 0.0).sum(-1),
        tail_mass=jnp.where(tail, p, 0.0).sum(-1),
        top=p.max(-1),
    )


@dataclasses.dataclass(frozen=True)
class Summary:
    """The runner's ``record``: weights -> the named :class:`CategoricalMetrics` (hashable, so runs are cached)."""

    distribution: str
    n_samples: int  # M: the tail is the states with p0 < 1/M
    # The metrics kept. A run that needs one compiles faster: a Zipf(1000) chain program keeping
    # tail_alive alone compiled in 1.45-2.79 s against 1.89-3.81 s keeping all eight (M = 100 to
    # 300, replace, mix(0.1) and accumulate; 2 cores), and the avoiding page compiles 36 of them.
    fields: tuple[str, ...] = CategoricalMetrics._fields

    def __post_init__(self) -> None:
        unknown = sorted(set(self.fields) - set(CategoricalMetrics._fields))
        if unknown or not self.fields:
            raise ValueError(f"fields={self.fields!r} must name metrics among {CategoricalMetrics._fields}")

    def __call__(self, weights: jax.Array) -> dict[str, jax.Array]:
        p0 = initial_distribution(self.distribution)
        tail = jnp.asarray(p0 < 1.0 / self.n_samples)
        p0 = jnp.asarray(p0, weights.dtype)
        metrics = metrics_of(weights / weights.sum(-1, keepdims=True), p0, tail)
        return {name: getattr(metrics, name) for name in self.fields}


def real_metrics(distribution: str, n_samples: int) -> dict[str, float]:
    """The metrics of p0 itself (generation n = 0)."""
    with jax.enable_x64(True):
        p0 = jnp.asarray(initial_distribution(distribution))
        values = Summary(distribution, n_samples)(p0)
    return {name: float(v) for name, v in values.items()}


# --------------------------------------------------------------------------- closed forms


def mean_diversity(n, M: int, p0: np.ndarray) -> np.ndarray:
    """E[1 - sum_k p_n(k)^2] = (1 - 1/M)^n (1 - sum_k p0(k)^2) under ``replace`` (n counts fits).

    Equation ``eq-disc-diversity`` of ``chapters/discrete.md``.
    """
    return (1.0 - 1.0 / M) ** np.asarray(n, float) * (1.0 - np.sum(np.asarray(p0) ** 2))


def missing_probability(p, M: int) -> np.ndarray:
    """P(a state of probability p gets none of M draws) = (1 - p)^M, about exp(-pM).

    Equation ``eq-disc-missing`` of ``chapters/discrete.md``.
    """
    return (1.0 - np.asarray(p, float)) ** M


def mean_alive_after_one(p0: np.ndarray, M: int) -> float:
    """E[number of states alive after the first fit] = sum_k 1 - (1 - p0(k))^M.

    Equation ``eq-disc-missing`` of ``chapters/discrete.md``.
    """
    return float(np.sum(1.0 - missing_probability(p0, M)))


def mean_tail_alive_after_one(p0: np.ndarray, M: int) -> float:
    """E[real mass of the tail (p0 < 1/M) alive after the first fit] = sum_tail p0 (1 - (1 - p0)^M).

    Equation ``eq-disc-missing`` of ``chapters/discrete.md``.
    """
    p0 = np.asarray(p0)
    tail = p0 < 1.0 / M
    return float(np.sum(p0[tail] * (1.0 - missing_probability(p0[tail], M))))


def diffusion_absorption_time(M: int, p0: np.ndarray) -> float:
    """Diffusion approximation of E[generations until one state is left]: -2M sum_k (1 - p_k) log(1 - p_k).

    Kimura's formula for K = 2 and its extension to K states by Littler (1975); an
    approximation for large M, against which the exact K = 2 values are compared.
    """
    q = 1.0 - np.asarray(p0, float)
    return float(-2.0 * M * np.sum(special.xlogy(q, q)))


# --------------------------------------------------------------------------- exact chain for K = 2
# State i = number of the M draws that fell on state 1; p_n(1) = i / M.


def wright_fisher_matrix(M: int) -> np.ndarray:
    """The (M+1) x (M+1) transition matrix P[i, j] = Binomial(M, i/M)(j), float64.

    Equation ``eq-disc-wf`` of ``chapters/discrete.md``.
    """
    check_int("M", M, minimum=1)
    i = np.arange(M + 1)
    return stats.binom.pmf(i[None, :], M, i[:, None] / M)


def mixed_matrix(M: int, n_real: int, p_real: float) -> np.ndarray:
    """Transition matrix when ``n_real`` of the M draws are fresh real data (``mix``).

    The next count is Binomial(n_real, p_real) + Binomial(M - n_real, i/M), independent:
    row i is the convolution of the two. With 0 < n_real and 0 < p_real < 1 no state is
    absorbing.
    """
    check_int("M", M, minimum=1)
    check_int("n_real", n_real, minimum=0)
    if n_real > M:
        raise ValueError(f"n_real={n_real} must be at most M={M}")
    real = stats.binom.pmf(np.arange(n_real + 1), n_real, p_real)
    i = np.arange(M + 1)
    synthetic = stats.binom.pmf(np.arange(M - n_real + 1)[None, :], M - n_real, i[:, None] / M)
    return np.stack([np.convolve(real, row) for row in synthetic])


class AbsorbingChain(NamedTuple):
    """Absorbing-chain quantities, transient states 1..M-1 and absorbing states {0, M}."""

    Q: np.ndarray  # transient -> transient
    R: np.ndarray  # transient -> absorbing (columns: state 0, state M)
    N: np.ndarray  # fundamental matrix (I - Q)^-1: expected visits
    t: np.ndarray  # expected steps to absorption from each transient state, N 1
    var_t: np.ndarray  # their variances, (2N - I) t - t^2
    B: np.ndarray  # absorption probabilities N R


def absorbing_chain(P: np.ndarray) -> AbsorbingChain:
    """The fundamental-matrix analysis of a K = 2 chain on 0..M whose ends absorb.

    Equation ``eq-disc-fundamental`` of ``chapters/discrete.md``.
    """
    M = P.shape[0] - 1
    if not (np.isclose(P[0, 0], 1.0) and np.isclose(P[M, M], 1.0)):
        raise ValueError("states 0 and M must be absorbing")
    inner = slice(1, M)
    Q, R = P[inner, inner], P[inner][:, [0, M]]
    identity = np.eye(M - 1)
    lu = linalg.lu_factor(identity - Q)
    N = linalg.lu_solve(lu, identity)
    t = N.sum(1)
    var_t = (2 * N - identity) @ t - t**2
    return AbsorbingChain(Q, R, N, t, var_t, N @ R)


class AbsorptionTime(NamedTuple):
    mean: float  # E[T]
    var: float  # Var[T]
    p_fix: float  # P(absorbed in the delta on state 1)


def absorption_time(M: int, p: float) -> AbsorptionTime:
    """Exact law of T, the number of fits until the fit is a delta, from the real Bernoulli(p).

    The first fit draws X_1 ~ Binomial(M, p) from the real distribution -- the same
    kernel as the chain's -- so T = 1 + tau(X_1) with tau the chain's absorption time
    (0 from the ends).

    Equation ``eq-disc-fundamental`` of ``chapters/discrete.md``.
    """
    chain = absorbing_chain(wright_fisher_matrix(M))
    start = stats.binom.pmf(np.arange(M + 1), M, p)
    tau = np.concatenate([[0.0], chain.t, [0.0]])
    tau2 = np.concatenate([[0.0], chain.var_t + chain.t**2, [0.0]])
    fix = np.concatenate([[0.0], chain.B[:, 1], [1.0]])
    mean = 1.0 + start @ tau
    second = start @ (1.0 + 2.0 * tau + tau2)
    return AbsorptionTime(float(mean), float(second - mean**2), float(start @ fix))


def absorption_survival(M: int, p: float, n_max: int) -> np.ndarray:
    """P(T > n) for n = 0..n_max: the chance that the n-th fit is not yet a delta."""
    chain = absorbing_chain(wright_fisher_matrix(M))
    alive = stats.binom.pmf(np.arange(1, M), M, p)  # P(X_1 = i), i transient
    out = np.empty(n_max + 1)
    out[0] = 1.0
    for n in range(1, n_max + 1):
        out[n] = alive.sum()
        alive = alive @ chain.Q
    return out


def stationary_distribution(P: np.ndarray) -> np.ndarray:
    """The stationary law pi = pi P of an irreducible chain (a linear solve, float64)."""
    size = P.shape[0]
    A = np.vstack([P.T - np.eye(size), np.ones((1, size))])
    b = np.zeros(size + 1)
    b[-1] = 1.0
    pi, *_ = linalg.lstsq(A, b)
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


# --------------------------------------------------------------------------- experiments

# Bump when a change alters the numbers; old cached results are then ignored.
# 2: collapse.sampling (binomial splitting for K = 2 and M >= 50 K).
# 3: collapse.sampling draws every binomial by inversion where m <= 200 (K = 2 and splitting).
VERSION = "3"


def _batch_size(M: int) -> int:
    """Chains per batch so that the sampler's O(M) buffers stay near 100 MB."""
    return max(1, 2**22 // M)


@dataclasses.dataclass(frozen=True)
class CategoricalRun:
    """Independent chains from one real distribution at one sample size M."""

    distribution: str = "zipf(1000, 1)"  # p0, see initial_distribution
    n_samples: int = 1000  # M, draws per generation
    n_chains: int = 1000  # independent chains
    n_generations: int = 1000  # generations after the first fit
    regime: Regime = Regime()  # replace / accumulate / mix(alpha)
    seed: int = 0
    n_recorded: int = 60  # generations kept (log-spaced, the first and last included)

    def __post_init__(self) -> None:
        initial_distribution(self.distribution)
        check_int("n_samples", self.n_samples, minimum=1)
        check_int("n_chains", self.n_chains, minimum=1)
        check_int("n_generations", self.n_generations, minimum=1)
        check_seed("seed", self.seed)
        check_int("n_recorded", self.n_recorded, minimum=2)
        if not isinstance(self.regime, Regime):
            raise ValueError(f"regime={self.regime!r} must be a collapse.Regime, e.g. Regime.parse('mix(0.1)')")

    def generations(self) -> np.ndarray:
        """The runner's generations kept: 0, then log-spaced up to ``n_generations``."""
        return log_generations(self.n_generations, self.n_recorded)


def _simulate(config: CategoricalRun, record, n_chains: int):
    """The chains of ``config`` through the shared runner, ``record`` kept at ``config.generations()``."""
    with jax.enable_x64(True):
        return simulate(
            MODEL,
            RealCategorical(config.distribution),
            seed=config.seed,
            n_chains=n_chains,
            n_samples=config.n_samples,
            n_generations=config.n_generations,
            regime=config.regime,
            record=record,
            record_at=tuple(config.generations()),
            batch_size=_batch_size(config.n_samples),
        )


def run(config: CategoricalRun, tail_samples: int | None = None,
        fields: tuple[str, ...] = CategoricalMetrics._fields) -> dict[str, np.ndarray]:
    """Simulate the chains; return the metrics named in ``fields`` (all by default) per chain at the
    recorded generations.

    ``n`` counts fits as in the paper (n = 1 is the fit to real data); each metric has
    shape (chains, recorded n). Float64, so that uniforms resolve probabilities far below 1/M.
    The tail is the states with p0 < 1/M, or p0 < 1/``tail_samples`` when that is given.
    """
    history = _simulate(config, Summary(config.distribution, tail_samples or config.n_samples, tuple(fields)),
                        config.n_chains)
    return {"n": config.generations() + 1, **{name: np.asarray(v) for name, v in history.items()}}


def frequencies(config: CategoricalRun, n_chains: int = 1) -> dict[str, np.ndarray]:
    """The whole fitted distribution p_n of the first ``n_chains`` chains at the recorded generations."""
    weights = _simulate(config, _weights, n_chains)
    return {"n": config.generations() + 1, "p": weights / weights.sum(-1, keepdims=True)}


@dataclasses.dataclass(frozen=True)
class AbsorptionRun:
    """Chains under ``replace`` run until the fit is a delta."""

    distribution: str = "bernoulli(0.5)"  # p0
    n_samples: int = 100  # M
    n_chains: int = 100_000
    max_generations: int = 10_000_000  # a safety cap; chains still alive there are reported as censored
    seed: int = 0

    def __post_init__(self) -> None:
        initial_distribution(self.distribution)
        check_int("n_samples", self.n_samples, minimum=1)
        check_int("n_chains", self.n_chains, minimum=1)
        check_int("max_generations", self.max_generations, minimum=1)
        check_seed("seed", self.seed)


def absorb(config: AbsorptionRun) -> dict[str, np.ndarray]:
    """``T`` (fits until the fit is a delta; paper indexing), ``state`` (the surviving state), ``censored``."""
    with jax.enable_x64(True):
        n, weights = simulate_until(
            MODEL,
            RealCategorical(config.distribution),
            seed=config.seed,
            n_chains=config.n_chains,
            n_samples=config.n_samples,
            max_generations=config.max_generations,
            regime=Regime("replace"),
            stop=is_delta,
            n_steps=max(16, config.n_samples // 4),  # absorption takes O(M) generations
            batch_size=min(65_536, 4 * _batch_size(config.n_samples)),
        )
    return {
        "T": np.asarray(n, np.int64) + 1,
        "state": np.argmax(weights, -1),
        "censored": np.asarray(n) > config.max_generations,
    }


def run_cached(config: CategoricalRun, store=None) -> dict[str, np.ndarray]:
    """:func:`run`, stored under its config: a second call with the same config loads it."""
    from .store import ResultsStore

    return (store or ResultsStore()).cached("discrete", VERSION, config, lambda: run(config))


def frequencies_cached(config: CategoricalRun, n_chains: int = 1, store=None) -> dict[str, np.ndarray]:
    """:func:`frequencies`, stored under its config and ``n_chains``."""
    from .store import ResultsStore

    key = {"run": config, "n_chains": n_chains}
    return (store or ResultsStore()).cached("discrete-frequencies", VERSION, key, lambda: frequencies(config, n_chains))


def absorb_cached(config: AbsorptionRun, store=None) -> dict[str, np.ndarray]:
    from .store import ResultsStore

    return (store or ResultsStore()).cached("discrete-absorption", VERSION, config, lambda: absorb(config))


# --------------------------------------------------------------------------- checks against the closed forms


def absorption_agreement(T_S: np.ndarray, state_S: np.ndarray, M: int, p: float) -> dict:
    """Simulated absorption (K = 2, from Bernoulli(p), M per fit) against :func:`absorption_time`.

    z-scores of the mean of T, its variance (standard error from the sample's fourth
    moment), the fixation probability P(absorbed in state 1) = p, and the survival
    function P(T > n) at six quantiles of T. One family-wise bound
    (:func:`~collapse.checks.z_threshold`); raises ``AgreementError`` beyond it. Returns
    ``{"z": {...}, "n_grid", "z_max", "worst", "n_checks", "law"}``.
    """
    T = np.asarray(T_S, float)
    S = len(T)
    law = absorption_time(M, p)
    n_grid = np.unique(np.round(np.quantile(T, [0.05, 0.25, 0.5, 0.75, 0.95, 0.99]))).astype(int)
    survival = absorption_survival(M, p, int(max(T.max(), n_grid.max())))[n_grid]
    z = {
        "mean": np.atleast_1d((T.mean() - law.mean) / np.sqrt(law.var / S)),
        "var": np.atleast_1d((T.var() - law.var) / np.sqrt((((T - T.mean()) ** 4).mean() - T.var() ** 2) / S)),
        "fixation": np.atleast_1d(((np.asarray(state_S) == 1).mean() - law.p_fix) / np.sqrt(law.p_fix * (1 - law.p_fix) / S)),
        "survival": (np.array([(T > n).mean() for n in n_grid]) - survival) / np.sqrt(survival * (1 - survival) / S),
    }
    n_checks = sum(v.size for v in z.values())
    z_max = z_threshold(n_checks)
    worst = max(check_agreement(f"K=2 {name}", v, z_max, where=n_grid if name == "survival" else None)
                for name, v in z.items())
    return {"z": z, "n_grid": n_grid, "z_max": z_max, "worst": worst, "n_checks": n_checks, "law": law}


def tail_agreement(runs: dict, p0: np.ndarray) -> dict:
    """Zipf-tail runs ``{M: run result}`` against the closed forms: E[diversity] at every recorded
    generation (:func:`mean_diversity`), and after the first fit the expected number of surviving
    states and surviving tail mass (:func:`mean_alive_after_one`, :func:`mean_tail_alive_after_one`).

    A statistic with no spread across chains (every tail state lost, say) is compared exactly.
    Raises ``AgreementError`` beyond the family-wise bound; returns ``{"worst", "z_max", "n_checks"}``.
    """
    z_all, where = [], []
    for M, r in runs.items():
        S = r["alive"].shape[0]
        for name, sim, theory in (
            ("diversity", r["diversity"], mean_diversity(r["n"], M, p0)),
            ("alive after one fit", r["alive"][:, :1], mean_alive_after_one(p0, M)),
            ("tail mass after one fit", r["tail_alive"][:, :1], mean_tail_alive_after_one(p0, M)),
        ):
            sd = sim.std(0)
            spread = sd > 0
            constant_off = ~spread & ~np.isclose(sim.mean(0), theory)
            if np.any(constant_off):
                raise AgreementError(f"{name} at M={M}: constant {sim.mean(0)[constant_off]} against "
                                     f"{np.broadcast_to(theory, spread.shape)[constant_off]}")
            z_all.extend(((sim.mean(0) - theory) / np.where(spread, sd / np.sqrt(S), 1))[spread])
            where.extend([f"{name}, M={M}"] * int(spread.sum()))
    z_max = z_threshold(len(z_all))
    worst = check_agreement("tails against closed forms", np.array(z_all), z_max, where=where)
    return {"worst": worst, "z_max": z_max, "n_checks": len(z_all)}


def stationary_fit(counts_S: np.ndarray, pi: np.ndarray, min_expected: float = 5.0, alpha: float = 1e-3):
    """χ² goodness of fit of simulated counts to a stationary law ``pi`` over 0..M.

    Neighbouring counts are merged into cells of expected size ≥ ``min_expected`` (the χ²
    approximation's rule). Raises ``AgreementError`` when p < ``alpha``; returns
    ``(scipy result, number of cells)``.
    """
    states = np.arange(len(pi))
    observed = np.bincount(np.asarray(counts_S), minlength=len(pi))
    expected = np.asarray(pi) * len(counts_S)
    edges = np.flatnonzero(np.diff(np.floor(np.cumsum(expected) / min_expected), prepend=0) > 0)
    cells = np.searchsorted(edges, states, side="left").clip(0, len(edges) - 1)
    observed_cells, expected_cells = np.bincount(cells, weights=observed), np.bincount(cells, weights=expected)
    result = stats.chisquare(observed_cells, expected_cells)
    if result.pvalue < alpha:
        raise AgreementError(f"stationary law rejected: chi-square p = {result.pvalue:.2e} over {len(observed_cells)} cells")
    return result, len(observed_cells)


def sweep_agreement(T_by_M: dict, p: float) -> dict:
    """Mean absorption time of K = 2 runs at several M against the exact chain (one z per M)."""
    z = np.array([(np.mean(T) - absorption_time(M, p).mean) / np.sqrt(absorption_time(M, p).var / len(T))
                  for M, T in T_by_M.items()])
    z_max = z_threshold(len(z))
    return {"worst": check_agreement("absorption sweep, K = 2", z, z_max, where=list(T_by_M)), "z_max": z_max,
            "n_checks": len(z)}


# --------------------------------------------------------------------------- the chapter


@dataclasses.dataclass(frozen=True)
class DiscreteChapter:
    """What chapter 2 runs at one profile."""

    profile: str = "cpu"  # ci / cpu / paper
    seed: int = 0  # base seed of every run in the chapter
    # K = 2, p0 = (1/2, 1/2): the exact chain against simulation
    exact_M: int = 100  # M of the detailed comparison
    exact_chains: int = 100_000  # chains of that comparison
    sweep_M: tuple[int, ...] = (10, 20, 50, 100, 200)  # M of the absorption-time sweep (simulated)
    sweep_M_exact: tuple[int, ...] = (10, 20, 50, 100, 200, 500, 1000)  # M with exact K = 2 values
    sweep_K: tuple[int, ...] = (2, 10, 100)  # K of the sweep (uniform p0)
    sweep_chains: int = 5000  # chains per (M, K) of the sweep
    # Zipf tails
    zipf: str = "zipf(1000, 1)"  # the real distribution of the tail experiments
    tail_M: tuple[int, ...] = (1000, 10_000, 100_000)  # sample sizes M
    tail_chains: tuple[int, ...] = (200, 100, 30)  # chains per M
    tail_generations: tuple[int, ...] = (5000, 1000, 200)  # generations per M
    # regimes
    regimes: tuple[str, ...] = ("replace", "accumulate", "mix(0.1)")  # side by side
    regime_M: int = 1000  # M of the Zipf regime comparison
    regime_chains: int = 200
    regime_generations: int = 5000
    mix_alpha: float = 0.1  # fraction of real data of the exact K = 2 stationary law
    mix_chains: int = 50_000
    mix_generations: int = 300

    def __post_init__(self) -> None:
        check_chapter(self.profile, self.seed)
        initial_distribution(self.zipf)
        for text in self.regimes:
            Regime.parse(text)
        if not (len(self.tail_M) == len(self.tail_chains) == len(self.tail_generations)):
            raise ValueError("tail_M, tail_chains and tail_generations must have the same length")

    @property
    def seeds(self) -> tuple[int, ...]:
        return (self.seed,)

    def describe(self, data=None) -> str:
        tails = ", ".join(f"{c:,} chains × {g:,} generations at M = {m:,}"
                          for m, c, g in zip(self.tail_M, self.tail_chains, self.tail_generations))
        return executed_note(
            f"profile `{self.profile}` and seed `{self.seed}`: {self.exact_chains:,} chains for the exact two-state "
            f"comparison (M = {self.exact_M}), {self.sweep_chains:,} chains per point of the absorption-time sweep, "
            f"and {tails} for the tails of `{self.zipf}`."
        )


def chapter_config(profile: str, seed: int = 0) -> DiscreteChapter:
    """The sizes of chapter 2 at ``profile``: same code, different numbers."""
    check_chapter(profile, seed)
    if profile == "ci":
        return DiscreteChapter(
            profile, seed, exact_M=30, exact_chains=20_000, sweep_M=(10, 20, 40), sweep_M_exact=(10, 20, 40, 100),
            sweep_K=(2, 10), sweep_chains=2000, tail_M=(300, 3000), tail_chains=(100, 20),
            tail_generations=(1000, 100), regime_M=300, regime_chains=50, regime_generations=1000,
            mix_chains=10_000, mix_generations=150,
        )
    if profile == "paper":
        return DiscreteChapter(
            profile, seed, exact_chains=1_000_000, sweep_M=(10, 20, 50, 100, 200, 500, 1000),
            sweep_K=(2, 10, 100, 1000), sweep_chains=100_000, tail_chains=(10_000, 10_000, 1000),
            tail_generations=(5000, 20_000, 2000), regime_chains=10_000, mix_chains=1_000_000,
        )
    return DiscreteChapter(profile, seed)
