"""A Gaussian in d dimensions refitted to its own samples (chapter ``mixtures``).

Generation n+1 fits N(mu, Sigma) to M draws from generation n with the unbiased
estimators (divisor M − 1). Data enter through their sufficient statistics in square-root
form: the count, the mean and a lower-triangular ``root`` with root rootᵀ equal to the
scatter matrix sum_j (x_j − mean)(x_j − mean)ᵀ. Keeping a root instead of the covariance
is what lets d = 100 run for hundreds of generations: with M = 200 the covariance's
condition number grows by e^0.69 a generation in expectation (the spread of its eigenvalues'
growth rates, :func:`lyapunov_exponents`), so it passes 10^16, where a Cholesky factorisation
of Sigma_n in float64 fails, after about 53 generations, while products of triangular roots
lose nothing.

Two samplers give the same law of (mean, scatter):

* ``draws``: draw the M points and reduce them (a QR factorisation gives the root);
* ``stats``: Bartlett's decomposition, scatter = L A Aᵀ Lᵀ with Sigma = L Lᵀ and A lower
  triangular, A_ii² ~ chi²_{M−i} (i = 1..d), A_ij ~ N(0, 1) below the diagonal, and the mean
  ~ N(mu, Sigma / M) independent of it. O(d³) per generation, whatever M.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from .config import Regime, check_choice, check_int, check_seed
from .runner import StatsModel, log_generations, simulate

SAMPLERS = ("stats", "draws")


class MvParams(NamedTuple):
    mu: jax.Array  # (d,)
    root: jax.Array  # (d, d) lower triangular, Sigma = root rootᵀ


class MvStats(NamedTuple):
    n: jax.Array  # number of points
    mean: jax.Array  # (d,)
    root: jax.Array  # (d, d) lower triangular, root rootᵀ = scatter matrix


def _lower_root(rows_KxD: jax.Array) -> jax.Array:
    """A lower-triangular L with L Lᵀ = rowsᵀ rows (the R of a QR factorisation, transposed)."""
    return jnp.linalg.qr(rows_KxD, mode="r").T


def stats_of(x_MxD: jax.Array) -> MvStats:
    """The square-root statistics of M points (two-pass: centred before the QR)."""
    mean = x_MxD.mean(0)
    return MvStats(jnp.asarray(x_MxD.shape[0], x_MxD.dtype), mean, _lower_root(x_MxD - mean))


def merge(a: MvStats, b: MvStats) -> MvStats:
    """Pool two data sets: scatter = S_a + S_b + δδᵀ n_a n_b / n (Chan et al.), its root by one QR."""
    n = a.n + b.n
    delta = b.mean - a.mean
    rows = jnp.concatenate([a.root.T, b.root.T, (jnp.sqrt(a.n * b.n / n) * delta)[None]], axis=0)
    return MvStats(n, a.mean + delta * b.n / n, _lower_root(rows))


def fit(stats: MvStats) -> MvParams:
    """Unbiased mean and covariance, Sigma = scatter / (M − 1) (equation ``eq-mv-fit``)."""
    return MvParams(stats.mean, stats.root / jnp.sqrt(stats.n - 1))


def sample(key: jax.Array, params: MvParams, m: int) -> jax.Array:
    """m points of N(mu, root rootᵀ), shape (m, d)."""
    z = jax.random.normal(key, (m, params.mu.shape[-1]), jnp.result_type(params.mu))
    return params.mu + z @ params.root.T


def bartlett(key: jax.Array, d: int, k: int, dtype) -> jax.Array:
    """A with A Aᵀ ~ Wishart_d(I, k): lower triangular, A_ii² ~ chi²_{k−i} (i = 0..d−1), N(0, 1) below."""
    key_diag, key_below = jax.random.split(key)
    dof = k - jnp.arange(d, dtype=dtype)
    diag = jnp.sqrt(2.0 * jax.random.gamma(key_diag, dof / 2.0, (d,), dtype))
    below = jnp.tril(jax.random.normal(key_below, (d, d), dtype), -1)
    return below + jnp.diag(diag)


def sample_stats_direct(key: jax.Array, params: MvParams, m: int) -> MvStats:
    """The statistics of m draws, drawn directly (Bartlett; equation ``eq-mv-bartlett``)."""
    d = params.mu.shape[-1]
    if m - 1 < d:
        raise ValueError(f"M = {m} points give a singular covariance in d = {d} dimensions; need M >= d + 1")
    dtype = jnp.result_type(params.mu)
    key_mean, key_scatter = jax.random.split(key)
    mean = params.mu + params.root @ jax.random.normal(key_mean, (d,), dtype) / jnp.sqrt(m)
    return MvStats(jnp.asarray(m, dtype), mean, params.root @ bartlett(key_scatter, d, m - 1, dtype))


def sample_stats_drawn(key: jax.Array, params: MvParams, m: int) -> MvStats:
    """The statistics of m points, by drawing the points."""
    return stats_of(sample(key, params, m))


@functools.lru_cache(maxsize=None)
def model(sampler: str = "stats") -> StatsModel:
    check_choice("sampler", sampler, SAMPLERS)
    return StatsModel(fit=fit, sample_stats=sample_stats_direct if sampler == "stats" else sample_stats_drawn, merge=merge)


@dataclasses.dataclass(frozen=True)
class StandardNormal:
    """The real data N(0, I_d): ``(key, m) -> statistics of m fresh points``."""

    d: int
    sampler: str = "stats"

    def __call__(self, key: jax.Array, m: int) -> MvStats:
        dtype = jnp.result_type(float)
        truth = MvParams(jnp.zeros(self.d, dtype), jnp.eye(self.d, dtype=dtype))
        return model(self.sampler).sample_stats(key, truth, m)


# --------------------------------------------------------------------------- the simulation


@dataclasses.dataclass(frozen=True)
class MvRun:
    """Independent chains of a d-dimensional Gaussian refitted to M of its own points, from N(0, I_d)."""

    d: int = 2  # dimension
    n_samples: int = 200  # M, points per generation (M >= d + 1)
    n_chains: int = 1000  # independent chains
    n_generations: int = 300  # fits after the first
    sampler: str = "stats"  # "stats" (Bartlett, O(d³)) or "draws" (M points, O(M d²))
    regime: Regime = Regime()  # replace / accumulate / mix(alpha)
    seed: int = 0
    n_recorded: int = 40  # generations kept (log-spaced, 0 and the last included)

    def __post_init__(self) -> None:
        check_int("d", self.d, minimum=1)
        check_int("n_samples", self.n_samples, minimum=self.d + 1)
        check_int("n_chains", self.n_chains, minimum=1)
        check_int("n_generations", self.n_generations, minimum=1)
        check_int("n_recorded", self.n_recorded, minimum=2)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_seed("seed", self.seed)
        if not isinstance(self.regime, Regime):
            raise ValueError(f"regime={self.regime!r} must be a collapse.Regime, e.g. Regime.parse('mix(0.1)')")


def summary(params: MvParams) -> dict[str, jax.Array]:
    """What a chain keeps of generation n: log det Sigma, tr Sigma, log Sigma_11, |mu|², tr Sigma^½."""
    root = params.root
    return {
        "log_det": 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(root)))),
        "trace": jnp.sum(root**2),
        "log_var_1": jnp.log(jnp.sum(root[0] ** 2)),  # the first coordinate's variance, e₁ᵀ Sigma e₁
        "sq_drift": jnp.sum(params.mu**2),
        "trace_sqrt": jnp.sum(jnp.linalg.svd(root, compute_uv=False)),  # singular values of root = eigenvalues of Sigma^½
    }


def run(config: MvRun, real=None) -> dict[str, np.ndarray]:
    """Simulate; every statistic of :func:`summary` per chain at the recorded n, shape (chains, recorded).

    n counts fits as in the Gaussian chapter: n = 0 is the real distribution N(0, I_d) (its
    values are put in, not simulated), n = 1 the fit to real data. ``real`` replaces the
    real source (any ``(key, m) -> MvStats``, e.g. a mixture: the theorem's D_0 need not be
    Gaussian); n = 0 then holds N(0, I_d)'s values still, for reference only. Float64.
    """
    kept = log_generations(config.n_generations, config.n_recorded)  # runner generations (n − 1)
    with jax.enable_x64(True):
        history = simulate(
            model(config.sampler),
            real or StandardNormal(config.d, config.sampler),
            seed=config.seed,
            n_chains=config.n_chains,
            n_samples=config.n_samples,
            n_generations=config.n_generations,
            regime=config.regime,
            record=summary,
            record_at=tuple(int(g) for g in kept),
            batch_size=_batch_size(config.d),
        )
    d, S = config.d, config.n_chains
    truth = {"log_det": 0.0, "trace": float(d), "log_var_1": 0.0, "sq_drift": 0.0, "trace_sqrt": float(d)}
    out = {"n": np.concatenate([[0], kept + 1])}
    for name, value in history.items():
        out[name] = np.concatenate([np.full((S, 1), truth[name]), np.asarray(value)], axis=1)
    out["w2"] = w2_squared(out)
    return out


def _batch_size(d: int) -> int:
    # The chains' roots are (d, d) each; 4096 chains of d = 100 hold 330 MB of float64 per copy.
    return max(64, 4096 * 100 // max(d, 100))


def w2_squared(result: dict) -> np.ndarray:
    """Bures–Wasserstein W₂² between N(mu_n, Sigma_n) and N(0, I_d): |mu|² + tr Sigma + d − 2 tr Sigma^½
    (equation ``eq-mv-w2``; d is the trace at n = 0)."""
    d = result["trace"][:, :1]
    return result["sq_drift"] + result["trace"] + d - 2.0 * result["trace_sqrt"]


# --------------------------------------------------------------------------- closed forms
# k = M − 1. Sigma_{n+1} = L_n W L_nᵀ with W ~ Wishart_d(I, k) / k given Sigma_n = L_n L_nᵀ,
# independent of the past; mu_{n+1} = mu_n + L_n Z / sqrt(M). Real data N(0, I_d).


def log_det_drift(d: int, M):
    """E[log det Sigma_{n+1} − log det Sigma_n] = Σ_{i=0}^{d−1} ψ((k−i)/2) + d log(2/k) (eq. ``eq-mv-logdet``)."""
    k = np.asarray(M, float) - 1
    i = np.arange(d)
    return np.sum(special.digamma((k[..., None] - i) / 2), axis=-1) + d * np.log(2 / k)


def log_det_step_variance(d: int, M):
    """Var[log det Sigma_{n+1} − log det Sigma_n] = Σ_{i=0}^{d−1} ψ'((k−i)/2)."""
    k = np.asarray(M, float) - 1
    return np.sum(special.polygamma(1, (k[..., None] - np.arange(d)) / 2), axis=-1)


