"""How much real data keeps the cheap models of chapters 1 and 2 from collapsing.

For a Gaussian refitted to M points per generation, and a categorical distribution
re-estimated from M draws, we ask: after G generations, what share is left of the
variance (Gaussian, against σ₀²), or of the real mass of the rare states that the model
still gives positive probability (categorical: its tail still alive, against what one
fit to M real draws keeps on average, Σ_tail p₀(1 − (1 − p₀)^M))?
Under ``mix(α)`` a fraction α of every generation's M points is fresh real data.
:func:`smallest_fraction` finds the least α on a grid for which the *median* chain keeps
at least a chosen share. (The mean is the wrong summary for the Gaussian: with the
unbiased estimator E σ²_n = σ₀² for every n, while almost every chain collapses.)

All runs go through the shared runner (:func:`collapse.runner.simulate` via the chapters'
own ``run`` functions) and are cached by configuration.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import discrete, gaussian
from .chapter import check_chapter
from .config import Regime, check_choice, check_int, check_unit_interval
from .store import ResultsStore

VERSION = "1"
MODELS = ("gaussian", "discrete")


@dataclasses.dataclass(frozen=True)
class KeepRun:
    """Chains of one model at one sample size and regime, measured after ``n_generations``."""

    model: str  # "gaussian" (variance) or "discrete" (real mass of the tail states still alive)
    n_samples: int  # M, points per generation
    regime: Regime = Regime()  # replace / accumulate / mix(alpha)
    n_generations: int = 100  # generations after the fit to real data
    n_chains: int = 2000  # independent chains
    distribution: str = "zipf(1000, 1)"  # discrete: the real distribution p0
    tail_below: float = 0.001  # discrete: the tail is the states with p0 below this (fixed for every M)
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODELS)
        check_int("n_samples", self.n_samples, minimum=2)
        check_int("n_generations", self.n_generations, minimum=1)
        check_int("n_chains", self.n_chains, minimum=1)
        check_unit_interval("tail_below", self.tail_below)


def real_tail_alive(distribution: str, tail_below: float, n_samples: int) -> float:
    """E[real mass of the tail states seen in M real draws] = Σ_tail p₀ (1 − (1 − p₀)^M)."""
    p0 = discrete.initial_distribution(distribution)
    tail = p0[p0 < tail_below]
    return float(np.sum(tail * (1.0 - discrete.missing_probability(tail, n_samples))))


def kept_share(config: KeepRun, store: ResultsStore | None = None) -> np.ndarray:
    """Per chain: variance (or tail mass still alive) after ``n_generations`` over its real value."""

    def compute():
        if config.model == "gaussian":
            run = gaussian.GaussianRun(n_samples=config.n_samples, n_chains=config.n_chains, n_generations=config.n_generations,
                                       regime=config.regime, seed=config.seed, n_recorded=2)
            return {"share": gaussian.run(run)["var"][:, -1] / run.sigma0**2}
        run = discrete.CategoricalRun(config.distribution, config.n_samples, config.n_chains, config.n_generations,
                                      config.regime, config.seed, n_recorded=2)
        alive = discrete.run(run, tail_samples=round(1 / config.tail_below), fields=("tail_alive",))["tail_alive"][:, -1]
        return {"share": alive / real_tail_alive(config.distribution, config.tail_below, config.n_samples)}

    return (store or ResultsStore()).cached("real-fraction", VERSION, config, compute)["share"]


def median_share(config: KeepRun, store: ResultsStore | None = None) -> float:
    return float(np.median(kept_share(config, store)))


def smallest_fraction(model: str, n_samples: int, level: float, alphas, store=None, **kwargs) -> float:
    """The least α of ``alphas`` (increasing) whose median chain keeps ``level`` of the real value
    under ``mix(α)`` (α = 0 is ``replace``); NaN if none does."""
    for alpha in alphas:
        regime = Regime("mix", float(alpha)) if alpha > 0 else Regime()
        if median_share(KeepRun(model, n_samples, regime, **kwargs), store) >= level:
            return float(alpha)
    return float("nan")


def replace_median_theory(n_samples, n_fits: int) -> np.ndarray:
    """Gaussian under ``replace``: log σ²_n is a sum of n i.i.d. log χ² terms, so its median is close
    to its mean; the median share of the variance is about ``exp(E log σ²_n / σ₀²)``."""
    return np.exp(gaussian.mean_log_var(n_fits, np.asarray(n_samples)))


MEDIAN_SKEW_ALLOWANCE = 0.05  # |median − mean| of log σ²_n in sds: the skew of a sum of ≥ 10 log χ² terms (≤ 0.03 here)


def replace_median_agreement(median_shares, n_samples, n_fits: int, n_chains: int) -> tuple[np.ndarray, float]:
    """Check the simulated Gaussian ``replace`` medians against :func:`replace_median_theory`.

    ``z`` is (log median − E log σ²_n) in standard deviations of log σ²_n. The tolerance is
    the skew allowance plus four Monte Carlo standard errors of a median (1.2533 / √chains
    sds). Returns ``(z, tolerance)``; raises ``AssertionError`` naming the M that disagree.
    """
    M = np.asarray(n_samples)
    sd = np.sqrt(gaussian.var_log_var(n_fits, M))
    z = (np.log(np.asarray(median_shares, float)) - gaussian.mean_log_var(n_fits, M)) / sd
    tolerance = MEDIAN_SKEW_ALLOWANCE + 4 * 1.2533 / np.sqrt(n_chains)
    bad = np.abs(z) > tolerance
    if np.any(bad):
        raise AssertionError(f"Gaussian replace medians disagree with theory at M = {M[bad].tolist()}: "
                             f"z = {np.round(z[bad], 3).tolist()}, tolerance {tolerance:.3f}")
    return z, float(tolerance)


# --------------------------------------------------------------------------- the chapter's figure


@dataclasses.dataclass(frozen=True)
class RealFractionChapter:
    """The grid the avoiding-collapse chapter runs at one profile."""

    sample_sizes: tuple[int, ...] = (10, 30, 100, 300, 1000)  # M
    alphas: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # mix(α); 0 is replace
    level: float = 0.5  # the share the median chain must keep
    n_generations: int = 100  # generations after the fit to real data
    gaussian_chains: int = 2000  # chains per (M, regime), Gaussian
    discrete_chains: int = 300  # chains per (M, regime), categorical
    seed: int = 0

    def __post_init__(self) -> None:
        check_unit_interval("level", self.level)
        if list(self.alphas) != sorted(self.alphas) or self.alphas[0] != 0.0:
            raise ValueError(f"alphas={self.alphas!r} must increase from 0 (replace)")

    def run(self, model: str, n_samples: int, regime: Regime) -> KeepRun:
        chains = self.gaussian_chains if model == "gaussian" else self.discrete_chains
        return KeepRun(model, n_samples, regime, self.n_generations, chains, seed=self.seed)


def chapter_config(profile: str, seed: int = 0) -> RealFractionChapter:
    """The grid at ``profile`` (a section of the avoiding chapter: :func:`collapse.avoiding.chapter_config`)."""
    check_chapter(profile, seed)
    if profile == "ci":
        return RealFractionChapter(sample_sizes=(10, 100), alphas=(0.0, 0.1, 0.5), gaussian_chains=300, discrete_chains=50,
                                   seed=seed)
    if profile == "paper":
        return RealFractionChapter(sample_sizes=(10, 30, 100, 300, 1000, 3000, 10_000), gaussian_chains=10_000,
                                   discrete_chains=1000, seed=seed)
    return RealFractionChapter(seed=seed)


def chapter_grid(chapter: RealFractionChapter, store: ResultsStore | None = None) -> dict:
    """Median shares ``{model: {regime text: array over M}}`` for every mix(α) and accumulate,
    the smallest α per M (NaN where none on the grid keeps the level), and that α's effective
    fraction ``round(αM) / M``, the share of real points a generation really holds (``mix(0.05)``
    at M = 10 holds none: it is ``replace``)."""
    out = {"median": {}, "smallest": {}, "smallest_effective": {}}
    for model in MODELS:
        regimes = [Regime("mix", a) if a > 0 else Regime() for a in chapter.alphas] + [Regime("accumulate")]
        out["median"][model] = {
            str(r): np.array([median_share(chapter.run(model, m, r), store) for m in chapter.sample_sizes]) for r in regimes
        }
        out["smallest"][model] = np.array([
            next((a for a, r in zip(chapter.alphas, regimes) if out["median"][model][str(r)][i] >= chapter.level), np.nan)
            for i in range(len(chapter.sample_sizes))
        ])
        out["smallest_effective"][model] = np.array([
            np.nan if np.isnan(a) else effective_fraction(a, m)
            for a, m in zip(out["smallest"][model], chapter.sample_sizes)
        ])
    return out


def effective_fraction(alpha: float, n_samples: int) -> float:
    """The share of real points ``mix(alpha)`` puts in a generation of ``n_samples``: round(αM)/M."""
    return (Regime("mix", float(alpha)).n_real(n_samples) if alpha > 0 else 0) / n_samples
