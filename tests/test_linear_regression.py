"""Linear regression under the three regimes: closed forms by hand, and against simulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse import linear_regression as lr
from collapse.checks import check_agreement, z_scores
from collapse.config import Regime


def one_dimensional(xs, sigma=0.5):
    return lr.Design(jnp.asarray(np.asarray(xs, np.float32)[:, None]), jnp.asarray([0.3]), sigma)


def test_closed_forms_in_one_dimension_by_hand():
    design = one_dimensional([1.0, 2.0, -1.0, 3.0])  # G = 15
    g0 = 0.25 / 15
    n = np.arange(6)
    np.testing.assert_allclose(lr.expected_errors(design, Regime.parse("replace"), 5), g0 * (n + 1))
    np.testing.assert_allclose(lr.expected_errors(design, Regime.parse("accumulate"), 5), g0 * np.cumsum(1 / (n + 1) ** 2))
    # mix(0.5): the first two rows stay real, so A = (1 + 9) / 15 and C_n = g0 (1 - A^(2(n+1))) / (1 - A²).
    a = 10 / 15
    np.testing.assert_allclose(lr.expected_errors(design, Regime.parse("mix(0.5)"), 5), g0 * (1 - a ** (2 * (n + 1))) / (1 - a**2))


@pytest.mark.parametrize("rows", [slice(0, 40), slice(38, None)])  # the second has fewer rows than inputs
def test_statistics_drawn_without_labels_have_the_labels_distribution(rows):
    # Xᵀy for y = Xw + σε has mean XᵀX w and covariance σ² XᵀX; the draw skips the labels.
    config = lr.RegressionConfig(n_samples=40, dim=4, sigma=0.7, seed=2)
    design = lr.make_design(config)
    w = jnp.asarray([1.0, -2.0, 0.5, 0.0])
    stats = jax.vmap(lambda k: lr.sample_stats(design, k, w, 40 - rows.start))(jax.random.split(jax.random.key(0), 20_000))
    X = np.asarray(design.X_TxD, np.float64)[rows]
    gram = X.T @ X
    moments = np.asarray(stats.moment_D, np.float64)
    np.testing.assert_allclose(stats.gram_DxD[0], gram, rtol=1e-5, atol=1e-4)
    scale = np.sqrt(np.diag(gram)) * config.sigma
    z = (moments.mean(0) - gram @ np.asarray(w)) / (scale / np.sqrt(len(moments)))
    assert np.all(np.abs(z) < 4.5), z
    cov = np.cov(moments.T)
    # Entrywise, a sample covariance of 20 000 draws is within a few percent of σ² XᵀX (scaled).
    np.testing.assert_allclose(cov / np.outer(scale, scale), config.sigma**2 * gram / np.outer(scale, scale), atol=0.05)


def test_accumulate_stays_below_pi_squared_over_six_and_replace_grows_linearly():
    config = lr.RegressionConfig(n_samples=30, dim=4)
    design = lr.make_design(config)
    accumulate = lr.expected_errors(design, Regime.parse("accumulate"), 500)
    replace = lr.expected_errors(design, Regime.parse("replace"), 500)
    assert accumulate[-1] < lr.ACCUMULATE_BOUND * accumulate[0] and accumulate[-1] > 0.99 * lr.ACCUMULATE_BOUND * accumulate[0]
    np.testing.assert_allclose(np.diff(replace), replace[0])
    mixed = lr.expected_errors(design, Regime.parse("mix(0.2)"), 500)
    assert mixed[-1] == pytest.approx(mixed[-2], rel=1e-9) and accumulate[0] < mixed[-1] < replace[-1]


def test_stationary_error_is_the_limit_of_the_recursion_when_the_real_rows_span_the_inputs():
    config = lr.RegressionConfig(n_samples=40, dim=5)
    design = lr.make_design(config)
    spanning = Regime.parse("mix(0.25)")  # 10 real rows >= d = 5
    limit = lr.stationary_error(design, spanning)
    assert lr.expected_errors(design, spanning, 400)[-1] == pytest.approx(limit, rel=1e-9)
    assert lr.stationary_error(design, Regime.parse("mix(0.05)")) == np.inf  # 2 real rows < d
    # Linear growth in the unseen directions, once the seen ones have converged: their error
    # shrinks as ρⁿ, ρ the largest |eigenvalue| of A below 1 (0.989 for this design), so the
    # horizon is chosen from ρ rather than fixed.
    blind = Regime.parse("mix(0.05)")
    moduli = np.abs(np.linalg.eigvals(lr._error_recursion(design, blind)[0]))
    rho = moduli[moduli < 1 - 1e-9].max()
    horizon = int(np.log(1e-10) / np.log(rho)) + 100
    steps = np.diff(lr.expected_errors(design, blind, horizon))
    assert steps[-1] > 0 and steps[-1] == pytest.approx(steps[-100], rel=1e-6)
    assert abs(steps[1] / steps[-1] - 1) > 0.1  # early on, the seen directions still move the error


def test_design_average_of_generation_zero_is_the_inverse_wishart_mean():
    rng = np.random.default_rng(0)
    T, d = 20, 3
    traces = [np.trace(np.linalg.inv(X.T @ X)) for X in rng.normal(size=(20000, T, d))]
    config = lr.RegressionConfig(n_samples=T, dim=d, sigma=1.0)
    se = np.std(traces) / np.sqrt(len(traces))
    assert abs(np.mean(traces) - lr.expected_error_over_designs(config)) < 4 * se


@pytest.mark.parametrize("regime", ["replace", "accumulate", "mix(0.25)", "mix(1)"])
def test_simulation_through_the_runner_agrees_with_the_closed_form(regime):
    config = lr.RegressionConfig(n_samples=24, dim=3, n_generations=12, n_chains=3000, seed=1)
    design = lr.make_design(config)
    errors = lr.simulate_errors(config, Regime.parse(regime))
    assert errors.shape == (3000, 13)
    theory = lr.expected_errors(design, Regime.parse(regime), config.n_generations)
    z = z_scores(errors.mean(0), theory, errors.std(0, ddof=1) / np.sqrt(len(errors)))
    check_agreement(regime, z, 4.5)


def test_a_wrong_closed_form_is_caught():
    # The check above can fail: replace's simulation against accumulate's formula.
    config = lr.RegressionConfig(n_samples=24, dim=3, n_generations=12, n_chains=3000, seed=1)
    design = lr.make_design(config)
    errors = lr.simulate_errors(config, Regime.parse("replace"))
    wrong = lr.expected_errors(design, Regime.parse("accumulate"), config.n_generations)
    with pytest.raises(AssertionError):
        check_agreement("wrong", z_scores(errors.mean(0), wrong, errors.std(0) / np.sqrt(len(errors))), 4.5)


def test_runs_are_deterministic_and_bad_configs_are_rejected():
    config = lr.RegressionConfig(n_samples=12, dim=2, n_generations=3, n_chains=8, seed=5)
    np.testing.assert_array_equal(lr.simulate_errors(config, Regime()), lr.simulate_errors(config, Regime()))
    with pytest.raises(ValueError, match="n_samples"):
        lr.RegressionConfig(n_samples=5, dim=4)
    with pytest.raises(ValueError, match="sigma"):
        lr.RegressionConfig(sigma=0.0)
