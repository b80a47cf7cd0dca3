"""The mixtures chapter's models: multivariate Gaussians, EM, the L2 distance, KDEs, pools of points."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from collapse import gaussian, gmm, kde, mixtures, multivariate, pool, runner
from collapse.config import Regime


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# --------------------------------------------------------------------------- multivariate Gaussians


def test_square_root_statistics_and_merge_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(50, 3)) + 2.0
    for x, s in ((a, multivariate.stats_of(jnp.asarray(a))),
                 (np.concatenate([a, b]), multivariate.merge(multivariate.stats_of(jnp.asarray(a)), multivariate.stats_of(jnp.asarray(b))))):
        np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(s.root @ s.root.T, (x - x.mean(0)).T @ (x - x.mean(0)), rtol=1e-10)
        np.testing.assert_allclose(np.triu(np.asarray(s.root), 1), 0.0)  # lower triangular
        params = multivariate.fit(s)
        np.testing.assert_allclose(params.root @ params.root.T, np.cov(x.T), rtol=1e-10)


def test_bartlett_statistics_have_the_law_of_drawn_ones():
    # Independent draws of (log det scatter, trace, first mean coordinate) by both samplers, under a
    # non-diagonal Sigma; two-sample KS tests at a 1e-3 level each (Bonferroni over 3).
    root = jnp.linalg.cholesky(jnp.asarray([[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]]))
    params = multivariate.MvParams(jnp.asarray([1.0, -1.0, 0.0]), root)
    keys = jax.random.split(jax.random.key(0), 4000)
    direct = jax.vmap(lambda k: multivariate.sample_stats_direct(k, params, 8))(keys[:2000])
    drawn = jax.vmap(lambda k: multivariate.sample_stats_drawn(k, params, 8))(keys[2000:])

    def summary(s):
        scatter = s.root @ jnp.swapaxes(s.root, -1, -2)
        return [np.linalg.slogdet(np.asarray(scatter))[1], np.trace(np.asarray(scatter), axis1=1, axis2=2), np.asarray(s.mean[:, 0])]

    for x, y in zip(summary(direct), summary(drawn)):
        assert stats.ks_2samp(x, y).pvalue > 1e-3 / 3


def test_closed_forms_reduce_to_the_one_dimensional_chapter_and_to_exact_recursions():
    n = np.arange(0, 40)
    for M in (5, 50):
        np.testing.assert_allclose(multivariate.mean_log_det(n, 1, M), gaussian.mean_log_var(n, M), rtol=1e-12)
        np.testing.assert_allclose(multivariate.var_trace(n, 1, M), gaussian.var_var(n, M), rtol=1e-10)
        np.testing.assert_allclose(multivariate.var_sq_drift(n, 1, M), gaussian.var_sq_drift(n, M), rtol=1e-10, atol=1e-15)
    # the Lyapunov exponents sum to the log-determinant's drift; the largest is the one-dimensional one
    np.testing.assert_allclose(multivariate.lyapunov_exponents(10, 30).sum(), multivariate.log_det_drift(10, 30))
    assert multivariate.lyapunov_exponents(10, 30)[0] == pytest.approx(float(gaussian.log_var_drift(30)))


def test_trace_moments_against_brute_force_simulation():
    # E[(tr Sigma_2)^2] in d = 3 with M = 6, by 200,000 two-step chains (Monte Carlo error ~0.5 %)
    d, M, S = 3, 6, 200_000
    keys = jax.random.split(jax.random.key(1), S)
    truth = multivariate.MvParams(jnp.zeros(d), jnp.eye(d))

    def two_steps(k):
        k1, k2 = jax.random.split(k)
        p1 = multivariate.fit(multivariate.sample_stats_direct(k1, truth, M))
        p2 = multivariate.fit(multivariate.sample_stats_direct(k2, p1, M))
        return jnp.sum(p2.root**2)

    traces = np.asarray(jax.jit(jax.vmap(two_steps))(keys))
    a = multivariate.var_trace(np.array([2]), d, M)[0] + d**2
    se = np.std(traces**2) / np.sqrt(S)
    assert abs(np.mean(traces**2) - a) < 5 * se


def test_run_agrees_with_theory_and_the_check_has_power():
    config = multivariate.MvRun(d=4, n_samples=12, n_chains=3000, n_generations=60)
    result = multivariate.run(config)
    z = multivariate.agreement(result, config)
    for name in multivariate.AGREEMENT_STATISTICS:
        finite = z[name][np.isfinite(z[name])]
        assert finite.size > 5 and np.abs(finite).max() < 4.5, name
    # a planted error: the same chains judged by the closed forms of M = 13 must fail loudly
    wrong = multivariate.agreement(result, dataclasses.replace(config, n_samples=13))
    assert np.nanmax(np.abs(wrong["log_det"])) > 8  # measured: 48
    assert np.nanmax(np.abs(wrong["log_var_1"])) > 5  # measured: 8.1


def test_run_is_deterministic_and_independent_of_batching():
    config = multivariate.MvRun(d=3, n_samples=10, n_chains=70, n_generations=20, n_recorded=8)
    a, b = multivariate.run(config), multivariate.run(config)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    with jax.enable_x64(True):
        small = runner.simulate(multivariate.model(), multivariate.StandardNormal(3), seed=0, n_chains=70, n_samples=10,
                                n_generations=20, regime=Regime(), record=multivariate.summary,
                                record_at=tuple(int(g) for g in runner.log_generations(20, 8)), batch_size=16)
    np.testing.assert_allclose(small["log_det"], a["log_det"][:, 1:], rtol=1e-12)
    c = multivariate.run(dataclasses.replace(config, seed=1))
    assert np.abs(c["log_det"][:, -1] - a["log_det"][:, -1]).mean() > 0.5  # sd of the difference ~ 5


def test_the_root_survives_where_a_cholesky_of_sigma_would_not():
    # d = 30, M = 40: the condition number of Sigma passes 1e16 after about 26 generations (in expectation)
    result = multivariate.run(multivariate.MvRun(d=30, n_samples=40, n_chains=4, n_generations=120, n_recorded=10))
    assert np.all(np.isfinite(result["log_det"])) and np.all(np.isfinite(result["w2"]))
    assert result["log_det"][:, -1].max() < -500


def test_too_few_points_for_the_dimension_are_refused():
    with pytest.raises(ValueError, match="n_samples"):
        multivariate.MvRun(d=10, n_samples=10)


# --------------------------------------------------------------------------- EM and mixtures


def _two_blobs(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n // 2, 2)) * [1.0, 0.4] + [3, 0], rng.normal(size=(n - n // 2, 2)) * 0.6 - [2, 1]])


@pytest.mark.parametrize("data", ["blob", "two"])
def test_em_reaches_scikit_learns_log_likelihood(data):
    from sklearn.mixture import GaussianMixture

    x = np.random.default_rng(3).normal(size=(1000, 2)) if data == "blob" else _two_blobs(1000)
    settings = gmm.EMSettings()
    start = gmm.initial_params(jax.random.key(0), jnp.asarray(x), jnp.ones(1000), settings)
    ours = gmm.em(None, jnp.asarray(x), jnp.ones(1000), settings, start=start)
    precisions = np.linalg.inv(np.einsum("kij,klj->kil", start.roots, start.roots))
    theirs = GaussianMixture(2, tol=1e-5, max_iter=2000, weights_init=np.asarray(start.weights),
                             means_init=np.asarray(start.means), precisions_init=precisions).fit(x)
    assert bool(ours.converged)
    # from the same start, the same EM: equal to rounding (measured 1e-15 nats a point)
    assert abs(float(jnp.mean(gmm.log_density(ours.params, jnp.asarray(x)))) - theirs.score(x)) < 1e-9
    np.testing.assert_allclose(np.sort(np.asarray(ours.params.weights)), np.sort(theirs.weights_), atol=1e-6)
    # from its own start, the library reaches scikit-learn's own fit to a stated tolerance
    own = gmm.em(jax.random.key(1), jnp.asarray(x), jnp.ones(1000), settings)
    sk = GaussianMixture(2, tol=1e-5, max_iter=2000, random_state=0).fit(x)
    assert abs(float(jnp.mean(gmm.log_density(own.params, jnp.asarray(x)))) - sk.score(x)) < 5e-3


def test_em_never_decreases_the_likelihood_and_ignores_unused_rows():
    x = jnp.asarray(_two_blobs(400, seed=1))
    params = gmm.initial_params(jax.random.key(2), x, jnp.ones(400))
    lls = []
    for _ in range(30):
        ll, resp = gmm._e_step(params, x, jnp.ones(400))
        lls.append(float(ll))
        params = gmm._m_step(x, jnp.ones(400), resp, 1e-6)
    assert np.all(np.diff(lls) > -1e-12)
    # rows of weight 0 change nothing: the same fit with 100 junk rows appended, weight 0
    junk = jnp.concatenate([x, jnp.full((100, 2), 1e3)])
    w = jnp.concatenate([jnp.ones(400), jnp.zeros(100)])
    a = gmm.em(jax.random.key(2), x, jnp.ones(400))
    b = gmm.em(jax.random.key(2), junk, w)
    np.testing.assert_allclose(a.params.means, b.params.means, rtol=1e-10)


def test_l2_closed_form_against_numerical_integration():
    p = gmm.GmmParams(jnp.array([0.3, 0.7]), jnp.array([[0.0, 0.0], [1.0, 2.0]]),
                      jnp.linalg.cholesky(jnp.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 2.0]]])))
    q = gmm.gaussian([0.5, 1.0], [[2.0, 0.5], [0.5, 1.5]])
    grid = np.linspace(-12, 14, 1001)
    xx, yy = np.meshgrid(grid, grid)
    points = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1))
    f = np.exp(gmm.log_density(p, points)) - np.exp(gmm.log_density(q, points))
    numeric = np.sum(f**2) * (grid[1] - grid[0]) ** 2
    assert float(gmm.l2_squared(p, q)) == pytest.approx(numeric, rel=1e-8)
    assert float(gmm.l2_squared(p, p)) == pytest.approx(0.0, abs=1e-15)


def test_sampling_and_moments_of_a_mixture():
    truth = mixtures.TWO_BLOBS.params()
    x = np.asarray(gmm.sample(jax.random.key(4), truth, 200_000))
    mean, cov = gmm.moments(truth)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.03)


# --------------------------------------------------------------------------- pools and regimes


def test_pool_merge_and_subsample():
    key = jax.random.key(0)
    a = pool.pool_of(key, jnp.arange(6.0).reshape(3, 2), capacity=8)
    b = pool.pool_of(jax.random.key(1), 100 + jnp.arange(4.0).reshape(2, 2), capacity=8)
    merged = pool.merge(a, b)
    assert int(merged.count) == 5
    np.testing.assert_array_equal(merged.x[:5, 0], [0, 2, 4, 100, 102])
    np.testing.assert_array_equal(merged.key, b.key)
    sub = pool.subsample(jax.random.key(5), merged, 4)
    rows = set(np.asarray(sub.x[:, 0]).tolist())
    assert len(rows) == 4 and rows <= {0, 2, 4, 100, 102}  # distinct, held rows only
    with pytest.raises(ValueError, match="capacity"):
        pool.pool_of(key, jnp.zeros((9, 2)), capacity=8)


def test_accumulate_subsample_needs_a_model_that_keeps_its_points():
    with pytest.raises(ValueError, match="accumulate-subsample"):
        runner.simulate(gaussian.model(), gaussian.RealGaussian(0.0, 1.0), seed=0, n_chains=2, n_samples=5,
                        n_generations=3, regime=Regime.parse("accumulate-subsample"))
    real = np.arange(10.0)[:, None]
    data = runner.training_set(Regime.parse("accumulate-subsample"), jax.random.key(0), real, [real + 100, real + 200])
    assert data.shape == real.shape and len(np.unique(data)) == 10


def test_gmm_runs_under_every_regime_and_are_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("COLLAPSE_RESULTS_DIR", str(tmp_path))
    chapter = mixtures.chapter_config("ci", 2)
    results = {}
    for regime in ("replace", "accumulate", "mix(0.5)", "accumulate-subsample"):
        run = mixtures.gmm_run(chapter, regime, n_chains=2, n_generations=4)
        results[regime] = mixtures.gmm_results(run)
        again = mixtures.gmm_results(run)  # loaded, not recomputed
        np.testing.assert_array_equal(results[regime]["l2_to_truth"], again["l2_to_truth"])
        assert results[regime]["means"].shape == (2, 5, 2, 2)
    # generation 0 is the fit to the same real data in every regime
    for r in results.values():
        np.testing.assert_allclose(r["means"][:, 0], results["replace"]["means"][:, 0], rtol=1e-12)
    assert not np.allclose(results["accumulate"]["means"][:, -1], results["replace"]["means"][:, -1])


# --------------------------------------------------------------------------- kernel density estimates


def test_kde_trace_recursion_against_simulation_and_a_planted_error():
    chapter = dataclasses.replace(mixtures.chapter_config("ci"), kde_points=200, kde_chains=400, kde_generations=30)
    for settings in (kde.KdeSettings("scott", 1.0), kde.KdeSettings("fixed", 0.1)):
        run = mixtures.KdeRun(settings, n_points=200, n_chains=400, n_generations=30, test_points=50, n_recorded=8)
        r = mixtures.run_kde(run)
        theory = mixtures.kde_trace_theory(settings, chapter, r["n"])
        se = r["trace"].std(0, ddof=1) / np.sqrt(400)
        assert np.abs((r["trace"].mean(0) - theory) / se).max() < 4.5
        # planted: the recursion without the resampling loss (1 − 1/N) must be caught
        wrong = kde.mean_trace(r["n"], settings, 10**9, 2, float(theory[0] / (1 - 1 / 200)))
        assert np.abs((r["trace"].mean(0) - wrong) / se).max() > 6


def test_kde_log_density_is_a_normalised_mixture_of_kernels():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2)))
    params = kde.KdeParams(x, jnp.linalg.cholesky(jnp.asarray([[0.3, 0.1], [0.1, 0.2]])))
    as_mixture = gmm.GmmParams(jnp.full(5, 0.2), x, jnp.broadcast_to(params.root, (5, 2, 2)))
    y = jnp.asarray(np.random.default_rng(1).normal(size=(7, 2)))
    np.testing.assert_allclose(kde.log_density(params, y), gmm.log_density(as_mixture, y), rtol=1e-10)


def test_chains_one_after_another_give_the_numbers_of_chains_side_by_side():
    # lockstep=False (lax.map) against vmap, for a model without loops: equal to float rounding
    common = dict(seed=0, n_chains=6, n_samples=20, n_generations=15, regime=Regime())
    with jax.enable_x64(True):
        side = runner.simulate(multivariate.model(), multivariate.StandardNormal(3), **common)
        after = runner.simulate(multivariate.model(), multivariate.StandardNormal(3), lockstep=False, **common)
    for a, b in zip(jax.tree.leaves(side), jax.tree.leaves(after)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