def lyapunov_exponents(d: int, M) -> np.ndarray:
    """The growth rates of Sigma_n's eigenvalues, ψ((k−i)/2) + log(2/k) for i = 0..d−1 (twice the
    Lyapunov exponents of the product of Gaussian matrices, Newman 1986): all negative, the
    largest equal to the one-dimensional drift ψ(k/2) + log(2/k)."""
    k = float(M) - 1
    return special.digamma((k - np.arange(d)) / 2) + np.log(2 / k)


def mean_log_det(n, d: int, M):
    return np.asarray(n, float) * log_det_drift(d, M)


def var_log_det(n, d: int, M):
    return np.asarray(n, float) * log_det_step_variance(d, M)


def mean_log_var_1(n, M):
    """E[log vᵀSigma_n v / vᵀv] for any fixed v: n (ψ(k/2) + log(2/k)), the one-dimensional law (eq. ``eq-mv-direction``)."""
    k = float(M) - 1
    return np.asarray(n, float) * (special.digamma(k / 2) + np.log(2 / k))


def var_log_var_1(n, M):
    return np.asarray(n, float) * special.polygamma(1, (float(M) - 1) / 2)


def _trace_moments(n_max: int, d: int, M) -> tuple[np.ndarray, np.ndarray]:
    """a_n = E[(tr Sigma_n)²] and b_n = E[tr Sigma_n²] for n = 0..n_max (eq. ``eq-mv-trace``):
    a_{n+1} = a_n + 2 b_n / k, b_{n+1} = (1 + 1/k) b_n + a_n / k, from a_0 = d², b_0 = d."""
    k = float(M) - 1
    a, b = np.empty(n_max + 1), np.empty(n_max + 1)
    a[0], b[0] = float(d) ** 2, float(d)
    for i in range(n_max):
        a[i + 1] = a[i] + 2 * b[i] / k
        b[i + 1] = (1 + 1 / k) * b[i] + a[i] / k
    return a, b


