"""Ordinary least squares, generation after generation, with exact expected errors.

The setting of Gerstgrasser et al. (2024) and Dey & Donoho (2024): a fixed design
``X`` (T rows, d columns), true weights ``w*`` and label noise σ. Generation 0 fits
OLS to labels ``y = X w* + ε``; generation n+1 fits OLS to labels ``X ŵ_n + ε`` drawn
from generation n, under a data :class:`~collapse.config.Regime`:

* ``replace``: all T rows relabelled by generation n;
* ``accumulate``: every data set so far, pooled (the statistics add);
* ``mix(α)``: the first ``αT`` rows keep real labels, the rest are relabelled.

With ``G = XᵀX`` and ``η = G⁻¹Xᵀε ~ N(0, σ²G⁻¹)``, the error ``e_n = ŵ_n − w*`` obeys

* replace and mix: ``e_{n+1} = A e_n + η_{n+1}`` with ``A = G⁻¹ G_S`` (``G_S`` the Gram
  matrix of the relabelled rows; ``A = I`` under replace), so its covariance follows
  ``C_{n+1} = A C_n Aᵀ + σ² G⁻¹`` from ``C_0 = σ² G⁻¹``;
* accumulate: ``e_n = e_{n-1} + η_n / (n + 1)``, so ``C_n = σ² G⁻¹ Σ_{i=1}^{n+1} 1/i²``.

The expected test error on isotropic inputs ``x ~ N(0, I)`` is ``E (xᵀe_n)² = tr C_n``:
``(n + 1) σ² tr G⁻¹`` under replace, at most ``π²/6 · σ² tr G⁻¹`` under accumulate.
Simulation goes through the book's one runner (:func:`collapse.runner.simulate`),
with the sufficient statistics ``(XᵀX, Xᵀy)`` of each data set. They are drawn directly,
without the T labels: ``Xᵀy = XᵀX w + σ Xᵀε`` and ``Xᵀε ~ N(0, XᵀX) = Rᵀz`` with ``R``
from ``X = QR`` and ``z`` standard normal of size d, so a generation costs d normal
draws per chain instead of T (exact in distribution, like the Gaussian's ``stats`` sampler).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .config import Regime, check_int, check_positive, check_seed
from .runner import StatsModel, simulate, stream_key


class Design(NamedTuple):
    """What every chain shares: the inputs, the true weights and the noise level."""

    X_TxD: jax.Array  # the fixed design: T rows of d inputs
    w_star: jax.Array  # (d,) true weights
    sigma: float  # standard deviation of the label noise


class Stats(NamedTuple):
    """Sufficient statistics of a labelled data set for OLS."""

    gram_DxD: jax.Array  # Xᵀ X
    moment_D: jax.Array  # Xᵀ y


@dataclasses.dataclass(frozen=True)
class RegressionConfig:
    """One experiment: the design's size and noise, and how long and how many chains run."""

    n_samples: int = 100  # T: rows of the design, the size of every generation's data set
    dim: int = 10  # d: inputs per row (T > d + 1 keeps E tr G⁻¹ = d/(T − d − 1) finite)
    sigma: float = 1.0  # label noise
    n_generations: int = 50  # generations after generation 0
    n_chains: int = 4000  # independent chains (label noise) on the one design
    seed: int = 0  # the design and every chain derive from it

    def __post_init__(self) -> None:
        check_int("dim", self.dim, minimum=1)
        check_int("n_samples", self.n_samples, minimum=self.dim + 2)
        check_positive("sigma", self.sigma)
        check_int("n_generations", self.n_generations, minimum=0)
        check_int("n_chains", self.n_chains, minimum=1)
        check_seed("seed", self.seed)


def make_design(config: RegressionConfig) -> Design:
    """Gaussian inputs and weights, drawn once from the seed (independently of the chains)."""
    key_x, key_w = jax.random.split(stream_key(config.seed, "regression/design"))
    X = jax.random.normal(key_x, (config.n_samples, config.dim))
    return Design(X, jax.random.normal(key_w, (config.dim,)), float(config.sigma))


def _labelled(design: Design, rows: slice, w, key) -> Stats:
    """The statistics of ``y = X w + σ ε`` on ``rows``, drawn without the labels (see the module notes)."""
    X = design.X_TxD[rows]
    gram = X.T @ X
    R = jnp.linalg.qr(X, mode="r")  # min(rows, d) × d, RᵀR = XᵀX; the same for every chain
    noise = R.T @ jax.random.normal(key, (R.shape[0],))
    return Stats(gram, gram @ w + design.sigma * noise)


def real_stats(design: Design, key, m: int) -> Stats:
    """Real labels on the first ``m`` rows."""
    return _labelled(design, slice(0, m), design.w_star, key)


def sample_stats(design: Design, key, w, m: int) -> Stats:
    """Labels from a fitted ``w`` on the last ``m`` rows (under ``mix`` the rows the real labels leave)."""
    if m > design.X_TxD.shape[0]:
        raise ValueError(f"{m} rows asked of a design with {design.X_TxD.shape[0]}")
    return _labelled(design, slice(design.X_TxD.shape[0] - m, None), w, key)


def fit(stats: Stats) -> jax.Array:
    """OLS weights ``(XᵀX)⁻¹ Xᵀy``."""
    return jnp.linalg.solve(stats.gram_DxD, stats.moment_D)


def merge(a: Stats, b: Stats) -> Stats:
    return Stats(a.gram_DxD + b.gram_DxD, a.moment_D + b.moment_D)


def model(design: Design) -> StatsModel:
    return StatsModel(fit=fit, sample_stats=functools.partial(sample_stats, design), merge=merge)


