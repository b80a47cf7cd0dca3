"""Chapter 1: a Gaussian refitted to its own samples, generation after generation.

Generation n+1 fits N(mu, sigma^2) to M draws from generation n. Data enter only
through the sufficient statistics (count, mean, sum of squared deviations), so the
runner's ``accumulate`` regime pools any number of generations in fixed memory.

Two samplers give the same distribution of those statistics:

* ``draws``: draw M points and reduce them -- what the paper's notebook does;
* ``stats``: draw the statistics directly, mean ~ N(mu, sigma^2/M) and
  sum of squares ~ sigma^2 chi^2_{M-1}, independent (Cochran's theorem). O(1) per
  generation instead of O(M); the chapter checks it against ``draws``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from .chapter import check_chapter, executed_note
from .config import Regime, check_choice, check_int, check_positive, check_seed
from .runner import StatsModel, log_generations, simulate

ESTIMATORS = ("unbiased", "mle")  # ddof = 1 (the theorem) or 0 (np.std, the authors' notebook)
SAMPLERS = ("stats", "draws")


class GaussianParams(NamedTuple):
    mu: jax.Array
    var: jax.Array


class GaussianStats(NamedTuple):
    n: jax.Array  # number of points
    mean: jax.Array
    m2: jax.Array  # sum of squared deviations from the mean


def stats_of(x: jax.Array) -> GaussianStats:
    """Statistics of the points on the last axis (two-pass, for accuracy)."""
    mean = x.mean(-1)
    return GaussianStats(jnp.asarray(x.shape[-1], x.dtype), mean, ((x - mean[..., None]) ** 2).sum(-1))


def merge(a: GaussianStats, b: GaussianStats) -> GaussianStats:
    """Pool two data sets' statistics (Chan et al.'s parallel update)."""
    n = a.n + b.n
    delta = b.mean - a.mean
    return GaussianStats(n, a.mean + delta * b.n / n, a.m2 + b.m2 + delta**2 * a.n * b.n / n)


def fit(stats: GaussianStats, estimator: str = "unbiased") -> GaussianParams:
    """The fitted mean and variance: divisor M − 1 (``unbiased``) or M (``mle``).
    Equation ``eq-gauss-fit`` of ``chapters/gaussian.md``."""
    ddof = 1 if estimator == "unbiased" else 0
    return GaussianParams(stats.mean, stats.m2 / (stats.n - ddof))


def sample(key: jax.Array, params: GaussianParams, m: int) -> jax.Array:
    dtype = jnp.result_type(params.mu)
    return params.mu + jnp.sqrt(params.var) * jax.random.normal(key, (m,), dtype)


def sample_stats_direct(key: jax.Array, params: GaussianParams, m: int) -> GaussianStats:
    """The statistics of m draws, drawn directly: exact, and O(1) in m.

    Equation ``eq-gauss-cochran`` of ``chapters/gaussian.md``.
    """
    dtype = jnp.result_type(params.mu)
    key_mean, key_ss = jax.random.split(key)
    mean = params.mu + jnp.sqrt(params.var / m) * jax.random.normal(key_mean, (), dtype)
    chi2 = 2.0 * jax.random.gamma(key_ss, (m - 1) / 2.0, (), dtype)  # chi^2 with m-1 degrees of freedom
    # One point has no spread, whatever gamma(0) gives (a where, not an if: m may be traced).
    return GaussianStats(jnp.asarray(m, dtype), mean, jnp.where(m == 1, jnp.zeros((), dtype), params.var * chi2))


def sample_stats_drawn(key: jax.Array, params: GaussianParams, m: int) -> GaussianStats:
    """The statistics of m points, by drawing the points (what the authors' notebook does)."""
    return stats_of(sample(key, params, m))


@functools.lru_cache(maxsize=None)
def model(estimator: str = "unbiased", sampler: str = "stats") -> StatsModel:
    """The Gaussian as a runner model (cached: the same object, so compiled runs are reused)."""
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("sampler", sampler, SAMPLERS)
    sample_stats = sample_stats_drawn if sampler == "draws" else sample_stats_direct
    # Drawn directly, the statistics' shapes do not depend on m: one compilation serves every M
    # (the avoiding chapter's grid of 40 Gaussian runs compiled 40 programs of about 2.4 s each).
    return StatsModel(fit=functools.partial(fit, estimator=estimator), sample_stats=sample_stats, merge=merge,
                      traced_m=sampler == "stats")


@dataclasses.dataclass(frozen=True)
class RealGaussian:
    """The real data source N(mu0, sigma0^2): ``(key, m) -> statistics of m fresh real points``."""

    mu0: float
    sigma0: float
    sampler: str = "stats"

    def __call__(self, key: jax.Array, m: int) -> GaussianStats:
        dtype = jnp.result_type(float)  # float64 inside run()'s enable_x64
        true = GaussianParams(jnp.asarray(self.mu0, dtype), jnp.asarray(self.sigma0**2, dtype))
        return model(sampler=self.sampler).sample_stats(key, true, m)


# --------------------------------------------------------------------------- experiment


@dataclasses.dataclass(frozen=True)
class GaussianRun:
    """One batch of independent chains at one sample size M."""

    n_samples: int = 100  # M, points drawn per generation
    n_chains: int = 10_000  # independent chains (Monte Carlo replicates)
    n_generations: int = 1000  # generations after generation 0
    estimator: str = "unbiased"  # "unbiased" (ddof=1, Theorem 3.1) or "mle" (ddof=0, np.std)
    sampler: str = "stats"  # "stats" (exact, O(1) per generation) or "draws" (M points each)
    regime: Regime = Regime()  # replace / accumulate / mix(alpha)
    mu0: float = 0.0  # mean of the real data
    sigma0: float = 1.0  # standard deviation of the real data
    seed: int = 0
    n_recorded: int = 48  # generations kept (log-spaced, 0 and the last included)

    def __post_init__(self) -> None:
        check_int("n_samples", self.n_samples, minimum=2)
        check_int("n_chains", self.n_chains, minimum=1)
        check_int("n_generations", self.n_generations, minimum=1)
        check_seed("seed", self.seed)
        check_int("n_recorded", self.n_recorded, minimum=2)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_positive("sigma0", self.sigma0)
        if not isinstance(self.regime, Regime):
            raise ValueError(f"regime={self.regime!r} must be a collapse.Regime, e.g. Regime.parse('mix(0.1)')")

    def generations(self) -> np.ndarray:
        """The runner's generations kept: 0, then log-spaced up to ``n_generations``."""
        return log_generations(self.n_generations, self.n_recorded)


def run(config: GaussianRun) -> dict[str, np.ndarray]:
    """Simulate the chains; return per-chain values at the recorded generations.

    Indexing follows the paper: ``n`` counts fits, so n = 0 is the real distribution
    N(mu0, sigma0^2) and n = 1 the fit to real data (the runner's generation 0).
    ``mu``, ``var``: the fitted parameters, shape (chains, recorded n).
    ``t``: (mu_n - mu0) / sqrt(sum_{i<n} sigma_i^2 / M), exactly N(0, 1) under ``replace``
    whatever the path of sigma (the mean's noise is independent of the variance's).
    Runs in float64: the ``draws`` sampler would otherwise lose sigma_n below float32's
    resolution of mu_n long before the theorem's limit.
    """
    with jax.enable_x64(True):
        history = simulate(
            model(config.estimator, config.sampler),
            RealGaussian(config.mu0, config.sigma0, config.sampler),
            seed=config.seed,
            n_chains=config.n_chains,
            n_samples=config.n_samples,
            n_generations=config.n_generations,
            regime=config.regime,
        )
    n_chains = config.n_chains
    mu = np.concatenate([np.full((n_chains, 1), config.mu0), np.asarray(history.mu)], axis=1)
    var = np.concatenate([np.full((n_chains, 1), config.sigma0**2), np.asarray(history.var)], axis=1)
    # sum_{i<n} sigma_i^2 / M: the variance of mu_n - mu0 given the path of sigma
    spread = np.concatenate([np.zeros((n_chains, 1)), np.cumsum(var, axis=1)[:, :-1]], axis=1) / config.n_samples
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(spread > 0, (mu - config.mu0) / np.sqrt(spread), np.nan)
    keep = config.generations() + 1
    return {"n": keep, "mu": mu[:, keep], "var": var[:, keep], "t": t[:, keep]}


# --------------------------------------------------------------------------- closed forms
# n counts fits (n = 0 is the real distribution). Let d = M - 1 (unbiased) or M (mle),
# k = M - 1. Then sigma_{n+1}^2 = sigma_n^2 * chi^2_k / d,
# independent of the past, and mu_{n+1} = mu_n + sigma_n * Z_n / sqrt(M), Z_n ~ N(0, 1) independent.


def _divisor(M, estimator: str):
    return np.asarray(M, float) - (1 if estimator == "unbiased" else 0)


def log_var_drift(M, estimator: str = "unbiased"):
    """E[log(chi^2_{M-1} / d)] per generation: psi((M-1)/2) + log(2/d) < 0."""
    k = np.asarray(M, float) - 1
    return special.digamma(k / 2) + np.log(2 / _divisor(M, estimator))


def log_var_step_variance(M):
    """Var[log chi^2_{M-1}] per generation: psi'((M-1)/2)."""
    return special.polygamma(1, (np.asarray(M, float) - 1) / 2)


def mean_log_var(n, M, estimator="unbiased", sigma0=1.0):
    """E[log σ_n²] = log σ0² + n (ψ((M−1)/2) + log(2/d)).
    Equation ``eq-gauss-drift`` of ``chapters/gaussian.md``."""
    return 2 * np.log(sigma0) + np.asarray(n) * log_var_drift(M, estimator)


def var_log_var(n, M):
    """Var[log σ_n²] = n ψ'((M−1)/2). Equation ``eq-gauss-drift`` of ``chapters/gaussian.md``."""
    return np.asarray(n) * log_var_step_variance(M)


def _ratio_moments(M, estimator):
    """c = E[chi^2_k / d] and q = E[(chi^2_k / d)^2]."""
    k, d = np.asarray(M, float) - 1, _divisor(M, estimator)
    return k / d, (k * k + 2 * k) / d**2


def mean_var(n, M, estimator="unbiased", sigma0=1.0):
    """E[sigma_n^2] = sigma0^2 c^n: constant (a martingale) when unbiased, ((M-1)/M)^n for the MLE.

    Equation ``eq-gauss-cochran`` of ``chapters/gaussian.md``.
    """
    c, _ = _ratio_moments(M, estimator)
    return sigma0**2 * c ** np.asarray(n, float)


def var_var(n, M, estimator="unbiased", sigma0=1.0):
    """Var[σ_n²] = σ0⁴ (qⁿ − c²ⁿ), with c, q the first two moments of χ²_k / d.
    Equation ``eq-gauss-cochran`` of ``chapters/gaussian.md``."""
    c, q = _ratio_moments(M, estimator)
    n = np.asarray(n, float)
    return sigma0**4 * (q**n - c ** (2 * n))


def mean_sq_drift(n, M, estimator="unbiased", sigma0=1.0):
    """E[(mu_n - mu_0)^2] = (sigma0^2 / M) sum_{i<n} c^i: n sigma0^2 / M, or sigma0^2 (1 - c^n) for the MLE.

    Equation ``eq-gauss-t`` of ``chapters/gaussian.md``.
    """
    c, _ = _ratio_moments(M, estimator)
    n = np.asarray(n, float)
    total = n if c == 1 else (1 - c**n) / (1 - c)
    return sigma0**2 * total / M


def var_sq_drift(n, M, estimator="unbiased", sigma0=1.0):
    """Var[(mu_n - mu_0)^2], from E[G^4] = 3 Var[G]^2 for the Gaussian G = mu_n - mu_0 given the sigma path.

    E[(mu_n - mu_0)^4] = 3/M^2 sum_{i,j<n} E[sigma_i^2 sigma_j^2], and for i <= j
    E[sigma_i^2 sigma_j^2] = E[sigma_i^4] c^(j-i) = sigma0^4 q^i c^(j-i).

    Equation ``eq-gauss-t`` of ``chapters/gaussian.md``.
    """
    c, q = _ratio_moments(M, estimator)
    out = []
    for m in np.atleast_1d(n).astype(int):
        i = np.arange(m, dtype=float)
        tail = m - 1 - i  # number of j > i
        geometric = 2 * tail if c == 1 else 2 * c * (1 - c**tail) / (1 - c)
        fourth = 3 * sigma0**4 / M**2 * np.sum(q**i * (1 + geometric))
        out.append(fourth - mean_sq_drift(m, M, estimator, sigma0) ** 2)
    return np.asarray(out).reshape(np.shape(n))


def mean_sigma(n, M, estimator="unbiased", sigma0=1.0):
    """E[sigma_n] = sigma0 (E[sqrt(chi^2_k / d)])^n, E[sqrt(chi^2_k)] = sqrt(2) Gamma((k+1)/2) / Gamma(k/2).

    Equation ``eq-gauss-w2`` of ``chapters/gaussian.md``.
    """
    k, d = np.asarray(M, float) - 1, _divisor(M, estimator)
    log_step = 0.5 * np.log(2 / d) + special.gammaln((k + 1) / 2) - special.gammaln(k / 2)
    return sigma0 * np.exp(np.asarray(n, float) * log_step)


def mean_w2_squared(n, M, estimator="unbiased", sigma0=1.0):
    """E[W_2^2(N(mu_n, sigma_n^2), N(mu_0, sigma0^2))] = E(mu_n-mu_0)^2 + E sigma_n^2 - 2 sigma0 E sigma_n + sigma0^2.

    Equation ``eq-gauss-w2`` of ``chapters/gaussian.md``.
    """
    return (
        mean_sq_drift(n, M, estimator, sigma0)
        + mean_var(n, M, estimator, sigma0)
        - 2 * sigma0 * mean_sigma(n, M, estimator, sigma0)
        + sigma0**2
    )


def w2_squared(mu, var, mu0=0.0, sigma0=1.0):
    """W_2^2 between N(mu, var) and N(mu0, sigma0^2), elementwise."""
    return (np.asarray(mu) - mu0) ** 2 + (np.sqrt(var) - sigma0) ** 2


# --------------------------------------------------------------------------- the chapter

VERSION = "1"  # bump when a change alters the numbers; old cached results are then ignored


@dataclasses.dataclass(frozen=True)
class GaussianChapter:
    """What chapter 1 runs at one profile."""

    profile: str = "cpu"  # ci / cpu / paper
    seed: int = 0  # base seed of every run in the chapter
    sample_sizes: tuple[int, ...] = (100, 500, 1000, 10_000)  # M, as in the paper's figure
    n_chains: int = 10_000  # chains per (M, estimator)
    n_generations: int = 1000  # as in the paper's figure
    sampler: str = "stats"  # "draws" reproduces the notebook's sampling literally
    regimes: tuple[str, ...] = ("replace", "accumulate", "mix(0.1)", "mix(0.5)")  # compared side by side
    regime_sample_size: int = 100  # M of the regime comparison
    check_sample_size: int = 100  # M of the draws-versus-stats cross-check
    check_chains: int = 2000  # chains of that cross-check (each draws M points per generation)

    def __post_init__(self) -> None:
        check_chapter(self.profile, self.seed)
        for M in self.sample_sizes:
            check_int("sample_sizes[...]", M, minimum=2)
        for text in self.regimes:
            Regime.parse(text)

    @property
    def seeds(self) -> tuple[int, ...]:
        return (self.seed,)

    def describe(self, data=None) -> str:
        return executed_note(
            f"profile `{self.profile}` and seed `{self.seed}`: {self.n_chains:,} chains per sample size, "
            f"{self.n_generations:,} generations, sample sizes M ∈ {{{', '.join(f'{m:,}' for m in self.sample_sizes)}}}, "
            f"sampler `{self.sampler}`."
        )

    def run(self, M: int, estimator: str = "unbiased", regime: str = "replace", sampler: str | None = None, **kw):
        return GaussianRun(
            n_samples=M,
            n_chains=kw.pop("n_chains", self.n_chains),
            n_generations=kw.pop("n_generations", self.n_generations),
            estimator=estimator,
            sampler=sampler or self.sampler,
            regime=Regime.parse(regime),
            seed=self.seed,
            **kw,
        )


def chapter_config(profile: str, seed: int = 0) -> GaussianChapter:
    """The sizes of chapter 1 at ``profile``: same code, different numbers."""
    check_chapter(profile, seed)
    if profile == "ci":
        return GaussianChapter(profile, seed, n_chains=2000, n_generations=200, check_chains=500)
    if profile == "paper":  # sample every point, as the authors' notebook does
        return GaussianChapter(profile, seed, sampler="draws", check_chains=10_000, check_sample_size=1000)
    return GaussianChapter(profile, seed)


def run_cached(config: GaussianRun, store=None) -> dict[str, np.ndarray]:
    """:func:`run`, stored under its config: a second call with the same config loads it."""
    from .store import ResultsStore

    store = store or ResultsStore()
    return store.cached("gaussian", VERSION, config, lambda: run(config))


def agreement(result: dict, config: GaussianRun, cv_max: float = 3.0) -> dict[str, np.ndarray]:
    """z-scores of simulated means against the closed forms at every recorded n (all >= 1).

    ``log_var`` (E log sigma_n^2) and ``t2`` (E T_n^2 = 1) have light tails and are always
    tested. E sigma_n^2, E (mu_n - mu0)^2 and E sigma_n (``sigma``) are tested only where
    the statistic's exact coefficient of variation (sd / mean) is at most ``cv_max``
    (chi^2_1 has 1.4): further out the mean is carried by ever rarer chains (sigma_n^2 -> 0
    a.s. while its mean stays put), and a finite sample cannot see it -- which the chapter
    shows rather than tests. E W_2^2 (``w2``, :func:`mean_w2_squared`) has no closed-form
    variance: its standard error is the sample's, and it is tested where both of its
    parts, sigma_n^2 and (mu_n - mu0)^2, are.
    """
    if config.regime.kind != "replace":
        raise ValueError("closed forms hold for regime 'replace' only")
    M, est, s0, S = config.n_samples, config.estimator, config.sigma0, config.n_chains
    n = result["n"]
    mu, var, t = (result[k] for k in ("mu", "var", "t"))
    out = {
        "n": n,
        "log_var": (np.log(var).mean(0) - mean_log_var(n, M, est, s0)) / np.sqrt(var_log_var(n, M) / S),
        "t2": ((t**2).mean(0) - 1.0) / np.sqrt(2.0 / S),
    }
    sigma_mean = mean_sigma(n, M, est, s0)
    testable = {}
    for name, sim, mean, variance in (
        ("var", var, mean_var(n, M, est, s0), var_var(n, M, est, s0)),
        ("sq_drift", (mu - config.mu0) ** 2, mean_sq_drift(n, M, est, s0), var_sq_drift(n, M, est, s0)),
        ("sigma", np.sqrt(var), sigma_mean, mean_var(n, M, est, s0) - sigma_mean**2),
    ):
        sd = np.sqrt(np.maximum(variance, 0))
        se = sd / np.sqrt(S)
        testable[name] = sd <= cv_max * mean
        out[name] = np.where(testable[name], (sim.mean(0) - mean) / np.where(se > 0, se, 1), np.nan)
    w2 = (mu - config.mu0) ** 2 + (np.sqrt(var) - s0) ** 2
    se = w2.std(0, ddof=1) / np.sqrt(S)
    both = testable["var"] & testable["sq_drift"] & (se > 0)
    out["w2"] = np.where(both, (w2.mean(0) - mean_w2_squared(n, M, est, s0)) / np.where(se > 0, se, 1), np.nan)
    return out


AGREEMENT_STATISTICS = ("log_var", "t2", "var", "sq_drift", "sigma", "w2")  # what :func:`agreement` tests
