"""Exact counts: binomial draws against their pmf, multinomial draws against theirs, by both algorithms."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from collapse import sampling


def binomial_draws(n, p, size, seed=0, max_large=None, n_max=None):
    with jax.enable_x64(True):
        draw = jax.jit(lambda key: sampling.binomial(key, jnp.full((size,), float(n)), jnp.full((size,), p), max_large,
                                                     n_max))
        return np.asarray(draw(jax.random.key(seed)))


def chi2_pvalue(observed, expected, min_expected=5.0):
    """Pearson's chi-square of counts against expectations, the cells below ``min_expected`` pooled."""
    keep = expected >= min_expected
    o = np.append(observed[keep], observed[~keep].sum())
    e = np.append(expected[keep], expected[~keep].sum())
    o, e = (o, e) if e[-1] > 0 else (o[:-1], e[:-1])
    return stats.chi2.sf(((o - e) ** 2 / e).sum(), len(e) - 1)


@pytest.mark.parametrize("n, p, n_max", [
    (6, 0.3, None),  # inversion
    (60, 0.1, None),  # inversion, mean 6
    (40, 0.5, None),  # rejection (BTRS), mean 20
    (300, 0.85, None),  # rejection on the reflected tail 1 - p
    (2000, 0.004, None),  # inversion with many trials
    (25, 0.42, None),  # rejection just above its threshold
    (200, 0.5, 200),  # inversion alone (n_max / 2 = INVERSION_ONLY_MAX_MEAN), mean 100
    (150, 0.8, 200),  # inversion alone, on the reflected tail
])
def test_binomial_follows_its_pmf(n, p, n_max):
    size = 200_000
    x = binomial_draws(n, p, size, seed=n, n_max=n_max)
    assert np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= n
    k = np.arange(n + 1)
    observed = np.bincount(x.astype(int), minlength=n + 1)
    assert chi2_pvalue(observed, stats.binom.pmf(k, n, p) * size) > 1e-4
    # the same test tells a law 2% off in its mean apart: it can fail
    assert chi2_pvalue(observed, stats.binom.pmf(k, n, p * 1.02) * size) < 1e-4


def test_binomial_moments_at_large_n():
    n, p, size = 10**6, 0.3, 100_000
    x = binomial_draws(n, p, size)
    mean, var = n * p, n * p * (1 - p)
    assert abs(x.mean() - mean) / np.sqrt(var / size) < 5
    assert abs(x.var() / var - 1) < 5 * np.sqrt(2 / size)


def test_binomial_edges_are_exact():
    with jax.enable_x64(True):
        n = jnp.asarray([0.0, 7.0, 7.0, 1e6, 1e6, 0.0])
        p = jnp.asarray([0.5, 0.0, 1.0, 0.0, 1.0, 1.0])
        np.testing.assert_array_equal(sampling.binomial(jax.random.key(0), n, p), [0, 0, 7, 0, 1e6, 0])


def test_rejection_on_gathered_lanes_draws_the_same_law():
    # 3 lanes of mean >= 10 among 1,000 (max_large=5): rejection runs on 5 gathered lanes only
    with jax.enable_x64(True):
        n = jnp.asarray([40.0, 3.0, 50.0, 200.0] + [2.0] * 996)
        p = jnp.full((1000,), 0.5)
        draw = jax.jit(jax.vmap(lambda key: sampling.binomial(key, n, p, max_large=5)))
        x = np.asarray(draw(jax.random.split(jax.random.key(3), 20_000)))
    for lane, trials in ((0, 40), (2, 50), (3, 200), (1, 3)):
        k = np.arange(trials + 1)
        observed = np.bincount(x[:, lane].astype(int), minlength=trials + 1)
        assert chi2_pvalue(observed, stats.binom.pmf(k, trials, 0.5) * len(x)) > 1e-4, lane


def multinomial_draws(p, m, size, seed):
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(seed), size)
        return np.asarray(jax.jit(jax.vmap(lambda k: sampling.multinomial(k, jnp.asarray(p), m)))(keys))


