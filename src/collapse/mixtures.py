"""Chapter ``mixtures``: beyond one Gaussian -- d dimensions, mixtures fitted by EM, kernel density estimates.

The entry module of ``chapters/mixtures.md``: its sizes per profile (:func:`chapter_config`),
its runs (stored in the results store), and the checks of theory against simulation that
fail the page's build. The models are in ``multivariate``, ``gmm`` and ``kde``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import gmm, kde, multivariate
from .chapter import check_chapter, executed_note
from .checks import check_agreement, samplers_agree, z_threshold
from .config import Regime, check_int
from .runner import log_generations, simulate, stream_key

VERSION = "1"  # bump when a change alters the numbers; old stored results are then ignored

# The authors' GMM experiment, as their notebook runs it (Zakahler/curse_recurse,
# Normals_GMM_experiments.ipynb, cell 2, cells numbered from 0):
NOTEBOOK = {
    "data": "make_blobs(n_samples=N, n_features=1, centers=[[0,0]], cluster_std=1): one 2-D standard normal blob",
    "N": 1000,  # ns = [1000]: points per generation
    "n_components": 2,  # ncomponents = 2
    "covariance_type": "full",
    "tol": 1e-5,
    "max_iter": 2000,
    "init": "scikit-learn default: k-means, one start",
    "generations": 2050,  # evolutions = 2050
    "shown": (0, 50, 100, 150, 200, 350, 2000),  # `if m in [0, 50, 100, 150, 200, 350, 2000]`
    "distance": "L2_of_gmms(X_0_gmm, gmm): ∫(f − g)² to the fit to the real data (cell 1)",
}
BLOB = gmm.RealMixture((1.0,), ((0.0, 0.0),), (((1.0, 0.0), (0.0, 1.0)),), capacity=0)  # N(0, I₂), the notebook's data
# Two separated components, for the expressivity error and the kernel density estimates.
TWO_BLOBS = gmm.RealMixture(
    (0.5, 0.5), ((-2.0, 0.0), (2.0, 0.0)), (((0.5, 0.0), (0.0, 0.5)), ((0.5, 0.0), (0.0, 0.5))), capacity=0
)
KDE_SETTINGS = (  # Scott's rule (scipy's default), and fixed bandwidths below, near and above the balance h*
    kde.KdeSettings("scott", 1.0),
    kde.KdeSettings("fixed", 0.02),
    kde.KdeSettings("fixed", 0.05),
    kde.KdeSettings("fixed", 0.2),
)


@dataclasses.dataclass(frozen=True)
class MixturesChapter:
    """What the mixtures chapter runs at one profile."""

    profile: str = "cpu"  # ci / cpu / paper
    seed: int = 0  # base seed of every run in the chapter
    dimensions: tuple[int, ...] = (1, 2, 10, 100)  # d of the multivariate Gaussian
    mv_samples: int = 200  # M points per generation (M ≥ d + 1 for every d)
    mv_chains: int = 4000  # chains for d ≤ 10
    mv_chains_large: int = 256  # chains for d > 10 (O(d³) a generation each)
    mv_generations: int = 300
    check_chains: int = 1000  # chains of the Bartlett-versus-drawn cross-check (d = 10)
    gmm_points: int = 1000  # N, as in the notebook
    gmm_chains: int = 16
    gmm_generations: int = 2000  # the notebook runs 2,050 and shows up to 2,000
    regimes: tuple[str, ...] = ("replace", "accumulate", "mix(0.1)", "accumulate-subsample")
    regime_chains: int = 8
    regime_generations: int = 40  # accumulate's EM runs over (n + 1) N points
    expressivity_chains: int = 200
    expressivity_generations: int = 300
    kde_points: int = 1000  # N of the kernel density estimates
    kde_chains: int = 64
    kde_generations: int = 300
    test_points: int = 500  # fresh real points scoring the KDEs (the score costs chains × N × this)

    def __post_init__(self) -> None:
        check_chapter(self.profile, self.seed)
        for d in self.dimensions:
            check_int("dimensions[...]", d, minimum=1)
        check_int("mv_samples", self.mv_samples, minimum=max(self.dimensions) + 1)
        for name in ("mv_chains", "mv_chains_large", "check_chains", "gmm_chains", "regime_chains",
                     "expressivity_chains", "kde_chains", "test_points"):
            check_int(name, getattr(self, name), minimum=2)
        for name in ("mv_generations", "gmm_generations", "regime_generations", "expressivity_generations",
                     "kde_generations"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("gmm_points", self.gmm_points, minimum=10)
        check_int("kde_points", self.kde_points, minimum=10)
        for text in self.regimes:
            Regime.parse(text)

    @property
    def seeds(self) -> tuple[int, ...]:
        return (self.seed,)

    def describe(self, data=None) -> str:
        return executed_note(
            f"profile `{self.profile}` and seed `{self.seed}`: multivariate Gaussians in d ∈ "
            f"{{{', '.join(map(str, self.dimensions))}}} with M = {self.mv_samples}, {self.mv_chains:,} chains "
            f"({self.mv_chains_large} for d > 10) over {self.mv_generations} generations; the GMM experiment with "
            f"N = {self.gmm_points:,}, {self.gmm_chains} chains over {self.gmm_generations:,} generations; the regimes "
            f"over {self.regime_generations} generations ({self.regime_chains} chains); kernel density estimates with "
            f"N = {self.kde_points:,}, {self.kde_chains} chains over {self.kde_generations} generations."
        )

    def mv_run(self, d: int, sampler: str = "stats", n_chains: int | None = None) -> multivariate.MvRun:
        chains = n_chains or (self.mv_chains if d <= 10 else self.mv_chains_large)
        return multivariate.MvRun(d=d, n_samples=self.mv_samples, n_chains=chains,
                                  n_generations=self.mv_generations, sampler=sampler, seed=self.seed)


def chapter_config(profile: str, seed: int = 0) -> MixturesChapter:
    """The chapter's sizes at ``profile``: same code, different numbers."""
    check_chapter(profile, seed)
    if profile == "ci":
        return MixturesChapter(profile, seed, mv_chains=1000, mv_chains_large=32, mv_generations=60, check_chains=300,
                               gmm_chains=4, gmm_generations=200, regime_chains=4, regime_generations=10,
                               expressivity_chains=64, expressivity_generations=60, kde_chains=32, kde_generations=60,
                               test_points=200)
    if profile == "paper":
        return MixturesChapter(profile, seed, mv_chains=10_000, mv_chains_large=1000, mv_generations=1000,
                               gmm_chains=100, gmm_generations=2050, regime_chains=32, regime_generations=200,
                               expressivity_chains=1000, kde_chains=256, kde_generations=1000)
    return MixturesChapter(profile, seed)