def excess_error(w_star, w) -> jax.Array:
    """Test error above the noise on isotropic inputs: ``E_x (xᵀ(w − w*))² = ‖w − w*‖²``."""
    return jnp.sum((w - w_star) ** 2)


@functools.lru_cache(maxsize=16)
def _runner_parts(n_samples: int, dim: int, sigma: float, seed: int):
    """The runner's model, real-data source and record for one design, built once so compiled runs are reused."""
    design = make_design(RegressionConfig(n_samples=n_samples, dim=dim, sigma=sigma, seed=seed))
    return model(design), functools.partial(real_stats, design), functools.partial(excess_error, design.w_star)


def simulate_errors(config: RegressionConfig, regime: Regime) -> np.ndarray:
    """Excess test error of every chain at every generation, ``n_chains × (n_generations + 1)``.

    The design is :func:`make_design` ``(config)``: it depends on the seed, T, d and σ only.
    """
    runner_model, real, record = _runner_parts(config.n_samples, config.dim, config.sigma, config.seed)
    return simulate(
        runner_model, real, seed=config.seed, n_chains=config.n_chains, n_samples=config.n_samples,
        n_generations=config.n_generations, regime=regime, record=record,
    )


def _error_recursion(design: Design, regime: Regime) -> tuple[np.ndarray, np.ndarray]:
    """``(A, σ² G⁻¹)`` of ``C_{n+1} = A C_n Aᵀ + σ² G⁻¹`` (replace and mix), in float64."""
    X = np.asarray(design.X_TxD, dtype=np.float64)
    T = X.shape[0]
    X_S = X[regime.n_real(T) :]  # the relabelled rows: all of them under replace
    G_inv = np.linalg.inv(X.T @ X)
    return G_inv @ (X_S.T @ X_S), design.sigma**2 * G_inv


def expected_errors(design: Design, regime: Regime, n_generations: int) -> np.ndarray:
    """Exact ``E ‖ŵ_n − w*‖²`` given the design, n = 0..n_generations (label noise averaged).

    Equation ``eq-avoid-replace``, ``eq-avoid-accumulate``, ``eq-avoid-mix`` of ``chapters/avoiding.md``.
    """
    if regime.kind not in ("replace", "accumulate", "mix"):
        raise ValueError(f"no closed form for regime {regime}; least squares keeps no data points to subsample")
    n = np.arange(n_generations + 1)
    A, noise = _error_recursion(design, regime)
    base = np.trace(noise)
    if regime.kind == "accumulate":
        return base * np.cumsum(1.0 / (n + 1.0) ** 2)
    if regime.n_real(design.X_TxD.shape[0]) == 0:  # replace, or mix with no real rows: A = I
        return base * (n + 1.0)
    C, out = noise, []
    for _ in n:
        out.append(np.trace(C))
        C = A @ C @ A.T + noise
    return np.asarray(out)


def stationary_error(design: Design, regime: Regime) -> float:
    """``lim E_n`` under ``mix`` (inf when the real rows leave some direction of w unseen).

    The limit of :func:`expected_errors`' recursion solves ``C = A C Aᵀ + σ² G⁻¹``; it
    exists when the spectral radius of ``A`` is below 1, that is when the real rows alone
    have a full-rank Gram matrix (at least d of them, in general position).

    Equation ``eq-avoid-mix`` of ``chapters/avoiding.md``.
    """
    from scipy.linalg import solve_discrete_lyapunov

    if regime.kind != "mix":
        raise ValueError(f"only mix has a stationary error; got {regime}")
    A, noise = _error_recursion(design, regime)
    if np.max(np.abs(np.linalg.eigvals(A))) >= 1.0 - 1e-9:
        return float("inf")
    return float(np.trace(solve_discrete_lyapunov(A, noise)))


def expected_error_over_designs(config: RegressionConfig) -> float:
    """Generation 0's error averaged over Gaussian designs too: σ² d / (T − d − 1) (inverse-Wishart mean)."""
    return config.sigma**2 * config.dim / (config.n_samples - config.dim - 1)


ACCUMULATE_BOUND = np.pi**2 / 6  # Σ 1/i²: accumulate never exceeds this multiple of generation 0's error


VERSION = "2"


@dataclasses.dataclass(frozen=True)
class RegressionChapter:
    """What the linear-regression section of chapter 5 runs at one profile."""

    profile: str = "cpu"  # ci / cpu / paper
    run: RegressionConfig = RegressionConfig()  # the design, noise, generations and chains
    regimes: tuple[str, ...] = ("replace", "accumulate", "mix(0.05)", "mix(0.2)", "mix(0.5)")  # side by side


def chapter_config(profile: str, seed: int = 0) -> RegressionChapter:
    """The sizes at ``profile`` (a section of the avoiding chapter: :func:`collapse.avoiding.chapter_config`)."""
    from .chapter import check_chapter

    check_chapter(profile, seed)
    if profile == "ci":
        return RegressionChapter(profile, RegressionConfig(n_samples=40, dim=5, n_generations=30, n_chains=1000, seed=seed))
    if profile == "paper":
        return RegressionChapter(profile, RegressionConfig(n_generations=200, n_chains=100_000, seed=seed))
    return RegressionChapter(profile, RegressionConfig(n_generations=100, n_chains=10_000, seed=seed))


def run_cached(config: RegressionConfig, regime: Regime, store=None) -> dict[str, np.ndarray]:
    """Mean, standard error and closed form of the excess error at every generation (stored)."""
    from .store import ResultsStore

    def compute():
        errors = simulate_errors(config, regime)
        return {
            "mean": errors.mean(0), "standard_error": errors.std(0, ddof=1) / np.sqrt(len(errors)),
            "theory": expected_errors(make_design(config), regime, config.n_generations),
        }

    return (store or ResultsStore()).cached("linear-regression", VERSION, {"run": config, "regime": regime}, compute)