@pytest.mark.parametrize("m, p", [
    (3, [0.6, 0.3, 0.1]),  # sorted uniforms (m < 50 K)
    (4, [0.6, 0.0, 0.3, 0.1, 0.0]),  # sorted uniforms, states of probability 0
    (150, [0.6, 0.3, 0.1]),  # binomial splitting (m >= 50 K), K padded to 4
    (400, [0.45, 0.0, 0.35, 0.2, 0.0, 0.0, 0.0]),  # binomial splitting, states of probability 0
    (30, [0.7, 0.3]),  # K = 2: one binomial
    (200, [0.5, 0.5]),  # K = 2 by inversion alone (m / 2 = INVERSION_ONLY_MAX_MEAN)
])
def test_multinomial_follows_its_pmf(m, p):
    p, size = np.asarray(p), 40_000
    counts = multinomial_draws(p, m, size, seed=m).astype(int)
    assert np.all(counts[:, p == 0] == 0), "a state of probability 0 was drawn"
    live = np.flatnonzero(p > 0)
    # every outcome of the live states, and how often it came
    outcomes = np.array([c for c in itertools.product(range(m + 1), repeat=len(live) - 1) if sum(c) <= m])
    outcomes = np.column_stack([outcomes, m - outcomes.sum(1)])
    index = {tuple(c): i for i, c in enumerate(outcomes)}
    observed = np.bincount([index[tuple(c)] for c in counts[:, live]], minlength=len(outcomes))
    expected = stats.multinomial.pmf(outcomes, m, p[live]) * size
    assert chi2_pvalue(observed, expected) > 1e-4
    # and it tells apart a law whose first probability is 2% higher (relative)
    shifted = p[live] * np.r_[1.02, np.full(len(live) - 1, 1 - 0.02 * p[live][0] / (1 - p[live][0]))]
    assert chi2_pvalue(observed, stats.multinomial.pmf(outcomes, m, shifted) * size) < 1e-4


@pytest.mark.parametrize("m, p", [(7, [0.5, 0.3, 0.15, 0.05, 0.0, 0.0]), (400, [0.5, 0.3, 0.15, 0.05, 0.0, 0.0]),
                                  (10**5, [0.5, 0.3, 0.1999, 1e-4, 0.0, 0.0]), (30, [0.7, 0.3])])
def test_multinomial_moments(m, p):
    p, size = np.asarray(p), 20_000
    counts = multinomial_draws(p, m, size, seed=1)
    assert counts.dtype == np.float64
    np.testing.assert_array_equal(counts.sum(1), m)
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    assert np.all(counts[:, p == 0] == 0), "a state of probability zero is never drawn"
    live = p > 0
    var = m * p[live] * (1 - p[live])
    z = (counts[:, live].mean(0) - m * p[live]) / np.sqrt(var / size)
    assert np.abs(z).max() < 5, z
    # the variance is the multinomial's, not merely the mean; and the covariance of two states
    assert np.all(np.abs(counts[:, live].var(0) / var - 1) < 6 * np.sqrt(2 / size) + 3 / (size * var.min())), counts.var(0)
    cov = np.cov(counts[:, 0], counts[:, 1])[0, 1]
    assert abs(cov / (-m * p[0] * p[1]) - 1) < 0.06


def test_unnormalised_weights_and_lost_states():
    with jax.enable_x64(True):
        for m in (10_000, 1_000_000):  # sorted uniforms, splitting
            counts = sampling.multinomial(jax.random.key(0), jnp.asarray([3.0, 0.0, 1.0]), m)
            assert counts[1] == 0 and abs(float(counts[0]) / m - 0.75) < 0.02


def test_a_chains_draws_do_not_depend_on_the_chains_beside_it():
    # Under vmap every chain's inversion walk shares one loop, run until the slowest lane of all
    # is done; a chain's draws must be those it gets alone, whatever its neighbours' means.
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(3), 6)
        n = jnp.asarray([[100.0, 3.0], [100.0, 0.0], [7.0, 60.0], [100.0, 100.0], [1.0, 2.0], [50.0, 9.0]])
        q = jnp.asarray([[0.5, 0.2], [0.01, 0.3], [0.5, 0.45], [0.0, 0.5], [0.5, 0.5], [0.3, 0.1]])
        draw = jax.jit(lambda key, n, q: sampling.binomial(key, n, q, n_max=100))
        together = np.asarray(jax.jit(jax.vmap(draw))(keys, n, q))
        twice = np.asarray(jax.jit(jax.vmap(jax.vmap(draw)))(keys.reshape(2, 3), n.reshape(2, 3, 2), q.reshape(2, 3, 2)))
        alone = np.stack([np.asarray(draw(keys[c], n[c], q[c])) for c in range(6)])
        np.testing.assert_array_equal(together, alone)
        np.testing.assert_array_equal(twice.reshape(6, 2), alone)
        assert together[3, 0] == 0 and together[1, 1] == 0  # q = 0 and n = 0 draw nothing