def _cached(name: str, config, compute) -> dict:
    from .store import ResultsStore

    return ResultsStore().cached(f"mixtures-{name}", VERSION, config, compute)


# --------------------------------------------------------------------------- multivariate Gaussians


def multivariate_results(chapter: MixturesChapter) -> dict[int, dict]:
    return {d: _cached("multivariate", run, functools.partial(multivariate.run, run))
            for d in chapter.dimensions for run in [chapter.mv_run(d)]}


def multivariate_checks(chapter: MixturesChapter, results: dict[int, dict]) -> dict:
    """Every closed form of the multivariate section against the simulation, family-wise; raises on a miss.

    Returns the number of tests, the bound and the largest |z| per statistic.
    """
    z = {d: multivariate.agreement(results[d], chapter.mv_run(d)) for d in results}
    n_checks = sum(int(np.isfinite(z[d][s]).sum()) for d in z for s in multivariate.AGREEMENT_STATISTICS)
    z_max = z_threshold(n_checks)
    worst = {}
    for d, scores in z.items():
        for s in multivariate.AGREEMENT_STATISTICS:
            ok = np.isfinite(scores[s])
            worst[s] = max(worst.get(s, 0.0), check_agreement(f"E[{s}] at d={d}", scores[s][ok], z_max,
                                                               where=scores["n"][ok]))
    return {"n_checks": n_checks, "z_max": z_max, "worst": worst}


