"""How much real data keeps the cheap models alive: closed forms, the search, bad input."""

import numpy as np
import pytest

from collapse import discrete, gaussian, real_fraction as rf
from collapse.config import Regime
from collapse.store import ResultsStore


def test_expected_tail_alive_after_one_fit_matches_a_direct_count():
    p0 = discrete.initial_distribution("zipf(5, 1)")
    tail = p0 < 0.2
    M = 3
    rng = np.random.default_rng(0)
    draws = rng.choice(len(p0), size=(200_000, M), p=p0)
    seen = np.zeros((len(draws), len(p0)), bool)
    seen[np.arange(len(draws))[:, None], draws] = True
    simulated = (seen[:, tail] * p0[tail]).sum(1).mean()
    assert rf.real_tail_alive("zipf(5, 1)", 0.2, M) == pytest.approx(simulated, abs=3e-3)


def test_gaussian_replace_median_follows_the_log_chi_square_walk(tmp_path):
    store = ResultsStore(tmp_path)
    for M in (20, 200):
        run = rf.KeepRun("gaussian", M, n_generations=30, n_chains=4000)
        z = (np.log(rf.median_share(run, store)) - gaussian.mean_log_var(31, M)) / np.sqrt(gaussian.var_log_var(31, M))
        # z is in standard deviations of log sigma^2, not standard errors. The sample median of
        # 4000 chains has a standard error of 1.25 / sqrt(4000) = 0.02 of them, and the skew of a
        # sum of 31 log-chi-square terms puts the median about 0.015 from the mean: 0.1 is five
        # standard errors. (Measured: |z| about 0.01.)
        assert abs(z) < 0.1


@pytest.mark.behaviour
def test_real_data_keeps_more_than_replace_and_the_search_finds_the_least_alpha(tmp_path):
    store = ResultsStore(tmp_path)
    common = dict(n_generations=30, n_chains=400)
    replace = rf.median_share(rf.KeepRun("gaussian", 20, Regime(), **common), store)
    mixed = rf.median_share(rf.KeepRun("gaussian", 20, Regime("mix", 0.5), **common), store)
    assert replace < 0.5 < mixed
    alphas = (0.0, 0.1, 0.5)
    least = rf.smallest_fraction("gaussian", 20, 0.5, alphas, store, **common)
    shares = {a: rf.median_share(rf.KeepRun("gaussian", 20, Regime("mix", a) if a else Regime(), **common), store) for a in alphas}
    assert shares[least] >= 0.5 and all(shares[a] < 0.5 for a in alphas if a < least)
    assert np.isnan(rf.smallest_fraction("gaussian", 20, 1.0 + 1e-9, (0.0,), store, **common))


@pytest.mark.behaviour
def test_discrete_tail_is_lost_without_real_data_and_kept_with_it(tmp_path):
    store = ResultsStore(tmp_path)
    common = dict(n_generations=30, n_chains=100)
    replace = rf.median_share(rf.KeepRun("discrete", 100, Regime(), **common), store)
    half = rf.median_share(rf.KeepRun("discrete", 100, Regime("mix", 0.5), **common), store)
    assert replace < 0.2 < half


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="model"):
        rf.KeepRun("vae", 10)
    with pytest.raises(ValueError, match="alphas"):
        rf.RealFractionChapter(alphas=(0.1, 0.5))


def test_the_replace_median_check_passes_theory_and_catches_a_planted_error():
    M, n_fits, chains = np.array([10, 100, 1000]), 101, 2000
    theory = rf.replace_median_theory(M, n_fits)
    z, tolerance = rf.replace_median_agreement(theory, M, n_fits, chains)
    assert np.allclose(z, 0) and tolerance == pytest.approx(0.05 + 4 * 1.2533 / np.sqrt(chains))
    # A median 30 % off at M = 100 is many tolerances away in sds of log sigma^2 (sd ~ 1.4 there).
    planted = theory * np.array([1.0, 0.7 ** 5, 1.0])
    with pytest.raises(AssertionError, match=r"M = \[100\]"):
        rf.replace_median_agreement(planted, M, n_fits, chains)


def test_effective_fraction_is_what_a_generation_really_holds():
    assert rf.effective_fraction(0.05, 10) == 0.0  # round(0.5) = 0: mix(0.05) at M = 10 is replace
    assert rf.effective_fraction(0.1, 10) == pytest.approx(0.1)
    assert rf.effective_fraction(0.02, 30) == pytest.approx(1 / 30)
    assert rf.effective_fraction(0.0, 100) == 0.0
