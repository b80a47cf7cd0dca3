import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from collapse import gaussian
from collapse.checks import samplers_agree
from collapse.config import Regime


def test_stats_of_and_fit_match_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(5, 37))
    with jax.enable_x64(True):
        s = gaussian.stats_of(jnp.asarray(x))
        unbiased = gaussian.fit(s, "unbiased")
        mle = gaussian.fit(s, "mle")
    np.testing.assert_allclose(unbiased.mu, x.mean(1), rtol=1e-12)
    np.testing.assert_allclose(unbiased.var, x.var(1, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(mle.var, x.var(1, ddof=0), rtol=1e-12)


def test_merge_equals_pooled_statistics():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 13), rng.normal(5, 3, 29)
    with jax.enable_x64(True):
        merged = gaussian.merge(gaussian.stats_of(jnp.asarray(a)), gaussian.stats_of(jnp.asarray(b)))
        pooled = gaussian.stats_of(jnp.asarray(np.concatenate([a, b])))
    for got, want in zip(merged, pooled):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("M", [2, 7, 50])
def test_direct_statistics_have_the_law_of_drawn_ones(M):
    """sample_stats_direct against stats_of(sample(...)): same law (KS), different code paths."""
    params = gaussian.GaussianParams(jnp.float32(1.5), jnp.float32(4.0))
    keys = jax.random.split(jax.random.key(0), 4000)
    direct = jax.vmap(lambda k: gaussian.sample_stats_direct(k, params, M))(keys)
    drawn = jax.vmap(lambda k: gaussian.stats_of(gaussian.sample(k, params, M)))(jax.random.split(jax.random.key(1), 4000))
    for name in ("mean", "m2"):
        assert stats.ks_2samp(np.asarray(getattr(direct, name)), np.asarray(getattr(drawn, name))).pvalue > 1e-3
    # and both have the textbook law: (M-1) S^2 / sigma^2 ~ chi^2_{M-1}
    assert stats.kstest(np.asarray(direct.m2) / 4.0, stats.chi2(M - 1).cdf).pvalue > 1e-3


def test_closed_forms_by_enumeration_of_one_step():
    """One generation, M = 3: E[log chi^2_2 / 2] and moments by numerical integration."""
    M = 3
    chi2 = stats.chi2(M - 1)
    for est, d in (("unbiased", 2), ("mle", 3)):
        e_log = chi2.expect(lambda x: np.log(x / d))
        np.testing.assert_allclose(gaussian.mean_log_var(1, M, est), e_log, rtol=1e-7)
        np.testing.assert_allclose(gaussian.mean_var(1, M, est), chi2.expect(lambda x: x / d), rtol=1e-7)
        np.testing.assert_allclose(gaussian.var_var(1, M, est), chi2.var() / d**2, rtol=1e-7)
        np.testing.assert_allclose(gaussian.mean_sigma(1, M, est), chi2.expect(lambda x: np.sqrt(x / d)), rtol=1e-7)
    np.testing.assert_allclose(gaussian.var_log_var(1, M), chi2.expect(lambda x: np.log(x) ** 2) - chi2.expect(np.log) ** 2, rtol=1e-6)


def test_closed_forms_limits():
    n = np.array([1, 10, 1000])
    np.testing.assert_allclose(gaussian.mean_var(n, 100, "unbiased"), 1.0)
    np.testing.assert_allclose(gaussian.mean_sq_drift(n, 100, "unbiased"), n / 100)
    np.testing.assert_allclose(gaussian.mean_sq_drift(n, 100, "mle"), 1 - 0.99**n)
    assert gaussian.log_var_drift(100) < 0 and gaussian.log_var_drift(100, "mle") < gaussian.log_var_drift(100)
    assert gaussian.mean_w2_squared(10**6, 100, "mle") == pytest.approx(2.0, rel=1e-6)
    assert gaussian.mean_w2_squared(10**4, 100, "unbiased") > 100
    # Var[(mu_1 - mu_0)^2] = 2 sigma0^4 / M^2 (a scaled chi^2_1)
    np.testing.assert_allclose(gaussian.var_sq_drift(1, 10), 2 / 100)


def test_var_sq_drift_against_brute_force_simulation():
    """Two generations: Var[(mu_2 - mu_0)^2] from the double sum against a direct Monte Carlo."""
    rng = np.random.default_rng(2)
    M, S = 5, 2_000_000
    var1 = rng.chisquare(M - 1, S) / (M - 1)
    drift = rng.normal(0, 1, S) / np.sqrt(M) + np.sqrt(var1) * rng.normal(0, 1, S) / np.sqrt(M)
    np.testing.assert_allclose(np.var(drift**2), gaussian.var_sq_drift(2, M), rtol=0.03)


def test_run_agrees_with_theory_and_the_check_has_power():
    run = gaussian.GaussianRun(n_samples=20, n_chains=4000, n_generations=100)
    result = gaussian.run(run)
    z = gaussian.agreement(result, run)
    for name in gaussian.AGREEMENT_STATISTICS:
        finite = z[name][np.isfinite(z[name])]
        assert finite.size > 5 and np.abs(finite).max() < 4.5, name
    # the same simulation judged against the wrong estimator's closed forms must fail loudly
    wrong = gaussian.agreement(result, gaussian.GaussianRun(n_samples=20, n_chains=4000, n_generations=100, estimator="mle"))
    for name in ("log_var", "sigma", "w2"):  # (T_n is N(0, 1) under either estimator)
        assert np.nanmax(np.abs(wrong[name])) > 6, name  # measured: 98, 156 and 9; the page's bound is about 4.5


def test_run_is_deterministic_and_seeded():
    run = gaussian.GaussianRun(n_samples=10, n_chains=64, n_generations=30)
    a, b = gaussian.run(run), gaussian.run(run)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = gaussian.run(gaussian.GaussianRun(n_samples=10, n_chains=64, n_generations=30, seed=1))
    # Another seed, other chains: log sigma_30^2 of two independent chains differ by about
    # sqrt(2 * 30 * Var log(chi2_9 / 9)) ~ 3 (float rounding: 1e-6), so 0.5 is a wide margin.
    assert np.abs(np.log(a["var"][:, -1]) - np.log(c["var"][:, -1])).mean() > 0.5


def test_draws_sampler_runs_in_float64_without_losing_small_sigma():
    # sigma_n^2 falls below 1e-16 (float32 could not resolve sigma next to mu ~ 1) yet stays > 0
    run = gaussian.GaussianRun(n_samples=4, n_chains=200, n_generations=60, sampler="draws", estimator="mle")
    var = gaussian.run(run)["var"]
    assert var.dtype == np.float64
    assert (var[:, -1] < 1e-16).any() and (var > 0).all()


@pytest.mark.behaviour
def test_regimes_change_the_outcome():
    base = dict(n_samples=20, n_chains=500, n_generations=300)
    sigma = {
        text: np.median(np.sqrt(gaussian.run(gaussian.GaussianRun(**base, regime=Regime.parse(text)))["var"][:, -1]))
        for text in ("replace", "accumulate", "mix(0.5)")
    }
    assert sigma["replace"] < 0.01
    assert sigma["accumulate"] > 0.5 and sigma["mix(0.5)"] > 0.5


def test_mix_with_all_real_data_is_fitting_fresh_real_samples():
    run = gaussian.GaussianRun(n_samples=50, n_chains=3000, n_generations=20, regime=Regime.parse("mix(1)"))
    var = gaussian.run(run)["var"][:, -1]
    # each generation is an independent fit to 50 real points: (M-1) S^2 ~ chi^2_49
    assert stats.kstest(var * 49, stats.chi2(49).cdf).pvalue > 1e-3


def test_samplers_agree_passes_one_law_and_catches_another():
    rng = np.random.default_rng(0)
    n = np.arange(101)  # recorded generations: six log-spaced ones are tested
    same = [{"n": n, "v": rng.normal(size=(2000, len(n)))} for _ in range(2)]
    result = samplers_agree("same law", *same, ("v",))
    assert result["n_tests"] == 6 and result["p_min"] > 1e-3 / 6
    shifted = {"n": n, "v": same[1]["v"] * 1.3}  # a spread 30 % wider
    with pytest.raises(AssertionError, match="wider disagree: smallest KS p-value"):
        samplers_agree("wider", same[0], shifted, ("v",))