def sampler_check(chapter: MixturesChapter, d: int = 10) -> dict:
    """Bartlett's statistics against drawn points (independent chains), by two-sample KS tests of
    log det Sigma_n and tr Sigma_n at six generations; raises if any p < 10⁻³ / (number of tests)."""
    runs = {s: chapter.mv_run(d, s, chapter.check_chains) for s in multivariate.SAMPLERS}
    results = {s: _cached("multivariate", run, functools.partial(multivariate.run, run)) for s, run in runs.items()}
    ks = samplers_agree("Bartlett and drawn statistics", results["stats"], results["draws"], ("log_det", "trace"))
    return {"d": d, "n_tests": ks["n_tests"], "p_min": ks["p_min"], "chains": chapter.check_chains}


# --------------------------------------------------------------------------- mixtures by EM


@dataclasses.dataclass(frozen=True)
class GmmRun:
    """Chains of a K-component mixture refitted by EM to N of its own points."""

    truth: gmm.RealMixture = BLOB
    n_points: int = 1000  # N
    n_chains: int = 16
    n_generations: int = 2000
    regime: Regime = Regime()
    settings: gmm.EMSettings = gmm.EMSettings()
    seed: int = 0

    def capacity(self) -> int:
        grows = self.regime.kind in ("accumulate", "accumulate-subsample")
        return self.n_points * (self.n_generations + 1 if grows else 1)


def _l2_to(reference: gmm.GmmParams, params: gmm.GmmParams) -> np.ndarray:
    """∫(p_ref − p_n)², chains × generations; ``reference`` per chain (a leading chain axis) or one mixture."""
    if np.ndim(reference.weights) == 2:
        reference = gmm.GmmParams(*(np.asarray(v)[:, None] for v in reference))
    return gmm.l2_squared(reference, params)


def run_gmm(run: GmmRun) -> dict[str, np.ndarray]:
    """Every generation's fit (n = 0 is the fit to the real data, as the notebook's X_0_gmm) and its
    squared L2 distance to the chain's generation-0 fit (the notebook's curve) and to the truth."""
    truth = dataclasses.replace(run.truth, capacity=run.capacity())
    with jax.enable_x64(True):
        params = simulate(gmm.model(run.settings, run.capacity()), truth, seed=run.seed, n_chains=run.n_chains,
                          n_samples=run.n_points, n_generations=run.n_generations, regime=run.regime,
                          lockstep=jax.default_backend() != "cpu")  # EM's loop: one chain after another on a CPU
        truth_params = truth.params()
    params = gmm.GmmParams(*(np.asarray(v) for v in params))
    first = gmm.GmmParams(*(v[:, 0] for v in params))
    return {"weights": params.weights, "means": params.means, "roots": params.roots,
            "l2_to_first": _l2_to(first, params), "l2_to_truth": _l2_to(truth_params, params)}


def gmm_run(chapter: MixturesChapter, regime: str = "replace", **kw) -> GmmRun:
    return GmmRun(n_points=chapter.gmm_points, n_chains=kw.pop("n_chains", chapter.gmm_chains),
                  n_generations=kw.pop("n_generations", chapter.gmm_generations), regime=Regime.parse(regime),
                  seed=chapter.seed, **kw)


def gmm_results(run: GmmRun) -> dict:
    return _cached("gmm", run, functools.partial(run_gmm, run))


def params_at(result: dict, chain: int, generation: int) -> gmm.GmmParams:
    return gmm.GmmParams(*(jnp.asarray(result[k][chain, generation]) for k in ("weights", "means", "roots")))


def scatter_points(result: dict, chapter: MixturesChapter, generations, chain: int = 0) -> dict[int, np.ndarray]:
    """N fresh points of chain ``chain``'s fit at each generation shown (the notebook plots gmm.sample(N),
    the next generation's data; these have the same law), from the named stream ``mixtures/figures``."""
    key = stream_key(chapter.seed, "mixtures/figures")
    with jax.enable_x64(True):
        return {g: np.asarray(gmm.sample(jax.random.fold_in(key, g), params_at(result, chain, g), chapter.gmm_points))
                for g in generations}