def mean_trace(n, d: int, M):
    """E[tr Sigma_n] = d: the covariance is a matrix martingale."""
    return np.full(np.shape(n), float(d))


def var_trace(n, d: int, M):
    n = np.asarray(n, int)
    a, _ = _trace_moments(int(n.max(initial=0)), d, M)
    return a[n] - float(d) ** 2


def mean_sq_drift(n, d: int, M):
    """E|mu_n − mu_0|² = Σ_{i<n} E tr Sigma_i / M = n d / M."""
    return np.asarray(n, float) * d / M


def var_sq_drift(n, d: int, M):
    """Var|mu_n − mu_0|². Given the path, mu_n − mu_0 ~ N(0, V), V = Σ_{i<n} Sigma_i / M, and
    E|G|⁴ = E[(tr V)² + 2 tr V²]; for i ≤ j, E[tr Sigma_i tr Sigma_j] = a_i and E tr(Sigma_i Sigma_j) = b_i
    (the martingale property), so both sums run over min(i, j)."""
    n = np.asarray(n, int)
    a, b = _trace_moments(int(n.max(initial=0)), d, M)
    out = []
    for m in np.atleast_1d(n):
        i = np.arange(m)
        pairs = 2 * (m - 1 - i) + 1  # pairs (i', j') with min(i', j') = i
        fourth = np.sum(pairs * (a[:m] + 2 * b[:m])) / M**2
        out.append(fourth - (m * d / M) ** 2)
    return np.asarray(out, float).reshape(n.shape)


