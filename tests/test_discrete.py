"""Chapter 2's library: the sampler, the exact K = 2 chain, the diversity recursion, the runs."""

import itertools

import jax
import numpy as np
import pytest
from scipy import stats

from collapse import discrete
from collapse.config import Regime


# --------------------------------------------------------------------------- distributions


# (the sampler itself, collapse.sampling.multinomial, is tested in test_sampling.py)


def test_initial_distributions_and_bad_names():
    np.testing.assert_allclose(discrete.initial_distribution("bernoulli(0.3)"), [0.7, 0.3])
    zipf = discrete.initial_distribution("zipf(1000, 1)")
    assert zipf.shape == (1000,) and np.isclose(zipf.sum(), 1) and np.isclose(zipf[0] / zipf[9], 10)
    for bad in ("zipf(1000)", "bernoulli(1.5)", "uniform(1)", "gauss(3)", "zipf(a, 1)"):
        with pytest.raises(ValueError, match="distribution="):
            discrete.initial_distribution(bad)


# --------------------------------------------------------------------------- the exact K = 2 chain


@pytest.mark.parametrize("M", [1, 2, 7, 40])
def test_transition_rows_sum_to_one(M):
    np.testing.assert_allclose(discrete.wright_fisher_matrix(M).sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(discrete.mixed_matrix(M, M // 2, 0.3).sum(1), 1.0, atol=1e-12)


@pytest.mark.parametrize("M", [2, 5, 12])
def test_absorbing_chain_against_a_brute_force_solve(M):
    P = discrete.wright_fisher_matrix(M)
    chain = discrete.absorbing_chain(P)
    Q = P[1:M, 1:M]
    ones = np.ones(M - 1)
    t = np.linalg.solve(np.eye(M - 1) - Q, ones)  # first-step analysis: t = 1 + Q t
    second = np.linalg.solve(np.eye(M - 1) - Q, ones + 2 * Q @ t)  # E[T^2]: s = 1 + 2 Q t + Q s
    np.testing.assert_allclose(chain.t, t, rtol=1e-10)
    np.testing.assert_allclose(chain.var_t, second - t**2, rtol=1e-9)
    # the frequency is a martingale: absorbed in M with probability i / M
    np.testing.assert_allclose(chain.B[:, 1], np.arange(1, M) / M, atol=1e-12)
    np.testing.assert_allclose(chain.B.sum(1), 1.0, atol=1e-12)


def test_absorption_time_from_the_real_distribution():
    M = 12
    chain = discrete.absorbing_chain(discrete.wright_fisher_matrix(M))
    for i in (1, 4, 6):  # p0 = i / M: the first fit is one step of the chain from state i
        law = discrete.absorption_time(M, i / M)
        assert np.isclose(law.mean, chain.t[i - 1]) and np.isclose(law.var, chain.var_t[i - 1])
    law = discrete.absorption_time(M, 0.37)
    assert np.isclose(law.p_fix, 0.37)
    survival = discrete.absorption_survival(M, 0.37, 2000)
    assert survival[0] == 1 and np.all(np.diff(survival) <= 1e-15)
    assert np.isclose(survival.sum(), law.mean)  # E[T] = sum_n P(T > n)


def test_mixed_chain_is_ergodic_with_mean_at_the_real_frequency():
    M, n_real, p = 20, 4, 0.3
    P = discrete.mixed_matrix(M, n_real, p)
    pi = discrete.stationary_distribution(P)
    np.testing.assert_allclose(pi @ P, pi, atol=1e-12)
    assert np.all(pi > 0)
    # E[X'] = n_real p + (M - n_real) X / M has the fixed point M p
    assert np.isclose(pi @ np.arange(M + 1), M * p)
    with pytest.raises(ValueError, match="absorbing"):
        discrete.absorbing_chain(P)


# --------------------------------------------------------------------------- closed forms


def test_diversity_recursion_by_enumeration():
    """E[1 - sum p_n^2] after two generations, by summing over every outcome."""
    M, p0 = 3, np.array([0.5, 0.3, 0.2])
    outcomes = [np.array(c) for c in itertools.product(range(M + 1), repeat=3) if sum(c) == M]

    def expected_diversity(p, generations):
        if generations == 0:
            return 1 - np.sum(p**2)
        return sum(stats.multinomial.pmf(c, M, p) * expected_diversity(c / M, generations - 1) for c in outcomes)

    for n in (1, 2, 3):
        assert np.isclose(expected_diversity(p0, n), discrete.mean_diversity(n, M, p0), rtol=1e-12)


def test_missing_state_and_tail_after_one_generation():
    p0 = np.array([0.9, 0.09, 0.01])
    assert np.isclose(discrete.missing_probability(0.01, 100), 0.99**100)
    assert np.isclose(discrete.mean_alive_after_one(p0, 10), np.sum(1 - (1 - p0) ** 10))
    assert np.isclose(discrete.mean_tail_alive_after_one(p0, 20), 0.01 * (1 - 0.99**20))  # tail: p0 < 1/20


def test_diffusion_approximation_for_two_states():
    assert np.isclose(discrete.diffusion_absorption_time(100, [0.5, 0.5]), 200 * np.log(2))


# --------------------------------------------------------------------------- simulation


def test_simulated_absorption_agrees_with_the_exact_chain():
    M, p, S = 10, 0.3, 20_000
    result = discrete.absorb(discrete.AbsorptionRun(f"bernoulli({p})", n_samples=M, n_chains=S))
    law = discrete.absorption_time(M, p)
    assert not result["censored"].any()
    assert abs(result["T"].mean() - law.mean) / np.sqrt(law.var / S) < 5
    assert abs(result["state"].mean() - p) / np.sqrt(p * (1 - p) / S) < 5
    # and the check can fail: the wrong M is detected
    wrong = discrete.absorption_time(M + 2, p)
    assert abs(result["T"].mean() - wrong.mean) / np.sqrt(wrong.var / S) > 5


def test_absorption_does_not_depend_on_batching(monkeypatch):
    config = discrete.AbsorptionRun("uniform(3)", n_samples=8, n_chains=300)
    from collapse import runner

    with jax.enable_x64(True):
        kwargs = dict(seed=0, n_chains=300, n_samples=8, max_generations=10_000, regime=Regime("replace"),
                      stop=discrete.is_delta)
        real = discrete.RealCategorical(config.distribution)
        a, _ = runner.simulate_until(discrete.MODEL, real, n_steps=3, batch_size=64, **kwargs)
        b, _ = runner.simulate_until(discrete.MODEL, real, n_steps=50, batch_size=4096, **kwargs)  # 300, then 128 lanes
        monkeypatch.setattr(runner, "PASSAGE_LANES", (100, 32, 8))  # three chunk sizes as chains stop
        c, _ = runner.simulate_until(discrete.MODEL, real, n_steps=5, batch_size=4096, **kwargs)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    capped = discrete.absorb(discrete.AbsorptionRun("uniform(3)", n_samples=50, n_chains=50, max_generations=2))
    assert capped["censored"].all() and np.all(capped["T"] == 4)


def test_run_metrics_against_closed_forms_and_regimes():
    M, S = 200, 2000
    config = discrete.CategoricalRun("zipf(300, 1)", n_samples=M, n_chains=S, n_generations=50, n_recorded=8)
    result = discrete.run(config)
    p0 = discrete.initial_distribution(config.distribution)
    assert result["n"][0] == 1 and result["alive"].shape == (S, len(result["n"]))
    alive = result["alive"][:, 0]
    assert abs(alive.mean() - discrete.mean_alive_after_one(p0, M)) / (alive.std() / np.sqrt(S)) < 5
    tail = result["tail_alive"][:, 0]
    assert abs(tail.mean() - discrete.mean_tail_alive_after_one(p0, M)) / (tail.std() / np.sqrt(S)) < 5
    diversity = result["diversity"]
    z = (diversity.mean(0) - discrete.mean_diversity(result["n"], M, p0)) / (diversity.std(0) / np.sqrt(S))
    assert np.abs(z).max() < 5, z
    assert np.all(np.diff(result["alive"], axis=1) <= 0), "under replace a lost state never returns"
    assert np.isinf(result["kl_from_real"]).all(1).any() and np.isfinite(result["kl_to_real"]).all()
    np.testing.assert_array_equal(discrete.run(config)["entropy"], result["entropy"])  # deterministic

    accumulate = discrete.run(config.__class__(**{**config.__dict__, "regime": Regime("accumulate")}))
    assert np.all(np.diff(accumulate["alive"], axis=1) >= 0), "pooled counts never lose a state"
    # Long runs, fewer chains: the two means differ by far more than 200 chains' spread.
    long = {**config.__dict__, "n_generations": 400, "n_chains": 200}
    mix = discrete.run(config.__class__(**{**long, "regime": Regime("mix", 0.5)}))
    replace = discrete.run(config.__class__(**long))
    assert mix["alive"][:, -1].mean() > 2 * replace["alive"][:, -1].mean()


def test_recording_a_subset_equals_the_full_history():
    from collapse import runner

    config = discrete.CategoricalRun("uniform(5)", n_samples=20, n_chains=4, n_generations=30)
    with jax.enable_x64(True):
        kwargs = dict(seed=3, n_chains=4, n_samples=20, n_generations=30, regime=Regime.parse("mix(0.2)"))
        real = discrete.RealCategorical(config.distribution)
        full = runner.simulate(discrete.MODEL, real, **kwargs)
        kept = (0, 4, 29, 30)
        some = runner.simulate(discrete.MODEL, real, record_at=kept, batch_size=3, **kwargs)
    np.testing.assert_array_equal(full[:, list(kept)], some)
    with pytest.raises(ValueError, match="record_at"):
        runner.simulate(discrete.MODEL, real, record_at=(5, 2), **kwargs)


def test_chapter_profiles_validate():
    assert discrete.chapter_config("ci").exact_chains < discrete.chapter_config("cpu").exact_chains
    assert discrete.chapter_config("cpu").exact_chains >= 100_000
    with pytest.raises(ValueError, match="profile"):
        discrete.chapter_config("laptop")
    with pytest.raises(ValueError, match="distribution"):
        discrete.CategoricalRun("zipf(10)")


# --------------------------------------------------------------------------- the chapter's checks have power


def test_absorption_and_sweep_checks_pass_the_simulation_and_catch_a_planted_error():
    M, p = 8, 0.5
    result = discrete.absorb(discrete.AbsorptionRun(f"bernoulli({p})", n_samples=M, n_chains=5000, seed=2))
    checked = discrete.absorption_agreement(result["T"], result["state"], M, p)
    assert checked["worst"] < checked["z_max"] and checked["n_checks"] >= 6
    from collapse.checks import AgreementError

    with pytest.raises(AgreementError, match="K=2 mean"):  # one more fit in every chain: E[T] off by 1
        discrete.absorption_agreement(result["T"] + 1, result["state"], M, p)
    assert discrete.sweep_agreement({M: result["T"]}, p)["worst"] < 4
    with pytest.raises(AgreementError, match="sweep"):  # the same times labelled with the wrong M
        discrete.sweep_agreement({M + 4: result["T"]}, p)


def test_tail_check_passes_the_simulation_and_catches_the_wrong_real_law():
    p0 = discrete.initial_distribution("zipf(50, 1)")
    run = discrete.CategoricalRun("zipf(50, 1)", n_samples=60, n_chains=400, n_generations=20, n_recorded=5)
    runs = {60: discrete.run(run)}
    checked = discrete.tail_agreement(runs, p0)
    assert checked["worst"] < checked["z_max"]
    from collapse.checks import AgreementError

    with pytest.raises(AgreementError):
        discrete.tail_agreement(runs, discrete.initial_distribution("zipf(50, 1.5)"))


def test_stationary_fit_accepts_draws_from_the_law_and_rejects_another():
    M, n_real, p = 20, 4, 0.3
    pi = discrete.stationary_distribution(discrete.mixed_matrix(M, n_real, p))
    rng = np.random.default_rng(0)
    counts = rng.choice(M + 1, size=20_000, p=pi)
    result, n_cells = discrete.stationary_fit(counts, pi)
    assert result.pvalue > 1e-3 and 5 < n_cells <= M + 1
    from collapse.checks import AgreementError

    shifted = np.clip(counts + 1, 0, M)  # one count more on the second state in every chain
    with pytest.raises(AgreementError, match="stationary law rejected"):
        discrete.stationary_fit(shifted, pi)


def test_stored_frequencies_are_the_frequencies_of_that_many_chains(tmp_path):
    from collapse.store import ResultsStore

    config = discrete.CategoricalRun("zipf(20, 1)", n_samples=30, n_chains=8, n_generations=10, n_recorded=4)
    store = ResultsStore(tmp_path)
    first = discrete.frequencies_cached(config, n_chains=3, store=store)
    again = discrete.frequencies_cached(config, n_chains=3, store=store)  # loaded
    fresh = discrete.frequencies(config, n_chains=3)
    assert len(list(tmp_path.rglob("result.npz"))) == 1
    for result in (again, fresh):
        np.testing.assert_array_equal(first["p"], result["p"])
    assert discrete.frequencies_cached(config, n_chains=5, store=store)["p"].shape[0] == 5  # another key