def em_check(chapter: MixturesChapter, n_sets: int = 8, tolerance: float = 1e-4) -> dict:
    """The library's EM against scikit-learn's ``GaussianMixture`` (the notebook's settings) on the same
    data sets (N real points each, of both truths, from the named stream ``mixtures/em-check``).

    From the same starting point (the library's k-means start handed to scikit-learn as
    ``weights_init``, ``means_init``, ``precisions_init``) both must reach the same mean
    log-likelihood: this raises if they differ by more than ``tolerance`` nats a point on any set.
    From each one's own random start they may stop at different local optima; those gaps are
    reported, not tested.
    """
    from sklearn.mixture import GaussianMixture

    key = stream_key(chapter.seed, "mixtures/em-check")
    settings = gmm.EMSettings()
    options = dict(n_components=settings.n_components, covariance_type="full", tol=settings.tol,
                   max_iter=settings.max_iter, reg_covar=settings.reg_covar)
    same_start, own_start = [], []
    with jax.enable_x64(True):
        start = jax.jit(lambda k, x: gmm.initial_params(k, x, jnp.ones(x.shape[0]), settings))
        fit = jax.jit(lambda x, p: gmm.em(None, x, jnp.ones(x.shape[0]), settings, start=p))
        for i in range(n_sets):
            key_data, key_fit = jax.random.split(jax.random.fold_in(key, i))
            for truth in (BLOB, TWO_BLOBS):
                x = gmm.sample(key_data, truth.params(), chapter.gmm_points)
                p0 = start(key_fit, x)
                ours = float(jnp.mean(gmm.log_density(fit(x, p0).params, x)))
                precisions = np.linalg.inv(np.einsum("kij,klj->kil", p0.roots, p0.roots))
                theirs = GaussianMixture(**options, weights_init=np.asarray(p0.weights), means_init=np.asarray(p0.means),
                                         precisions_init=precisions).fit(np.asarray(x))
                same_start.append(theirs.score(np.asarray(x)) - ours)
                own = GaussianMixture(**options, random_state=i).fit(np.asarray(x))
                own_start.append(own.score(np.asarray(x)) - ours)
    worst = float(np.max(np.abs(same_start)))
    if worst > tolerance:
        raise AssertionError(f"EM and scikit-learn, from the same start, differ by {worst:.2e} nats a point "
                             f"(tolerance {tolerance})")
    return {"n_sets": len(same_start), "worst_gap": worst, "tolerance": tolerance,
            "own_start_gaps": np.asarray(own_start)}


# --------------------------------------------------------------------------- expressivity


def expressivity_run(chapter: MixturesChapter, n_components: int) -> GmmRun:
    """K components fitted to TWO_BLOBS: K = 1 cannot express it (functional expressivity error), K = 2 can."""
    return gmm_run(chapter, n_chains=chapter.expressivity_chains, n_generations=chapter.expressivity_generations,
                   truth=TWO_BLOBS, settings=gmm.EMSettings(n_components=n_components))


def expressivity_floor() -> float:
    """∫(p − q*)² between TWO_BLOBS and q*, the Gaussian with its mean and covariance: the limit of the
    one-component maximum-likelihood fit as N → ∞ (the moment-matching projection)."""
    with jax.enable_x64(True):
        truth = TWO_BLOBS.params()
        best = gmm.gaussian(*gmm.moments(truth))
    return float(gmm.l2_squared(truth, best))


def expressivity_check(chapter: MixturesChapter, result: dict) -> dict:
    """The one-component fit to real data (n = 0) against TWO_BLOBS' moments: E mean = m,
    E Sigma = (1 − 1/N) S + reg I (maximum likelihood). z-scores from the chains' spread; raises on a miss."""
    with jax.enable_x64(True):
        m, S = (np.asarray(v) for v in gmm.moments(TWO_BLOBS.params()))
    means = result["means"][:, 0, 0]  # (chains, d)
    covs = np.einsum("cij,ckj->cik", result["roots"][:, 0, 0], result["roots"][:, 0, 0])
    N = chapter.gmm_points
    expected_cov = (1 - 1 / N) * S + gmm.EMSettings().reg_covar * np.eye(len(m))
    chains = means.shape[0]
    z = np.concatenate([
        (means.mean(0) - m) / (means.std(0, ddof=1) / np.sqrt(chains)),
        ((covs.mean(0) - expected_cov) / (covs.std(0, ddof=1) / np.sqrt(chains)))[np.triu_indices(len(m))],
    ])
    z_max = z_threshold(len(z))
    worst = check_agreement("the one-component fit's moments", z, z_max)
    return {"n_checks": len(z), "z_max": z_max, "worst": worst}