AGREEMENT_STATISTICS = ("log_det", "log_var_1", "trace", "sq_drift")  # what :func:`agreement` tests


def agreement(result: dict, config: MvRun, cv_max: float = 3.0) -> dict[str, np.ndarray]:
    """z-scores of the simulated means against the closed forms at every recorded n >= 1.

    The log-determinant and the log-variance along a fixed direction are sums of independent
    log chi² terms (light tails) and are always tested; tr Sigma_n and |mu_n|² only where their exact
    coefficient of variation is at most ``cv_max`` (as in :func:`collapse.gaussian.agreement`).
    """
    if config.regime.kind != "replace":
        raise ValueError("closed forms hold for regime 'replace' only")
    d, M, S = config.d, config.n_samples, config.n_chains
    n = result["n"][1:]
    out = {"n": n}
    for name, mean, variance in (
        ("log_det", mean_log_det(n, d, M), var_log_det(n, d, M)),
        ("log_var_1", mean_log_var_1(n, M), var_log_var_1(n, M)),
        ("trace", mean_trace(n, d, M), var_trace(n, d, M)),
        ("sq_drift", mean_sq_drift(n, d, M), var_sq_drift(n, d, M)),
    ):
        sd = np.sqrt(np.maximum(variance, 0.0))
        z = (result[name][:, 1:].mean(0) - mean) / np.where(sd > 0, sd / np.sqrt(S), 1.0)
        out[name] = z if name in ("log_det", "log_var_1") else np.where(sd <= cv_max * np.abs(mean), z, np.nan)
    return out