# --------------------------------------------------------------------------- kernel density estimates


@dataclasses.dataclass(frozen=True)
class KdeRun:
    settings: kde.KdeSettings
    truth: gmm.RealMixture = TWO_BLOBS
    n_points: int = 1000
    n_chains: int = 64
    n_generations: int = 300
    test_points: int = 500
    seed: int = 0
    n_recorded: int = 30


def run_kde(run: KdeRun) -> dict[str, np.ndarray]:
    """tr S_n (the training points' covariance, divisor N) and the mean negative log-likelihood of
    ``test_points`` fresh real points (named stream ``mixtures/test``) at the recorded generations."""
    truth = dataclasses.replace(run.truth, capacity=run.n_points)
    kept = log_generations(run.n_generations, run.n_recorded)
    with jax.enable_x64(True):
        params = simulate(kde.model(run.settings, run.n_points), truth, seed=run.seed, n_chains=run.n_chains,
                          n_samples=run.n_points, n_generations=run.n_generations, regime=Regime(),
                          record_at=tuple(int(g) for g in kept))
        test = gmm.sample(stream_key(run.seed, "mixtures/test"), truth.params(), run.test_points)
        flat = jax.tree.map(lambda v: jnp.asarray(v).reshape(-1, *v.shape[2:]), params)  # (chains × recorded, …)
        # One (chain, generation) at a time: T × N memory, not chains × generations × T × N.
        score = jax.jit(lambda p: jax.lax.map(lambda q: (-jnp.mean(kde.log_density(q, test)), kde.trace_of(q)), p))
        nll, trace = (np.asarray(v).reshape(run.n_chains, len(kept)) for v in score(flat))
        entropy = float(-jnp.mean(gmm.log_density(truth.params(), test)))
    return {"n": kept, "trace": trace, "nll": nll, "nll_truth": np.asarray(entropy)}


def kde_results(chapter: MixturesChapter) -> dict[kde.KdeSettings, dict]:
    out = {}
    for settings in KDE_SETTINGS:
        run = KdeRun(settings, n_points=chapter.kde_points, n_chains=chapter.kde_chains,
                     n_generations=chapter.kde_generations, test_points=chapter.test_points, seed=chapter.seed)
        out[settings] = _cached("kde", run, functools.partial(run_kde, run))
    return out


@functools.lru_cache(maxsize=1)
def two_blobs_trace() -> float:
    """tr Sigma_0 of TWO_BLOBS, the real data of the kernel density estimates."""
    with jax.enable_x64(True):
        return float(np.trace(np.asarray(gmm.moments(TWO_BLOBS.params())[1])))


def kde_trace_theory(settings: kde.KdeSettings, chapter: MixturesChapter, n) -> np.ndarray:
    return kde.mean_trace(n, settings, chapter.kde_points, 2, two_blobs_trace())


def kde_checks(chapter: MixturesChapter, results: dict) -> dict:
    """E tr S_n (eq. ``eq-kde-trace``) against the chains' mean at every recorded n; standard errors from
    the chains' spread. Raises on a miss."""
    z_all, where = [], []
    for settings, r in results.items():
        theory = kde_trace_theory(settings, chapter, r["n"])
        se = r["trace"].std(0, ddof=1) / np.sqrt(r["trace"].shape[0])
        z_all.append((r["trace"].mean(0) - theory) / se)
        where += [f"{settings}, n = {n}" for n in r["n"]]
    z = np.concatenate(z_all)
    z_max = z_threshold(len(z))
    worst = check_agreement("E tr S_n of the KDEs", z, z_max, where=where)
    return {"n_checks": len(z), "z_max": z_max, "worst": worst}


def balanced_bandwidth(chapter: MixturesChapter) -> float:
    """The fixed h whose stationary E tr S, (N − 1) d h², equals the truth's tr Sigma_0."""
    return float(np.sqrt(two_blobs_trace() / ((chapter.kde_points - 1) * 2)))


# --------------------------------------------------------------------------- what the page states


def quantiles_over_chains(values_SxG: np.ndarray, q=(0.1, 0.5, 0.9)) -> np.ndarray:
    """Quantiles over the chains (axis 0), one row per quantile."""
    return np.quantile(values_SxG, q, axis=0)


def regime_summary(results: dict[str, dict]) -> dict:
    """Each regime's median ∫(p_n − p_truth)² at the last generation, the regimes ranked (best first), and how
    many times replace's the best one is."""
    last = {name: float(np.median(r["l2_to_truth"][:, -1])) for name, r in results.items()}
    ranked = sorted(last, key=last.get)
    return {"last": last, "ranked": ranked,
            "replace_over_best": last["replace"] / last[ranked[0]] if "replace" in last else float("nan")}


def kde_summary(chapter: MixturesChapter, results: dict) -> dict:
    """Per bandwidth setting: E tr S at the last generation against the truth's tr Sigma_0, and the median excess
    negative log-likelihood (nats, over the truth's own) at generation 0 and at the last generation."""
    trace0 = two_blobs_trace()
    out = {}
    for settings, r in results.items():
        excess = r["nll"] - r["nll_truth"]
        out[str(settings)] = {"trace_ratio": float(r["trace"][:, -1].mean() / trace0),
                              "excess_first": float(np.median(excess[:, 0])),
                              "excess_last": float(np.median(excess[:, -1]))}
    return out


def real_points(chapter: MixturesChapter, truth: gmm.RealMixture = BLOB) -> np.ndarray:
    """N fresh real points for the figures (named stream ``mixtures/figures``, apart from the fitted ones)."""
    with jax.enable_x64(True):
        key = jax.random.fold_in(stream_key(chapter.seed, "mixtures/figures"), 2**31)
        return np.asarray(gmm.sample(key, truth.params(), chapter.gmm_points))


def gmm_drift(result: dict) -> dict:
    """How the notebook's experiment moved, per chain then the median over chains: the squared distance to
    generation 0's fit at generation 1 and at the last, their ratio; the mixture's total variance
    (tr of its covariance) at the last generation relative to generation 0's; and how far its mean moved."""
    with jax.enable_x64(True):
        params = gmm.GmmParams(*(jnp.asarray(result[k]) for k in ("weights", "means", "roots")))
        mean, cov = jax.vmap(jax.vmap(gmm.moments))(params)
    total = np.trace(np.asarray(cov), axis1=-2, axis2=-1)
    l2 = result["l2_to_first"]
    return {"l2_first": float(np.median(l2[:, 1])), "l2_last": float(np.median(l2[:, -1])),
            "l2_ratio": float(np.median(l2[:, -1] / l2[:, 1])),
            "chains_farther": int(np.sum(l2[:, -1] > l2[:, 1])), "n_compared": int(l2.shape[0]),
            "variance_ratio": float(np.median(total[:, -1] / total[:, 0])),
            "mean_shift": float(np.median(np.linalg.norm(np.asarray(mean)[:, -1] - np.asarray(mean)[:, 0], axis=-1)))}


def kde_verdict(numbers: dict) -> str:
    """Which bandwidth settings ended with a larger median excess negative log-likelihood than they started with."""
    worse = [name for name, v in numbers.items() if v["excess_last"] > v["excess_first"]]
    if len(worse) == len(numbers):
        return "every bandwidth setting ended worse than it started"
    if not worse:
        return "no bandwidth setting ended worse than it started"
    return f"{len(worse)} of {len(numbers)} settings ended worse than they started ({', '.join(worse)})"


def crossover(simple: dict, rich: dict) -> int | None:
    """The first generation at which the richer model's median distance to the truth is at least the
    simpler one's (None if it never is within the run)."""
    later = np.nonzero(np.median(rich["l2_to_truth"], 0) >= np.median(simple["l2_to_truth"], 0))[0]
    return int(later[0]) if len(later) else None


def gmm_verdict(drift: dict) -> str:
    """What :func:`gmm_drift`'s medians say, in words: whether the spread has collapsed (below half of
    generation 0's) and whether most chains moved away from their first fit."""
    spread = ("the spread has collapsed" if drift["variance_ratio"] < 0.5
              else "the spread has not (yet) collapsed in this many generations")
    away = drift["chains_farther"] > drift["n_compared"] / 2
    return f"{spread}, and {'most' if away else 'not most'} chains moved away from their first fit"
